using Microsoft.Extensions.DependencyInjection;
using ScalableCache.Core;
using ScalableCache.RandomProjection;

namespace ScalableCache.Tests;

/// <summary>
/// The random-projection store over the exact store, d = 32 → k = 16 (Ratio 0.5): scores are those of the projected
/// vectors, so log-mass values are not compared with the unprojected reference (<see cref="ExactScores"/> is off); the
/// structural checks and top-class agreement on well-separated clusters still apply.
/// </summary>
public sealed class RandomProjectionConformanceTests : CacheMemoryConformanceTests
{
    private static readonly Lazy<RandomProjectionCacheMemoryFactory> Factory = new(() =>
        new ServiceCollection()
            .AddExactCache()
            .AddRandomProjectionCache(o => o.Ratio = 0.5)
            .BuildServiceProvider()
            .GetRequiredService<RandomProjectionCacheMemoryFactory>());

    protected override string ExpectedProvider => "RandomProjection";

    protected override bool ExactScores => false;

    protected override ICacheMemory CreateMemory(int dimension, int classCount) => Factory.Value.Create(dimension, classCount);
}
