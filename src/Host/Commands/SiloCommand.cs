using System.CommandLine;
using System.Diagnostics;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using ScalableCache.Host.Cli;
using ScalableCache.Orleans;
using Spectre.Console;

namespace ScalableCache.Host.Commands;

/// <summary>
/// <c>scache silo</c>: runs one Orleans silo that hosts cache shards (provider <c>Orleans</c>) until Ctrl+C or SIGTERM. The
/// silo registers the Exact, Hnsw and RandomProjection stores (configured by their <c>Cache:*</c> sections) as inner
/// providers; clustering, ports and the state folder come from <c>Cache:Orleans</c> (or the flags).
/// </summary>
internal sealed class SiloCommand : IScacheCommand
{
    public SiloCommand(CommandRunner runner, IConfiguration configuration, ILoggerProvider logs)
    {
        var siloPort = new Option<int?>("--silo-port") { Description = "Silo-to-silo port (Cache:Orleans:SiloPort, default 11111)." };
        var gatewayPort = new Option<int?>("--gateway-port") { Description = "Client gateway port (Cache:Orleans:GatewayPort, default 30000)." };
        var primaryPort = new Option<int?>("--primary-silo-port")
        {
            Description = "Localhost clustering: the primary silo's port, which this silo joins (Cache:Orleans:PrimarySiloPort; default: its own).",
        };
        var stateDir = new Option<DirectoryInfo?>("--state-dir")
        {
            Description = "Folder (shared by every silo) where caches keep manifests, parts and checkpoints (Cache:Orleans:StateDirectory; default: memory only).",
        };
        Definition = new Command("silo", "Run one Orleans silo hosting cache shards (provider Orleans) until Ctrl+C or SIGTERM.")
        {
            siloPort, gatewayPort, primaryPort, stateDir,
        };
        Definition.SetAction((parse, ct) => runner.RunAsync("silo", async token =>
        {
            var options = new OrleansCacheOptions();
            configuration.GetSection(OrleansCacheOptions.SectionName).Bind(options);
            options.SiloPort = parse.GetValue(siloPort) ?? options.SiloPort;
            options.GatewayPort = parse.GetValue(gatewayPort) ?? options.GatewayPort;
            options.PrimarySiloPort = parse.GetValue(primaryPort) ?? options.PrimarySiloPort;
            options.StateDirectory = parse.GetValue(stateDir)?.FullName ?? options.StateDirectory;
            var errors = options.Validate();
            if (errors.Count > 0)
            {
                throw new UsageException("invalid silo settings: " + string.Join(" ", errors));
            }

            using var stop = CancellationTokenSource.CreateLinkedTokenSource(token);
            using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, context =>
            {
                context.Cancel = true;
                stop.Cancel();
            });
            var clock = Stopwatch.StartNew();
            using var silo = Build(configuration, options, logs);
            await silo.StartAsync(stop.Token).ConfigureAwait(false);
            var where = options.Clustering == OrleansClustering.Redis ? $"Redis {options.RedisConfiguration}" : $"localhost, primary port {options.PrimarySiloPort ?? options.SiloPort}";
            await Console.Error.WriteLineAsync(
                $"silo ready: cluster '{options.ClusterId}' ({where}), silo port {options.SiloPort}, gateway port {options.GatewayPort}, state " +
                (options.StateDirectory ?? "in memory")).ConfigureAwait(false);
            try
            {
                await Task.Delay(Timeout.Infinite, stop.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                // Ctrl+C or SIGTERM: leave the cluster cleanly.
            }

            using (var grace = new CancellationTokenSource(TimeSpan.FromSeconds(30)))
            {
                await silo.StopAsync(grace.Token).ConfigureAwait(false);
            }

            var result = new
            {
                clusterId = options.ClusterId,
                clustering = options.Clustering.ToString(),
                siloPort = options.SiloPort,
                gatewayPort = options.GatewayPort,
                stateDirectory = options.StateDirectory,
                ranSeconds = Math.Round(clock.Elapsed.TotalSeconds, 1),
            };
            return new CommandOutcome(result, console =>
                console.MarkupLineInterpolated($"silo on port {options.SiloPort} stopped after {result.ranSeconds} s"));
        }, ct));
    }

    public Command Definition { get; }

    /// <summary>The silo's own host: the inner stores from the <c>Cache:*</c> sections, the shard services, the clustering.</summary>
    private static IHost Build(IConfiguration configuration, OrleansCacheOptions options, ILoggerProvider logs)
    {
        var builder = Microsoft.Extensions.Hosting.Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Configuration.AddConfiguration(configuration);
        builder.Logging.ClearProviders();
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.Logging.AddProvider(logs);
        builder.Services.AddOptions<ScalableCache.Core.TorchOptions>().Bind(configuration.GetSection(ScalableCache.Core.TorchOptions.SectionName));
        builder.Services.AddExactCache(configuration.GetSection("Cache:Exact"));
        builder.Services.AddHnswCache(configuration.GetSection("Cache:Hnsw"));
        builder.Services.AddRandomProjectionCache(configuration.GetSection("Cache:RandomProjection"));
        builder.UseOrleans(silo =>
        {
            silo.UseCacheClustering(options);
            silo.AddCacheShards(o =>
            {
                configuration.GetSection(OrleansCacheOptions.SectionName).Bind(o);
                o.StateDirectory = options.StateDirectory;
            });
        });
        return builder.Build();
    }
}
