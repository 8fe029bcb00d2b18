using System.CommandLine;
using Microsoft.Extensions.Options;
using ScalableCache.Core;
using ScalableCache.Host.Cli;
using Spectre.Console;
using TorchSharp;

namespace ScalableCache.Host.Commands;

/// <summary><c>scache info</c>: the runtime this build uses (libtorch, device, threads, provider).</summary>
internal sealed class InfoCommand : IScacheCommand
{
    public InfoCommand(CommandRunner runner, TorchRuntime torchRuntime, IOptions<CacheOptions> cache)
    {
        Definition = new Command("info", "Show the torch runtime, device and cache provider this configuration uses.");
        Definition.SetAction((parse, ct) => runner.RunAsync("info", _ =>
        {
            var device = torchRuntime.Device;
            var result = new InfoResult(
                typeof(torch).Assembly.GetName().Version?.ToString() ?? "unknown",
                torch.__version__,
                device.ToString(),
                torch.cuda.is_available(),
                torch.get_num_threads(),
                cache.Value.Provider,
                Environment.ProcessorCount);
            return Task.FromResult(new CommandOutcome(result, console =>
            {
                var table = new Table().AddColumns("setting", "value");
                table.AddPlainRow("TorchSharp", result.TorchSharpVersion);
                table.AddPlainRow("libtorch", result.LibtorchVersion);
                table.AddPlainRow("device", result.Device);
                table.AddPlainRow("CUDA available", result.CudaAvailable.ToString());
                table.AddPlainRow("torch threads", result.TorchThreads.ToString(System.Globalization.CultureInfo.InvariantCulture));
                table.AddPlainRow("cache provider", result.Provider);
                console.Write(table);
            }));
        }, ct));
    }

    public Command Definition { get; }

    private sealed record InfoResult(
        string TorchSharpVersion, string LibtorchVersion, string Device, bool CudaAvailable, int TorchThreads, string Provider, int ProcessorCount);
}
