using ScalableCache.Core;
using ScalableCache.Hnsw;

namespace ScalableCache.Tests;

/// <summary>The HNSW store with its default search settings: approximate, so log-mass values are not compared.</summary>
public sealed class HnswConformanceTests : CacheMemoryConformanceTests
{
    protected override string ExpectedProvider => "Hnsw";

    protected override bool ExactScores => false;

    protected override ICacheMemory CreateMemory(int dimension, int classCount) =>
        new HnswCacheMemoryFactory(new HnswCacheOptions { Threads = 2 }).Create(dimension, classCount);
}

/// <summary>
/// The HNSW store asked for more neighbours than it holds keys: every key contributes (keys the graph walk misses are
/// scored directly), so it must pass the exact-value checks too, at the shared tolerance.
/// </summary>
public sealed class HnswExhaustiveConformanceTests : CacheMemoryConformanceTests
{
    protected override string ExpectedProvider => "Hnsw";

    protected override ICacheMemory CreateMemory(int dimension, int classCount) =>
        new HnswCacheMemoryFactory(new HnswCacheOptions { TopK = 4096, ExpansionSearch = 4096, Threads = 2 }).Create(dimension, classCount);
}
