using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using ScalableCache.Core;
using static TorchSharp.torch;

namespace ScalableCache.RandomProjection;

/// <summary>
/// Creates random-projection memories (provider <c>RandomProjection</c>): each wraps an empty memory of dimension k made
/// by the factory of the <see cref="RandomProjectionCacheOptions.Inner"/> provider, found among the registered factories.
/// </summary>
public sealed partial class RandomProjectionCacheMemoryFactory : ICacheMemoryFactory
{
    /// <summary>The provider name, matched against <c>Cache:Provider</c>.</summary>
    public const string ProviderName = RandomProjectionCacheMemory.ProviderName;

    private readonly Lazy<Resolved> _resolved;

    /// <summary>
    /// Creates the factory without dependency injection. The options are validated (and copied) here and the inner provider
    /// is looked up among <paramref name="factories"/> (any <c>RandomProjection</c> factory among them is ignored).
    /// </summary>
    /// <exception cref="ArgumentException">The options are invalid.</exception>
    /// <exception cref="InvalidOperationException">No factory is registered under <see cref="RandomProjectionCacheOptions.Inner"/>;
    /// the message lists the registered ones and the inner exception is Core's <see cref="UnknownProviderException"/>.</exception>
    public RandomProjectionCacheMemoryFactory(
        RandomProjectionCacheOptions options, IEnumerable<ICacheMemoryFactory> factories, TorchOptions? torchOptions = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(factories);
        var resolved = Resolve(options, factories.ToList(), torchOptions);
        _resolved = new Lazy<Resolved>(resolved);
    }

    /// <summary>
    /// The dependency-injection constructor. Nothing is read here: options, device and the inner factory are resolved on
    /// first use, because the inner factory is one of the <see cref="ICacheMemoryFactory"/> services this factory also is.
    /// </summary>
    internal RandomProjectionCacheMemoryFactory(
        IOptions<RandomProjectionCacheOptions> options, IOptions<TorchOptions> torchOptions, IServiceProvider services)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(torchOptions);
        ArgumentNullException.ThrowIfNull(services);
        _resolved = new Lazy<Resolved>(
            () => Resolve(options.Value, services.GetServices<ICacheMemoryFactory>().ToList(), torchOptions.Value),
            LazyThreadSafetyMode.ExecutionAndPublication);
    }

    /// <inheritdoc />
    public string Provider => ProviderName;

    /// <summary>The options memories are created with (a copy).</summary>
    public RandomProjectionCacheOptions Options => _resolved.Value.Options.Clone();

    /// <summary>The factory of the inner provider, which creates the k-dimensional memories.</summary>
    public ICacheMemoryFactory InnerFactory => _resolved.Value.Inner;

    /// <summary>The device projection matrices live on: <c>Cache:RandomProjection:Device</c>, else <c>Torch:Device</c>.</summary>
    public Device Device => _resolved.Value.Device;

    /// <inheritdoc />
    public ICacheMemory Create(int dimension, int classCount) => CreateProjected(dimension, classCount);

    /// <summary>
    /// Creates an empty memory for keys of <paramref name="dimension"/> d: a new projection d → k generated from the
    /// configured kind and seed, over an empty inner memory of dimension k.
    /// </summary>
    /// <exception cref="ArgumentException">The configured <see cref="RandomProjectionCacheOptions.OutputDimension"/> exceeds <paramref name="dimension"/>.</exception>
    public IRandomProjectionCacheMemory CreateProjected(int dimension, int classCount)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(dimension, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(classCount, 1);
        var resolved = _resolved.Value;
        var options = resolved.Options;
        var definition = new RandomProjectionDefinition(options.Kind, options.Seed, dimension, options.ResolveOutputDimension(dimension));
        return Wrap(RandomProjectionMatrix.Create(definition, resolved.Device), classCount, resolved);
    }

    /// <summary>
    /// Creates an empty memory that uses a copy of <paramref name="projection"/> (for example one restored with
    /// <see cref="RandomProjectionMatrix.Import"/>) instead of generating one; the configured kind, seed and k are ignored.
    /// </summary>
    public IRandomProjectionCacheMemory CreateProjected(RandomProjectionMatrix projection, int classCount)
    {
        ArgumentNullException.ThrowIfNull(projection);
        ArgumentOutOfRangeException.ThrowIfLessThan(classCount, 1);
        var resolved = _resolved.Value;
        return Wrap(projection.Clone(resolved.Device), classCount, resolved);
    }

    private static RandomProjectionCacheMemory Wrap(RandomProjectionMatrix projection, int classCount, Resolved resolved)
    {
        ICacheMemory? inner = null;
        try
        {
            inner = resolved.Inner.Create(projection.OutputDimension, classCount);
            return new RandomProjectionCacheMemory(projection, inner, resolved.Options.Renormalize);
        }
        catch
        {
            inner?.Dispose();
            projection.Dispose();
            throw;
        }
    }

    private static Resolved Resolve(RandomProjectionCacheOptions options, IReadOnlyList<ICacheMemoryFactory> factories, TorchOptions? torchOptions)
    {
        var errors = options.Validate();
        if (errors.Count > 0)
        {
            throw new ArgumentException("Invalid random-projection cache options: " + string.Join(" ", errors), nameof(options));
        }

        var copy = options.Clone();
        var device = TorchDevices.Resolve(copy.Device ?? torchOptions?.Device);
        return new Resolved(copy, FindInner(copy.Inner.Trim(), factories), device);
    }

    /// <summary>The factory registered as <paramref name="name"/>, ignoring random-projection factories.</summary>
    internal static ICacheMemoryFactory FindInner(string name, IEnumerable<ICacheMemoryFactory> factories)
    {
        var candidates = factories
            .Where(f => !string.Equals(f.Provider, ProviderName, StringComparison.OrdinalIgnoreCase))
            .ToList();
        try
        {
            return CacheProviderSelector.Find(candidates, name);
        }
        catch (UnknownProviderException e)
        {
            throw new InvalidOperationException(UnknownInnerMessage(name, e.Registered), e);
        }
    }

    internal static string UnknownInnerMessage(string name, IReadOnlyList<string> registered) =>
        $"Cache:RandomProjection:Inner is '{name}', which is not a registered cache provider. Registered providers it can wrap: " +
        (registered.Count == 0 ? "(none)" : string.Join(", ", registered)) +
        ". Register that provider (e.g. services.AddExactCache()) or set Cache:RandomProjection:Inner to one of these.";

    private sealed record Resolved(RandomProjectionCacheOptions Options, ICacheMemoryFactory Inner, Device Device);
}
