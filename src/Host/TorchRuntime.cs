using Microsoft.Extensions.Options;
using ScalableCache.Core;
using TorchSharp;

namespace ScalableCache.Host;

/// <summary>Applies <see cref="TorchOptions"/> once (threads, native memory reuse) and resolves the configured device.</summary>
internal sealed class TorchRuntime(IOptions<TorchOptions> options)
{
    private readonly Lazy<torch.Device> _device = new(() =>
    {
        if (options.Value.Threads > 0)
        {
            torch.set_num_threads(options.Value.Threads);
        }

        if (options.Value.ReuseNativeMemory)
        {
            _ = ProcessMemory.ReuseNativeAllocations();
        }

        return TorchDevices.Resolve(options.Value.Device);
    });

    /// <summary>The configured device (validated; CUDA without a CUDA build is a <see cref="DeviceUnavailableException"/>).</summary>
    public torch.Device Device => _device.Value;

    /// <summary>Images per forward pass.</summary>
    public int BatchSize => options.Value.BatchSize;

    /// <summary>Most images the network sees in one call (<c>Torch:ForwardBatchSize</c>).</summary>
    public int ForwardBatchSize => options.Value.ForwardBatchSize;
}
