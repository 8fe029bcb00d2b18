using ScalableCache.Hnsw;
using ScalableCache.Orleans;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>
/// The keys HNSW shards retrieve, through the grains: cache-wide ids (each shard's local ids mapped back to the insertion order
/// over every add), the union of every shard's top-k, checked against brute force; the ids survive a checkpoint and a restart.
/// The silos' HNSW graphs are built with one thread, so the answers are deterministic.
/// </summary>
[Collection(OrleansClusterCollection.Name)]
public sealed class OrleansRetrievedKeysTests(SharedOrleansCluster shared)
{
    private const int Dim = 24;

    [Fact]
    public void HnswShardsRetrieveCacheWideIdsWhoseUnionHoldsTheBruteForceTopK()
    {
        var data = TestData.Clustered(Dim, 5, keysPerClass: 300, queriesPerClass: 20, seed: 61, noise: 0.5);
        using var memory = shared.Cluster.Factory(inner: "Hnsw").CreateSharded(Dim, 5);
        using var keys = data.KeyTensor();
        using var labels = data.KeyLabelTensor();
        int[] sizes = [700, 333, 467]; // three adds, each split over shards that already hold keys
        var at = 0;
        foreach (var n in sizes)
        {
            memory.Add(keys.narrow(0, at, n), labels.narrow(0, at, n));
            at += n;
        }

        Assert.Equal(data.KeyCount, at);
        using var queries = data.QueryTensor();
        var retrieved = memory.RetrievedKeys(queries);
        Assert.Equal(data.QueryCount, retrieved.Count);
        const int topK = 100; // the silos' HNSW default, per shard
        Assert.All(retrieved, ids =>
        {
            Assert.Equal(memory.ShardCount * topK, ids.Length);
            Assert.Equal(ids.Length, ids.Distinct().Count());
            Assert.All(ids, id => Assert.InRange(id, 0, data.KeyCount - 1));
        });

        // The union of the shards' top-k against the exact top-k over every key (the keys in insertion order).
        var recall = HnswRecall.AtK(memory, queries, keys, topK);
        Assert.True(recall >= 0.98, $"recall@{topK} through the grains = {recall}");

        // A key asked for itself is found under its own cache-wide id, in every add and on every shard.
        int[] rows = [0, 1, 350, 699, 700, 701, 1032, 1033, 1200, data.KeyCount - 1];
        using var own = keys.index_select(0, tensor(rows.Select(r => (long)r).ToArray()));
        var found = memory.RetrievedKeys(own);
        for (var i = 0; i < rows.Length; i++)
        {
            Assert.Contains((long)rows[i], found[i]);
        }

        // A wrong mapping (local ids, say) would lose most of the exact neighbours: brute force over the keys agrees id by id.
        using var exactTop = queries.mm(keys.t()).topk(1, 1).indexes;
        var nearest = exactTop.data<long>().ToArray();
        var hits = Enumerable.Range(0, data.QueryCount).Count(q => retrieved[q].Contains(nearest[q]));
        Assert.True(hits >= data.QueryCount - 1, $"{hits} of {data.QueryCount} queries retrieved their exact nearest key");
    }

    [Fact]
    public void ExactShardsRetrieveNothingAndSaySo()
    {
        using var memory = shared.Cluster.Factory().CreateSharded(Dim, 3);
        using var scope = NewDisposeScope();
        memory.Add(TestData.RandomUnit(9, Dim, seed: 3), tensor(new long[] { 0, 1, 2, 0, 1, 2, 0, 1, 2 }));
        var e = Assert.Throws<NotSupportedException>(() => memory.RetrievedKeys(TestData.RandomUnit(2, Dim, seed: 4)));
        Assert.Contains("sums over every key", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task RetrievedIdsAreTheSameAfterACheckpointAndAFullRestart()
    {
        using var folder = new PersistenceTempFolder();
        var data = TestData.Clustered(Dim, 4, keysPerClass: 60, queriesPerClass: 5, seed: 62, noise: 0.5);
        var cacheId = "ids-" + Guid.NewGuid().ToString("N");
        IReadOnlyList<long[]> before;
        await using (var cluster = await OrleansTestCluster.StartAsync(silos: 1, stateDirectory: folder.Path))
        {
            using var memory = cluster.Factory(inner: "Hnsw", shards: 2).CreateSharded(Dim, 4, cacheId);
            using var keys = data.KeyTensor();
            using var labels = data.KeyLabelTensor();
            memory.Add(keys.narrow(0, 0, 120), labels.narrow(0, 0, 120));
            memory.Add(keys.narrow(0, 120, 50), labels.narrow(0, 120, 50));
            memory.Checkpoint(); // these ids come back from the checkpoints' metadata
            memory.Add(keys.narrow(0, 170, 70), labels.narrow(0, 170, 70)); // these from the parts on disk
            using var queries = data.QueryTensor();
            before = memory.RetrievedKeys(queries);
            Assert.True(HnswRecall.AtK(memory, queries, keys, 10) >= 0.98);
        }

        await using (var cluster = await OrleansTestCluster.StartAsync(silos: 1, stateDirectory: folder.Path))
        {
            using var memory = OrleansCacheMemory.Open(cluster.Client, cacheId);
            using var queries = data.QueryTensor();
            var after = memory.RetrievedKeys(queries);
            Assert.Equal(before.Count, after.Count);
            for (var q = 0; q < before.Count; q++)
            {
                Assert.Equal(before[q].Order(), after[q].Order());
            }

            memory.Drop();
        }
    }
}
