using Microsoft.Extensions.DependencyInjection;
using ScalableCache.Core;
using ScalableCache.RandomProjection;
using Xunit;

namespace ScalableCache.Tests;

/// <summary>The conformance suite for the Orleans store, 3 shards of <paramref name="inner"/> on the shared 3-silo in-process cluster.</summary>
public abstract class OrleansConformanceTestsBase(SharedOrleansCluster cluster, string inner) : CacheMemoryConformanceTests
{
    private readonly Lazy<ICacheMemoryFactory> _factory = new(() => cluster.Cluster.Factory(inner));

    protected override string ExpectedProvider => "Orleans";

    // The cluster persists shard files next to a manifest (OrleansPersistenceTests), not one cache file.
    protected override bool SavesToCacheFiles => false;

    protected override IReadOnlyList<ICacheMemoryFactory> RestoreFactories => [];

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
    /// <summary>A local factory configured as the silos' (<see cref="OrleansTestCluster"/>): the same seeded matrix for a dimension.</summary>
    private static readonly Lazy<RandomProjectionCacheMemoryFactory> LikeTheSilos = new(() =>
        new ServiceCollection()
            .AddExactCache()
            .AddRandomProjectionCache(o => o.Ratio = 0.5)
            .BuildServiceProvider()
            .GetRequiredService<RandomProjectionCacheMemoryFactory>());

    protected override bool ExactScores => false;

    // Every shard scores projected keys exactly, so snapshots are checked against the projected vectors.
    protected override bool ExactSnapshots => true;

    protected override double ScoreTolerance => 1e-5;

    protected override (float[] Rows, int Dimension) ScoredVectors(ICacheMemory memory, float[] rows)
    {
        ArgumentNullException.ThrowIfNull(memory);
        using var local = LikeTheSilos.Value.Create(memory.Dimension, memory.ClassCount);
        return RandomProjectionConformanceTests.Project((IRandomProjectionCacheMemory)local, rows);
    }
}
