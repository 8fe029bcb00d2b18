using Microsoft.Extensions.Options;
using ScalableCache.Core;

namespace ScalableCache.Exact;

/// <summary>Creates exact memories (provider <c>Exact</c>) with the configured <see cref="ExactCacheOptions"/>.</summary>
public sealed partial class ExactCacheMemoryFactory : ICacheMemoryFactory
{
    private readonly ExactCacheOptions _options;
    private readonly TorchSharp.torch.Device _device;

    /// <summary>Creates the factory; the device is <c>Cache:Exact:Device</c>, else <c>Torch:Device</c>.</summary>
    public ExactCacheMemoryFactory(IOptions<ExactCacheOptions> options, IOptions<TorchOptions> torchOptions)
        : this(
            options?.Value ?? throw new ArgumentNullException(nameof(options)),
            torchOptions?.Value ?? throw new ArgumentNullException(nameof(torchOptions)))
    {
    }

    /// <summary>Creates the factory without dependency injection; the options are validated (and copied) here.</summary>
    public ExactCacheMemoryFactory(ExactCacheOptions options, TorchOptions? torchOptions = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options.ValidatedClone(nameof(options));
        _device = TorchDevices.Resolve(_options.Device ?? torchOptions?.Device);
    }

    /// <inheritdoc />
    public string Provider => ExactCacheMemory.ProviderName;

    /// <summary>The device memories keep their keys on.</summary>
    public TorchSharp.torch.Device Device => _device;

    /// <inheritdoc />
    public ICacheMemory Create(int dimension, int classCount) => CreateExact(dimension, classCount);

    /// <summary>Creates an empty memory, typed as the implementation.</summary>
    public ExactCacheMemory CreateExact(int dimension, int classCount) =>
        new(dimension, classCount, _device, _options);
}
