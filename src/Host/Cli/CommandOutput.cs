using System.Text.Json;
using System.Text.Json.Serialization;
using Spectre.Console;

namespace ScalableCache.Host.Cli;

/// <summary>
/// Where a command writes. With <c>--json</c>, stdout receives exactly one JSON object and nothing else; everything
/// human-facing (tables, progress, logs) goes to stderr. Without it, the result is rendered for people on stdout.
/// </summary>
internal sealed class CommandOutput
{
    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Converters = { new JsonStringEnumConverter() },
    };

    private readonly TextWriter _stdout;

    public CommandOutput(CliContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        Json = context.Json;
        _stdout = context.Stdout;
        Error = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(context.Stderr),
            Interactive = context.Interactive ? InteractionSupport.Yes : InteractionSupport.No,
            Ansi = context.Interactive ? AnsiSupport.Detect : AnsiSupport.No,
        });
        Human = Json ? Error : AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(context.Stdout),
            Ansi = context.Interactive ? AnsiSupport.Detect : AnsiSupport.No,
            Interactive = InteractionSupport.No,
        });
        Interactive = context.Interactive && !context.Json;
    }

    /// <summary>Whether <c>--json</c> was given.</summary>
    public bool Json { get; }

    /// <summary>Whether stderr is a terminal (live progress bars) rather than a log or pipe (plain lines).</summary>
    public bool Interactive { get; }

    /// <summary>The stderr console: progress, warnings.</summary>
    public IAnsiConsole Error { get; }

    /// <summary>Where human-readable results go: stdout, or stderr when <c>--json</c> owns stdout.</summary>
    public IAnsiConsole Human { get; }

    /// <summary>Prints the command's result: one JSON object with <c>--json</c>, else <paramref name="render"/>.</summary>
    public void Result(object result, Action<IAnsiConsole> render)
    {
        ArgumentNullException.ThrowIfNull(result);
        ArgumentNullException.ThrowIfNull(render);
        if (Json)
        {
            _stdout.WriteLine(Serialize(result));
            _stdout.Flush();
        }
        else
        {
            render(Human);
        }
    }

    /// <summary>Serialises with the CLI's JSON conventions (camelCase, NaN/∞ as strings).</summary>
    public static string Serialize(object value) => JsonSerializer.Serialize(value, value.GetType(), JsonOptions);

    /// <summary>A plain status line on stderr (never on stdout).</summary>
    public void Status(string message) => Error.MarkupLineInterpolated($"[grey]{message}[/]");
}

/// <summary>Per-invocation facts the output needs: the streams and the <c>--json</c> flag.</summary>
internal sealed record CliContext(bool Json, TextWriter Stdout, TextWriter Stderr, bool Interactive);
