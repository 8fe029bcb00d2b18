using System.CommandLine;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using ScalableCache.Core.Data;

namespace ScalableCache.Host.Cli;

/// <summary>
/// Entry point of <c>scache</c>: reads configuration (appsettings.json → <c>--config</c> file → environment
/// (<c>Cache__Provider</c>, then <c>SCACHE_Cache__Provider</c>) → flags), builds the DI host, parses and runs a command.
/// </summary>
public static class ScacheApplication
{
    /// <summary>Runs the CLI and returns the exit code (see <see cref="ExitCodes"/>).</summary>
    /// <param name="args">Command-line arguments.</param>
    /// <param name="stdout">Result stream (defaults to the console's stdout).</param>
    /// <param name="stderr">Log and progress stream (defaults to the console's stderr).</param>
    /// <param name="configuration">Extra configuration applied after environment variables and before flags (tests).</param>
    /// <param name="cancellationToken">Stops the command as Ctrl+C does (tests; <c>serve</c> then shuts down cleanly).</param>
    public static async Task<int> RunAsync(
        string[] args,
        TextWriter? stdout = null,
        TextWriter? stderr = null,
        IReadOnlyDictionary<string, string?>? configuration = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(args);
        stdout ??= Console.Out;
        stderr ??= Console.Error;
        var globals = new GlobalOptions();

        // Phase 1: only the global flags, to build configuration before the commands (DI services) exist.
        var pre = new RootCommand();
        foreach (var option in globals.All)
        {
            pre.Add(option);
        }

        var preParse = pre.Parse(args);
        var json = preParse.GetValue(globals.Json);
        Dictionary<string, string?> flags;
        try
        {
            flags = globals.ToConfiguration(preParse);
        }
        catch (UsageException ex)
        {
            return Fail(json, stdout, stderr, ex.Message, ExitCodes.Usage);
        }

        var configFile = preParse.GetValue(globals.Config);
        try
        {
            // Before anything opens it: a directory, a dangling link or a named pipe (whose open would block) is not a file.
            if (configFile is not null)
            {
                InputFile.Resolve(configFile.FullName, "Configuration file (from --config)");
            }
        }
        catch (FileNotFoundException ex)
        {
            return Fail(json, stdout, stderr, ex.Message, ExitCodes.NotFound);
        }

        var interactive = ReferenceEquals(stderr, Console.Error) && !Console.IsErrorRedirected;
        var builder = Microsoft.Extensions.Hosting.Host.CreateApplicationBuilder(new HostApplicationBuilderSettings
        {
            DisableDefaults = true,
            ApplicationName = "scache",
            ContentRootPath = AppContext.BaseDirectory,
        });
        try
        {
            // Each file is read as it is added, so a malformed one fails here.
            builder.Configuration.AddJsonFile(Path.Combine(AppContext.BaseDirectory, "appsettings.json"), optional: true);
            if (configFile is not null)
            {
                builder.Configuration.AddJsonFile(configFile.FullName, optional: false);
            }
        }
        catch (InvalidDataException ex)
        {
            return Fail(json, stdout, stderr, "invalid configuration: " + CommandRunner.WithCause(ex), ExitCodes.Configuration);
        }

        builder.Configuration.AddEnvironmentVariables();
        builder.Configuration.AddEnvironmentVariables("SCACHE_");
        if (configuration is not null)
        {
            builder.Configuration.AddInMemoryCollection(configuration);
        }

        builder.Configuration.AddInMemoryCollection(flags);

        builder.Logging.ClearProviders();
        builder.Logging.SetMinimumLevel(preParse.GetValue(globals.Verbose) ? LogLevel.Information : LogLevel.Warning);
        builder.Logging.AddFilter("Microsoft", LogLevel.Warning);
        builder.Services.AddSingleton<ILoggerProvider>(new StderrLoggerProvider(stderr));

        builder.Services.AddSingleton(new CliContext(json, stdout, stderr, interactive));
        builder.Services.AddSingleton(globals);
        builder.Services.AddScache(builder.Configuration);

        IHost host;
        try
        {
            host = builder.Build();
        }
        catch (Exception ex) when (ex is InvalidOperationException or InvalidDataException or FormatException)
        {
            return Fail(json, stdout, stderr, "configuration could not be read: " + ex.Message, ExitCodes.Configuration);
        }

        using (host)
        {
            var root = new RootCommand("scache — a continuous key-value cache over a pretrained image classifier (Orhan 2018).");
            foreach (var option in globals.All)
            {
                root.Add(option);
            }

            foreach (var command in host.Services.GetServices<IScacheCommand>())
            {
                root.Add(command.Definition);
            }

            var parse = root.Parse(args);
            if (parse.Errors.Count > 0)
            {
                return Fail(json, stdout, stderr, string.Join("; ", parse.Errors.Select(e => e.Message)), ExitCodes.Usage);
            }

            using var cancel = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            ConsoleCancelEventHandler onCancel = (_, e) =>
            {
                e.Cancel = true;
                cancel.Cancel();
            };
            Console.CancelKeyPress += onCancel;
            try
            {
                return await parse.InvokeAsync(new InvocationConfiguration { Output = json ? stderr : stdout, Error = stderr }, cancel.Token)
                    .ConfigureAwait(false);
            }
            finally
            {
                Console.CancelKeyPress -= onCancel;
            }
        }
    }

    private static int Fail(bool json, TextWriter stdout, TextWriter stderr, string message, int code)
    {
        stderr.WriteLine($"error ({ExitCodes.NameOf(code)}): {message}");
        if (json)
        {
            stdout.WriteLine(CommandOutput.Serialize(new { error = message, exitCode = code, exitName = ExitCodes.NameOf(code) }));
        }

        return code;
    }
}
