using ScalableCache.Core;
using ScalableCache.Hnsw;

namespace ScalableCache.Tests;

/// <summary>The HNSW store with its default search settings: approximate, so log-mass values are not compared.</summary>
public sealed class HnswConformanceTests : CacheMemoryConformanceTests
{
    private static readonly HnswCacheMemoryFactory Factory = new(new HnswCacheOptions { Threads = 2 });

    protected override string ExpectedProvider => "Hnsw";

    protected override bool ExactScores => false;

    protected override IReadOnlyList<ICacheMemoryFactory> RestoreFactories => [Factory];

    protected override ICacheMemory CreateMemory(int dimension, int classCount) => Factory.Create(dimension, classCount);

    protected override string Diagnostics(ICacheMemory memory) => HnswDiagnostics(memory);

    /// <summary>How often the store's queries met keys of an unpublished add, or completed an exhaustive search.</summary>
    internal static string HnswDiagnostics(ICacheMemory memory)
    {
        var hnsw = (HnswCacheMemory)memory;
        return $"; {hnsw.FilteredSearches} queries refiltered to the snapshot, {hnsw.ExhaustiveCompletions} exhaustive completions";
    }
}

/// <summary>
/// The HNSW store asked for more neighbours than it holds keys: every key contributes (keys the graph walk misses are
/// scored directly), so it must pass the exact-value checks too, at the shared tolerance.
/// </summary>
public sealed class HnswExhaustiveConformanceTests : CacheMemoryConformanceTests
{
    private static readonly HnswCacheMemoryFactory Factory = new(new HnswCacheOptions { TopK = 4096, ExpansionSearch = 4096, Threads = 2 });

    protected override string ExpectedProvider => "Hnsw";

    protected override IReadOnlyList<ICacheMemoryFactory> RestoreFactories => [Factory];

    protected override ICacheMemory CreateMemory(int dimension, int classCount) => Factory.Create(dimension, classCount);

    protected override string Diagnostics(ICacheMemory memory) => HnswConformanceTests.HnswDiagnostics(memory);
}
