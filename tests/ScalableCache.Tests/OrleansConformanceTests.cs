using ScalableCache.Core;
using Xunit;

namespace ScalableCache.Tests;

/// <summary>The conformance suite for the Orleans store, 3 shards of <paramref name="inner"/> on the shared 3-silo in-process cluster.</summary>
public abstract class OrleansConformanceTestsBase(SharedOrleansCluster cluster, string inner) : CacheMemoryConformanceTests
{
    private readonly Lazy<ICacheMemoryFactory> _factory = new(() => cluster.Cluster.Factory(inner));

    protected override string ExpectedProvider => "Orleans";

    protected override ICacheMemory CreateMemory(int dimension, int classCount) => _factory.Value.Create(dimension, classCount);
}

/// <summary>Exact shards: exact, so every value check applies.</summary>
[Collection(OrleansClusterCollection.Name)]
public sealed class OrleansConformanceTests(SharedOrleansCluster cluster) : OrleansConformanceTestsBase(cluster, "Exact");

/// <summary>HNSW shards (the union of per-shard top-k): approximate, so log-mass values are not compared.</summary>
[Collection(OrleansClusterCollection.Name)]
public sealed class OrleansHnswConformanceTests(SharedOrleansCluster cluster) : OrleansConformanceTestsBase(cluster, "Hnsw")
{
    protected override bool ExactScores => false;
}

/// <summary>Random-projection shards (d → d/2, one seeded matrix, so every shard projects alike): approximate scores.</summary>
[Collection(OrleansClusterCollection.Name)]
public sealed class OrleansRandomProjectionConformanceTests(SharedOrleansCluster cluster) : OrleansConformanceTestsBase(cluster, "RandomProjection")
{
    protected override bool ExactScores => false;
}
