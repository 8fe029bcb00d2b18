using ScalableCache.Core;
using ScalableCache.Exact;
using ScalableCache.Orleans;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>The Orleans store on the shared 3-silo cluster: exactness on real keys, versioned consistency, balance, errors.</summary>
[Collection(OrleansClusterCollection.Name)]
public sealed class OrleansCacheMemoryTests(SharedOrleansCluster shared)
{
    private OrleansTestCluster Cluster => shared.Cluster;

    [Fact]
    public void ThreeExactShardsGiveTheSingleExactStoresLogMassOnResNet20KeysAndIdenticalPredictions()
    {
        var train = OrleansRealKeys.Train;
        var test = OrleansRealKeys.Test;
        var d = (int)train.KeyDimension;
        using var single = new ExactCacheMemory(d, 10);
        using var sharded = Cluster.Factory().CreateSharded(d, 10);
        single.Add(train.Keys, train.Labels);
        // Two adds, so the second is split over shards that already hold keys.
        sharded.Add(train.Keys.narrow(0, 0, 1500), train.Labels.narrow(0, 0, 1500));
        sharded.Add(train.Keys.narrow(0, 1500, train.Count - 1500), train.Labels.narrow(0, 1500, train.Count - 1500));
        Assert.Equal(train.Count, sharded.Count);
        Assert.Equal([667L, 667, 666], sharded.ShardCounts);
        Assert.Equal(2, sharded.Version);

        double[] thetas = [10, 50, 90];
        using var expected = single.ClassLogMass(test.Keys, thetas);
        using var actual = sharded.ClassLogMass(test.Keys, thetas);
        Assert.Equal(expected.shape, actual.shape);
        Assert.True(isneginf(expected).eq(isneginf(actual)).all().item<bool>(), "−∞ at the same places");
        using var finite = isfinite(expected);
        var maxDelta = (expected - actual).abs().masked_select(finite).max().item<float>();
        Assert.True(maxDelta <= 1e-5f, $"max |ΔL| = {maxDelta}");

        // The same keys in 32 blocks of 64 (the shards hold one block each): the blocks' log-masses are merged in float64 and
        // rounded once, so the block count does not move the answer by more than float32 steps of the final value.
        using var blocked = new ExactCacheMemory(d, 10, new ExactCacheOptions { KeyBlockSize = 64 });
        blocked.Add(train.Keys, train.Labels);
        using var fromBlocks = blocked.ClassLogMass(test.Keys, thetas);
        var blockDelta = (fromBlocks - actual).abs().masked_select(finite).max().item<float>();
        Assert.True(blockDelta <= 1e-5f, $"max |ΔL| = {blockDelta} against 32 key blocks");

        foreach (var (theta, lambda) in new[] { (90.0, 0.8), (90.0, 1.0), (10.0, 0.5) })
        {
            using var a = CacheMixer.Predict(single, test.Keys, test.Probabilities, theta, lambda);
            using var b = CacheMixer.Predict(sharded, test.Keys, test.Probabilities, theta, lambda);
            Assert.Equal(a.data<long>().ToArray(), b.data<long>().ToArray());
        }
    }

    [Fact]
    public async Task AQueryDuringAddsSeesEveryShardsPartOfAnAddOrNone()
    {
        // Every key is the same unit vector u, label 0: at θ = 1 the log-mass of u is 1 + ln n exactly, so n is readable.
        // Each add has 7 rows, split 3/2/2 (or 2/3/2, …) over the shards; a query that saw part of an add reads an n that is
        // not a multiple of 7.
        const int rowsPerAdd = 7;
        const int adds = 25;
        using var memory = Cluster.Factory().CreateSharded(Dim, 2);
        using var u = TestData.RandomUnit(1, Dim, seed: 40);
        var seen = new List<float>();
        var ct = TestContext.Current.CancellationToken;
        var writer = Task.Run(() =>
        {
            using var keys = u.expand(rowsPerAdd, Dim).contiguous();
            using var labels = zeros(rowsPerAdd, dtype: ScalarType.Int64);
            for (var i = 0; i < adds; i++)
            {
                memory.Add(keys, labels);
            }
        }, ct);
        while (!writer.IsCompleted)
        {
            using var logMass = memory.ClassLogMass(u, [1.0]);
            seen.Add(logMass[0, 0, 0].item<float>());
        }

        await writer;
        using (var final = memory.ClassLogMass(u, [1.0]))
        {
            seen.Add(final[0, 0, 0].item<float>());
        }

        var counts = seen.Where(float.IsFinite).Select(l => Math.Exp(l - 1)).ToList();
        Assert.NotEmpty(counts);
        Assert.All(counts, n =>
        {
            var rows = Math.Round(n);
            Assert.True(Math.Abs(n - rows) < 1e-3 * rows, $"n = {n}");
            Assert.True(rows % rowsPerAdd == 0, $"a query saw {rows} rows: part of an add");
        });
        Assert.Equal(rowsPerAdd * adds, Math.Round(counts[^1]));
        Assert.Equal(adds, memory.Version);
    }

    [Fact]
    public void AddsAndQueriesLargerThanOneMessageTravelInPiecesAndGiveTheSameAnswer()
    {
        // 64 KiB messages hold 32 keys of dimension 512: each shard's part of the add comes in 3 pieces, the queries in 4 batches.
        const int dim = 512;
        var data = TestData.Clustered(dim, 5, keysPerClass: 40, queriesPerClass: 20, seed: 42, noise: 0.5);
        using var keys = data.KeyTensor();
        using var labels = data.KeyLabelTensor();
        using var queries = data.QueryTensor();
        using var single = new ExactCacheMemory(dim, 5);
        single.Add(keys, labels);
        var factory = new OrleansCacheMemoryFactory(new OrleansCacheOptions { MessageBytes = 64 << 10 }, Cluster.Client);
        using var sharded = factory.CreateSharded(dim, 5);
        sharded.Add(keys, labels);
        Assert.Equal([67L, 67, 66], sharded.ShardCounts);
        Assert.Equal([67L, 67, 66], sharded.ShardStatuses().Select(s => s.Count));
        double[] thetas = [10, 40];
        using var expected = single.ClassLogMass(queries, thetas);
        using var actual = sharded.ClassLogMass(queries, thetas);
        BruteForce.AssertClose(actual, BruteForce.ToArrays(expected), thetas, 3e-7);
    }

    [Fact]
    public void AnotherClientOpeningTheCacheSeesCommittedAddsAndDisposingItKeepsTheCache()
    {
        var data = TestData.Clustered(Dim, 4, keysPerClass: 10, queriesPerClass: 2, seed: 41);
        using var owner = Cluster.Factory().CreateSharded(Dim, 4, cacheId: "shared-" + Guid.NewGuid().ToString("N"));
        using (var keys = data.KeyTensor())
        using (var labels = data.KeyLabelTensor())
        {
            owner.Add(keys, labels);
        }

        using var queries = data.QueryTensor();
        using var expected = owner.ClassLogMass(queries, [20.0]);
        using (var other = OrleansCacheMemory.Open(Cluster.Client, owner.CacheId))
        {
            Assert.Equal(owner.Count, other.Count);
            Assert.Equal(1, other.Version);
            using var seen = other.ClassLogMass(queries, [20.0]);
            Assert.True(expected.eq(seen).all().item<bool>());
        }

        using var after = owner.ClassLogMass(queries, [20.0]);
        Assert.True(expected.eq(after).all().item<bool>());
        owner.Drop();
        Assert.Throws<InvalidOperationException>(() => OrleansCacheMemory.Open(Cluster.Client, owner.CacheId));
    }

    [Fact]
    public async Task AShardThatHoldsNoStateRefusesToAnswerNamingItself()
    {
        var shard = Cluster.Client.GetGrain<ICacheShardGrain>(ShardKeys.Shard("never-created", 2));
        var queries = new TensorData { Shape = [1, Dim], Data = new byte[4 * Dim] };
        var e = await Assert.ThrowsAnyAsync<InvalidOperationException>(() => shard.Query(queries, [10.0], 1));
        Assert.Contains("Shard 2 of cache 'never-created' holds no state", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void TheFactoryRefusesInvalidOptionsNamingTheSetting()
    {
        var e = Assert.Throws<ArgumentException>(() => new OrleansCacheMemoryFactory(new OrleansCacheOptions { Shards = 0, Inner = "Orleans" }, Cluster.Client));
        Assert.Contains("Cache:Orleans:Shards", e.Message, StringComparison.Ordinal);
        Assert.Contains("Cache:Orleans:Inner", e.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => Cluster.Factory().CreateSharded(Dim, 2, cacheId: "no/slashes"));
        var unknown = Assert.ThrowsAny<Exception>(() => Cluster.Factory("NoSuchStore").Create(Dim, 2));
        Assert.Contains("NoSuchStore", unknown.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(new long[] { 0, 0, 0 }, 7, new long[] { 3, 2, 2 })]
    [InlineData(new long[] { 3, 2, 2 }, 7, new long[] { 2, 3, 2 })]
    [InlineData(new long[] { 10, 0, 4 }, 6, new long[] { 0, 5, 1 })]
    [InlineData(new long[] { 10, 0, 4 }, 20, new long[] { 2, 11, 7 })]
    [InlineData(new long[] { 5, 5 }, 0, new long[] { 0, 0 })]
    public void AddsAreSplitSoShardSizesEndAsEqualAsTheyCan(long[] counts, long rows, long[] expected)
    {
        var split = CacheCoordinatorGrain.Balance(counts, rows);
        Assert.Equal(expected, split);
        Assert.Equal(rows, split.Sum());
    }

    private const int Dim = 16;
}
