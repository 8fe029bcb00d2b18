using Microsoft.Extensions.Options;
using ScalableCache.Core;

namespace ScalableCache.Hnsw;

/// <summary>Creates HNSW memories (provider <c>Hnsw</c>) with the configured <see cref="HnswCacheOptions"/>, and restores saved ones.</summary>
public sealed partial class HnswCacheMemoryFactory : ICacheMemoryFactory
{
    /// <summary>The provider name, matched against <c>Cache:Provider</c>.</summary>
    public const string ProviderName = "Hnsw";

    private readonly HnswCacheOptions _options;

    /// <summary>Creates the factory; the options are validated (and copied) here.</summary>
    public HnswCacheMemoryFactory(IOptions<HnswCacheOptions> options)
        : this(options?.Value ?? throw new ArgumentNullException(nameof(options)))
    {
    }

    /// <summary>Creates the factory without dependency injection; the options are validated (and copied) here.</summary>
    public HnswCacheMemoryFactory(HnswCacheOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = options.Validate();
        if (errors.Count > 0)
        {
            throw new ArgumentException("Invalid HNSW cache options: " + string.Join(" ", errors), nameof(options));
        }

        _options = options.Clone();
    }

    /// <inheritdoc />
    public string Provider => ProviderName;

    /// <summary>The options memories are created with (a copy).</summary>
    public HnswCacheOptions Options => _options.Clone();

    /// <inheritdoc />
    public ICacheMemory Create(int dimension, int classCount) => CreateHnsw(dimension, classCount);

    /// <summary>Creates an empty memory, typed to expose <see cref="IHnswCacheMemory.SaveGraph"/>.</summary>
    public IHnswCacheMemory CreateHnsw(int dimension, int classCount) => HnswCacheMemory.Create(dimension, classCount, _options);

    /// <summary>
    /// Restores a memory from <see cref="IHnswCacheMemory.SaveGraph"/> output without rebuilding the graph: the native
    /// bytes are loaded as they are, the labels copied. Dimension and scalar kind come from the graph; search settings
    /// (TopK, ExpansionSearch, Threads) from this factory's options. Inconsistent input (label count ≠ key count, a
    /// label outside <c>[0, classCount)</c>, which names its key, foreign bytes, a graph whose levels, neighbour lists,
    /// keys or vectors are not what an HNSW cache memory writes) is an <see cref="ArgumentException"/>; the bytes are
    /// checked before the native library sees them.
    /// </summary>
    public IHnswCacheMemory Restore(ReadOnlySpan<byte> graph, ReadOnlySpan<int> labels, int classCount) =>
        HnswCacheMemory.Load(graph, labels, classCount, _options);

    /// <summary>Restores a memory from a snapshot; see <see cref="Restore(ReadOnlySpan{byte}, ReadOnlySpan{int}, int)"/>.</summary>
    public IHnswCacheMemory Restore(HnswGraphSnapshot snapshot, int classCount)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        return Restore(snapshot.Graph, snapshot.Labels, classCount);
    }
}
