using System.Text.Json.Serialization;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ScalableCache.Core;
using Spectre.Console;

namespace ScalableCache.Host.Cli;

/// <summary>The outcome of a command: the JSON result object and how to show it to a person.</summary>
internal sealed record CommandOutcome(object Result, Action<IAnsiConsole> Render, int ExitCode = ExitCodes.Success);

/// <summary>Runs one command: validates configuration first, maps failures to named exit codes and clear messages.</summary>
internal sealed class CommandRunner(IServiceProvider services, CommandOutput output, ILogger<CommandRunner> logger)
{
    /// <summary>Runs <paramref name="work"/> and returns the process exit code.</summary>
    public async Task<int> RunAsync(string command, Func<CancellationToken, Task<CommandOutcome>> work, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(work);
        try
        {
            foreach (var validator in services.GetServices<IAsyncStartupValidator>())
            {
                await validator.ValidateAsync(cancellationToken).ConfigureAwait(false);
            }

            _ = services.GetRequiredService<CacheProviderSelector>();
            var outcome = await work(cancellationToken).ConfigureAwait(false);
            output.Result(outcome.Result, outcome.Render);
            return outcome.ExitCode;
        }
        catch (Exception ex) when (ex is not OutOfMemoryException)
        {
            var code = Classify(ex);
            if (code == ExitCodes.Failure)
            {
                logger.LogError(ex, "{Command} failed", command);
            }

            var message = Describe(ex);
            output.Error.MarkupLineInterpolated($"[red]error[/] ({ExitCodes.NameOf(code)}): {message}");
            if (output.Json)
            {
                output.Result(new ErrorResult(command, message, code, ExitCodes.NameOf(code), ex.GetType().Name), _ => { });
            }

            return code;
        }
    }

    /// <summary>The named exit code for a failure.</summary>
    public static int Classify(Exception ex) => ex switch
    {
        OperationCanceledException => ExitCodes.Cancelled,
        UsageException => ExitCodes.Usage,
        DeviceUnavailableException => ExitCodes.DeviceUnavailable,
        UnknownProviderException or OptionsValidationException => ExitCodes.Configuration,
        _ when FromConfiguration(ex) => ExitCodes.Configuration,
        FileNotFoundException or DirectoryNotFoundException => ExitCodes.NotFound,
        OutputException => ExitCodes.OutputFailed,
        Core.Persistence.MemoryLogException => ExitCodes.InvalidCacheFile,
        _ when ex.GetType().Name.Contains("Checkpoint", StringComparison.Ordinal) => ExitCodes.InvalidCheckpoint,
        _ when ex.GetType().Name.Contains("CacheFile", StringComparison.Ordinal) => ExitCodes.InvalidCacheFile,
        _ when ex.GetType().Name.Contains("DatasetFormat", StringComparison.Ordinal) => ExitCodes.InvalidData,
        InvalidDataException => ExitCodes.InvalidData,
        ArgumentException or InvalidOperationException when ex.TargetSite?.DeclaringType?.Namespace?.StartsWith("ScalableCache", StringComparison.Ordinal) == true
            => ExitCodes.Configuration,
        _ => ExitCodes.Failure,
    };

    /// <summary>The message shown for a failure: the exception's own, with the detail a configuration error hides in its inner exceptions.</summary>
    public static string Describe(Exception ex) => ex switch
    {
        OptionsValidationException o => "invalid configuration: " + string.Join("; ", o.Failures),
        AggregateException { InnerExceptions.Count: 1 } a => Describe(a.InnerExceptions[0]),
        _ when FromConfiguration(ex) => "invalid configuration: " + WithCause(ex),
        _ => ex.Message,
    };

    /// <summary>The message and, when it differs, that of the innermost exception, which says what was wrong (the JSON error, the value).</summary>
    public static string WithCause(Exception ex)
    {
        ArgumentNullException.ThrowIfNull(ex);
        var cause = ex.GetBaseException();
        return ReferenceEquals(cause, ex) ? ex.Message : $"{ex.Message} {cause.Message}";
    }

    /// <summary>
    /// Whether <paramref name="ex"/> comes from binding configuration: a value the binder cannot convert (<c>Failed to convert configuration value 'abc' at 'Torch:BatchSize' to type 'System.Int32'</c>).
    /// </summary>
    private static bool FromConfiguration(Exception ex) =>
        ex is InvalidOperationException &&
        ex.TargetSite?.DeclaringType?.Namespace?.StartsWith("Microsoft.Extensions.Configuration", StringComparison.Ordinal) == true;

    private sealed record ErrorResult(
        string Command,
        string Error,
        int ExitCode,
        string ExitName,
        [property: JsonPropertyName("exception")] string ExceptionType);
}

/// <summary>Writing a command's output failed; whatever was there before is left intact.</summary>
internal sealed class OutputException(string message, Exception? inner = null) : IOException(message, inner);
