using ScalableCache.Core;
using Xunit;

namespace ScalableCache.Tests;

/// <summary>The Orleans store over exact inner stores, 3 shards on a 3-silo in-process cluster: exact, so every value check applies.</summary>
[Collection(OrleansClusterCollection.Name)]
public sealed class OrleansConformanceTests(SharedOrleansCluster cluster) : CacheMemoryConformanceTests
{
    private readonly Lazy<ICacheMemoryFactory> _factory = new(() => cluster.Cluster.Factory());

    protected override string ExpectedProvider => "Orleans";

    protected override ICacheMemory CreateMemory(int dimension, int classCount) => _factory.Value.Create(dimension, classCount);
}

/// <summary>The Orleans store over HNSW inner stores (the union of per-shard top-k): approximate, so log-mass values are not compared.</summary>
[Collection(OrleansClusterCollection.Name)]
public sealed class OrleansHnswConformanceTests(SharedOrleansCluster cluster) : CacheMemoryConformanceTests
{
    private readonly Lazy<ICacheMemoryFactory> _factory = new(() => cluster.Cluster.Factory("Hnsw"));

    protected override string ExpectedProvider => "Orleans";

    protected override bool ExactScores => false;

    protected override ICacheMemory CreateMemory(int dimension, int classCount) => _factory.Value.Create(dimension, classCount);
}

/// <summary>The Orleans store over random-projection shards (d → d/2, one seeded matrix, so every shard projects alike): approximate scores.</summary>
[Collection(OrleansClusterCollection.Name)]
public sealed class OrleansRandomProjectionConformanceTests(SharedOrleansCluster cluster) : CacheMemoryConformanceTests
{
    private readonly Lazy<ICacheMemoryFactory> _factory = new(() => cluster.Cluster.Factory("RandomProjection"));

    protected override string ExpectedProvider => "Orleans";

    protected override bool ExactScores => false;

    protected override ICacheMemory CreateMemory(int dimension, int classCount) => _factory.Value.Create(dimension, classCount);
}
