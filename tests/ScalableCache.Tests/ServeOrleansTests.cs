using System.Net;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using ScalableCache.Core;
using ScalableCache.Core.Models;
using ScalableCache.Core.Persistence;
using ScalableCache.Exact;
using ScalableCache.Host;
using ScalableCache.Host.Cli;
using ScalableCache.Host.Serving;
using ScalableCache.Orleans;
using Xunit;
using static ScalableCache.Tests.ServeDurableCacheTests;
using static ScalableCache.Tests.ServeTestSupport;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>
/// The durable classifier (what <c>scache serve</c> runs) over the Orleans provider, whose cluster persists every add itself: no log,
/// every acknowledged add present after the server side restarts and reopens the cluster cache by id, the same predictions; a
/// cluster that keeps no state is refused unless non-durable adds are allowed.
/// </summary>
[Collection(OrleansClusterCollection.Name)]
public sealed class ServeOrleansTests(SharedOrleansCluster shared) : IDisposable
{
    private const int BaseKeys = 30;
    private const int Dimension = 96;
    private readonly PersistenceTempFolder _folder = new();
    private readonly TinyTapNet _net = TinyTapNet.Create(seed: 3, ScalarType.Float32);

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    /// <summary>No periodic snapshot and none at closing: closing leaves what a crash right after the last ack would.</summary>
    private static DurableCacheOptions CrashLike => new() { SnapshotInterval = TimeSpan.Zero, SnapshotOnDispose = false, SnapshotLogBytes = 0 };

    private static KeyRecipe Recipe => new(["conv", "act"], TinyTapNet.Normalization, new InputShape(2, 4, 4));

    private string CacheFile => _folder.File("served.scache");

    public void Dispose()
    {
        _net.Dispose();
        _folder.Dispose();
    }

    [Fact]
    public async Task EveryAcknowledgedAddIsInTheClusterCacheAfterTheServerRestartsAndPredictionsAreEqual()
    {
        var factory = shared.Cluster.Factory();
        var queries = Images(12, seed: 99);
        var results = new List<DurableAddResult>();
        var added = new List<(Tensor Keys, Tensor Labels)>();
        float[] before;
        long[] beforeClasses;
        string cacheId;
        await using (var durable = Create(factory, CrashLike))
        {
            cacheId = durable.MemoryId!;
            Assert.True(durable.AddsPersisted);
            Assert.Null(durable.LogPath);
            Assert.Empty(MemoryLog.FindSegments(DurableCacheClassifier.LogPathFor(CacheFile)));
            var header = Core.Persistence.CacheFile.ReadHeader(CacheFile);
            Assert.Equal(OrleansCacheMemory.ProviderName, header.Provider);
            Assert.Equal(cacheId, header.Metadata[DurableCacheClassifier.MemoryIdKey]);
            Assert.Equal(20.0, header.Theta);
            Assert.Equal(0.5, header.Lambda);
            Assert.True(File.Exists(Path.Combine(shared.Cluster.StateDirectory, cacheId, "manifest.json")));

            // Concurrent clients, as the server's requests are: group commits become one cluster add (one version) each.
            var adds = Enumerable.Range(0, 6).Select(client => Task.Run(async () =>
            {
                var mine = new List<(DurableAddResult, Tensor, Tensor)>();
                for (var i = 0; i < 3; i++)
                {
                    var n = 1 + ((client + i) % 3);
                    var images = Images(n, seed: 1000 + (client * 10) + i);
                    var labels = Labels(n, seed: client + i);
                    var (keys, _) = durable.Features(images);
                    mine.Add((await durable.AddAsync(images, labels, Ct), keys, labels));
                }

                return mine;
            }, Ct)).ToList();
            foreach (var add in adds)
            {
                foreach (var (result, keys, labels) in await add)
                {
                    results.Add(result);
                    added.Add((keys, labels));
                }
            }

            var total = results.Sum(r => r.Count);
            Assert.Equal(BaseKeys + total, durable.Count);
            AssertCovers(results, BaseKeys, BaseKeys + total);
            (before, beforeClasses) = Answers(durable, queries);
        } // the process ends without a snapshot: only the cluster holds the adds

        // The server side starts again from the same cache file: it reopens the cluster cache by id and serves its keys.
        await using (var reopened = Open(factory, CrashLike))
        {
            Assert.Equal(cacheId, reopened.MemoryId);
            Assert.Equal(BaseKeys + results.Sum(r => r.Count), reopened.Count);
            Assert.Equal(results.Sum(r => r.Count), reopened.Recovery.ReplayedKeys);
            Assert.Equal(20.0, reopened.Theta);
            Assert.Equal(0.5, reopened.Lambda);
            var (after, afterClasses) = Answers(reopened, queries);
            Assert.Equal(beforeClasses, afterClasses);
            AssertClose(before, after, 1e-5f);

            // Every acknowledged add is there, and nothing else: the cluster's log-mass is a local store's over the same keys.
            using var reference = new ExactCacheMemory(Dimension, 3);
            using (var scope = NewDisposeScope())
            {
                var (baseKeys, _) = reopened.Features(Images(BaseKeys, seed: 42));
                reference.Add(baseKeys, Labels(BaseKeys, seed: 42));
                foreach (var (keys, labels) in added)
                {
                    reference.Add(keys, labels);
                }
            }

            Assert.Equal(reference.Count, reopened.Count);
            using (var scope = NewDisposeScope())
            {
                var (queryKeys, _) = reopened.Features(queries);
                using var memory = factory.Open(cacheId);
                var expected = reference.ClassLogMass(queryKeys, [5.0, 20.0]).data<float>().ToArray();
                var actual = memory.ClassLogMass(queryKeys, [5.0, 20.0]).data<float>().ToArray();
                AssertClose(expected, actual, 1e-5f);
            }

            // One more add after the restart, then a clean close: the snapshot checkpoints the shards and records the key count.
            var last = await reopened.AddAsync(Images(2, seed: 7), Labels(2, seed: 7), Ct);
            Assert.Equal(BaseKeys + results.Sum(r => r.Count), last.FirstKey);
            await reopened.SnapshotAsync(Ct);
            Assert.Equal(reopened.Count, Core.Persistence.CacheFile.ReadHeader(CacheFile).Count);
            Assert.NotEmpty(Directory.EnumerateFiles(Path.Combine(shared.Cluster.StateDirectory, cacheId), "checkpoint-*.scache", SearchOption.AllDirectories));
            Assert.Empty(Directory.EnumerateFiles(Path.Combine(shared.Cluster.StateDirectory, cacheId), "part-*.bin", SearchOption.AllDirectories));
        }

        await using (var again = Open(factory, CrashLike))
        {
            Assert.Equal(BaseKeys + results.Sum(r => r.Count) + 2, again.Count);
            Assert.Equal(0, again.Recovery.ReplayedKeys);
        }

        Drop(factory, cacheId);
    }

    [Fact]
    public async Task TheHttpServerOverOrleansAcknowledgesAddsThatARestartedServerStillServes()
    {
        var factory = shared.Cluster.Factory();
        var random = new Random(11);
        var floats = Enumerable.Range(0, 4 * 2 * 4 * 4).Select(_ => (float)random.NextDouble()).ToArray();
        string cacheId;
        (long[] Classes, float[][] Probabilities) before;
        await using (var durable = Create(factory, CrashLike))
        {
            cacheId = durable.MemoryId!;
            await using var server = StartServer(durable);
            using var client = Client(Assert.Single(server.Addresses));
            var (status, json) = await Post(client, "/v1/memory", TensorBody(floats[..(2 * 32)], 2, 2, 4, 4, [2, 1]), Ct);
            Assert.Equal(HttpStatusCode.OK, status);
            Assert.Equal(BaseKeys, json.GetProperty("firstKey").GetInt64());
            Assert.Equal(BaseKeys + 2, json.GetProperty("keys").GetInt64());
            var info = await Get(client, "/v1/info", Ct);
            Assert.Equal("Orleans", info.GetProperty("provider").GetString());
            Assert.Equal("memory", info.GetProperty("durability").GetProperty("mode").GetString());
            Assert.True(info.GetProperty("durability").GetProperty("persisted").GetBoolean());
            Assert.Equal(cacheId, info.GetProperty("durability").GetProperty("memoryId").GetString());
            Assert.Equal(JsonValueKind.Null, info.GetProperty("log").GetProperty("path").ValueKind);
            (_, json) = await Post(client, "/v1/predict", TensorBody(floats, 4, 2, 4, 4), Ct);
            before = Predictions(json);
        }

        await using (var durable = Open(factory, CrashLike))
        {
            await using var server = StartServer(durable);
            using var client = Client(Assert.Single(server.Addresses));
            var (status, json) = await Post(client, "/v1/predict", TensorBody(floats, 4, 2, 4, 4), Ct);
            Assert.Equal(HttpStatusCode.OK, status);
            Assert.Equal(BaseKeys + 2, json.GetProperty("keys").GetInt64());
            AssertSameAnswers(before, Predictions(json), 1e-5);
        }

        Drop(factory, cacheId);
    }

    [Fact]
    public async Task AFileWhoseClusterCacheLostKeysOrIsGoneFailsNamingIt()
    {
        var factory = shared.Cluster.Factory();
        string cacheId;
        await using (var durable = Create(factory, CrashLike))
        {
            cacheId = durable.MemoryId!;
            await durable.AddAsync(Images(2, seed: 5), Labels(2, seed: 5), Ct);
            await durable.SnapshotAsync(Ct); // the file now records 32 keys
        }

        Drop(factory, cacheId);
        var e = Assert.Throws<InvalidOperationException>(() => Open(factory, CrashLike));
        Assert.Contains(cacheId, e.Message, StringComparison.Ordinal);
        Assert.Contains("does not exist", e.Message, StringComparison.Ordinal);
        Assert.Equal(ExitCodes.Configuration, CommandRunner.Classify(e));

        // A cache of that id with fewer keys than the file recorded is not the one the file was written for.
        using (var impostor = factory.CreateSharded(Dimension, 3, cacheId))
        {
            using var scope = NewDisposeScope();
            impostor.Add(randn(3, Dimension), tensor(new long[] { 0, 1, 2 }));
        }

        var lost = Assert.Throws<CacheFileException>(() => Open(factory, CrashLike));
        Assert.Contains("keys were lost", lost.Message, StringComparison.Ordinal);
        Assert.Equal(ExitCodes.InvalidCacheFile, CommandRunner.Classify(lost));
        Drop(factory, cacheId);
    }

    [Fact]
    public async Task AClusterThatKeepsNoStateIsRefusedWithAConfigurationErrorUnlessNonDurableAddsAreAllowed()
    {
        await using var cluster = await OrleansTestCluster.StartAsync(silos: 1, persist: false);
        var factory = cluster.Factory(shards: 2);
        var e = Assert.Throws<InvalidOperationException>(() => Create(factory, CrashLike));
        Assert.Contains("does not persist its adds", e.Message, StringComparison.Ordinal);
        Assert.Contains("StateDirectory", e.Message, StringComparison.Ordinal);
        Assert.Contains("AllowNonDurableMemory", e.Message, StringComparison.Ordinal);
        Assert.Equal(ExitCodes.Configuration, CommandRunner.Classify(e));
        Assert.False(File.Exists(CacheFile)); // nothing written

        var allowed = CrashLike;
        allowed.AllowNonDurableMemory = true;
        await using var durable = Create(factory, allowed);
        Assert.False(durable.AddsPersisted);
        var added = await durable.AddAsync(Images(3, seed: 8), Labels(3, seed: 8), Ct);
        Assert.Equal(BaseKeys + 3, added.KeyCount);
        await durable.SnapshotAsync(Ct); // nothing persisted to compact: a no-op, not a failure
        Assert.Equal(0, durable.Statistics.SnapshotFailures);
    }

    private static CacheServer StartServer(DurableCacheClassifier durable)
    {
        var server = CacheServer.Create(durable, new ServeFacts(["a", "b", "c"], "test"), new ServeOptions { Urls = "http://127.0.0.1:0" }, NullLoggerFactory.Instance);
        server.StartAsync(Ct).GetAwaiter().GetResult();
        return server;
    }

    private static void Drop(OrleansCacheMemoryFactory factory, string cacheId)
    {
        using var memory = factory.Open(cacheId);
        memory.Drop();
    }

    private DurableCacheClassifier Create(OrleansCacheMemoryFactory factory, DurableCacheOptions options)
    {
        using var scope = NewDisposeScope();
        var memory = factory.CreateSharded(Dimension, 3); // as `scache serve` builds it: a new cache, dropped unless retained
        var classifier = new CacheClassifier(_net, Recipe, memory, theta: 20, lambda: 0.5);
        classifier.Add(Images(BaseKeys, seed: 42), Labels(BaseKeys, seed: 42));
        return DurableCacheClassifier.Create(CacheFile, classifier, options, cancellationToken: Ct);
    }

    private DurableCacheClassifier Open(OrleansCacheMemoryFactory factory, DurableCacheOptions options) =>
        DurableCacheClassifier.Open(CacheFile, _net, new CacheLoadOptions { Providers = [new ExactCacheMemoryFactory(new ExactCacheOptions()), factory] }, options,
            cancellationToken: Ct);

    private static (float[] Probabilities, long[] Classes) Answers(DurableCacheClassifier durable, Tensor images)
    {
        using var outputs = durable.Classify(images);
        using var predictions = outputs.Predictions();
        return (outputs.Probabilities.data<float>().ToArray(), predictions.data<long>().ToArray());
    }

    private static void AssertClose(float[] expected, float[] actual, float tolerance)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (var i = 0; i < expected.Length; i++)
        {
            Assert.True(expected[i] == actual[i] || Math.Abs(expected[i] - actual[i]) <= tolerance, $"element {i}: {expected[i]} then {actual[i]}");
        }
    }
}
