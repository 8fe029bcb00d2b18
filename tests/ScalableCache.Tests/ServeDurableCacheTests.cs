using ScalableCache.Core;
using ScalableCache.Core.Models;
using ScalableCache.Core.Persistence;
using ScalableCache.Exact;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>
/// The durable classifier on a tiny network: every acknowledged add survives a crash (log replay), none is applied twice (snapshot
/// offsets), a torn tail is dropped, damage and foreign logs are refused, snapshots compact the log.
/// </summary>
public sealed class ServeDurableCacheTests : IDisposable
{
    private const int BaseKeys = 30;
    private readonly PersistenceTempFolder _folder = new();
    private readonly TinyTapNet _net = TinyTapNet.Create(seed: 3, ScalarType.Float32);

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private string CacheFile => _folder.File("served.scache");

    /// <summary>No periodic snapshot and none at closing: closing leaves the files a crash right after the last ack would.</summary>
    private static DurableCacheOptions CrashLike => new() { SnapshotInterval = TimeSpan.Zero, SnapshotOnDispose = false, SnapshotLogBytes = 0 };

    private static KeyRecipe Recipe => new(["conv", "act"], TinyTapNet.Normalization, new InputShape(2, 4, 4));

    public void Dispose()
    {
        _net.Dispose();
        _folder.Dispose();
    }

    [Fact]
    public async Task ConcurrentAddsAreAcknowledgedInDisjointRangesAndAllSurviveACrash()
    {
        var queries = Images(12, seed: 99);
        Answers before;
        var results = new List<DurableAddResult>();
        await using (var durable = Create(CrashLike))
        {
            var adds = Enumerable.Range(0, 16).Select(client => Task.Run(async () =>
            {
                var mine = new List<DurableAddResult>();
                for (var i = 0; i < 5; i++)
                {
                    using var scope = NewDisposeScope();
                    var n = 1 + ((client + i) % 3);
                    mine.Add(await durable.AddAsync(Images(n, seed: (client * 10) + i), Labels(n, seed: client + i), Ct));
                }

                return mine;
            }, Ct)).ToList();
            foreach (var add in adds)
            {
                results.AddRange(await add);
            }

            var total = results.Sum(r => r.Count);
            Assert.Equal(BaseKeys + total, durable.Count);
            Assert.Equal(80, durable.Statistics.Adds);
            Assert.InRange(durable.Statistics.Commits, 1, 80);
            AssertCovers(results, BaseKeys, BaseKeys + total);
            before = Probabilities(durable, queries);
        }

        await using var reopened = Open(CrashLike);
        Assert.Equal(BaseKeys, reopened.Recovery.SnapshotKeys);
        Assert.Equal(results.Sum(r => r.Count), reopened.Recovery.ReplayedKeys);
        Assert.Equal(0, reopened.Recovery.SkippedKeys);
        Assert.Equal(BaseKeys + results.Sum(r => r.Count), reopened.Count);
        Assert.Equal(before, Probabilities(reopened, queries));
    }

    [Fact]
    public async Task ASnapshotAndTheLogBeforeItAreNeverAppliedTwice()
    {
        var queries = Images(8, seed: 98);
        Answers before;
        string[] oldSegments;
        await using (var durable = Create(CrashLike))
        {
            await durable.AddAsync(Images(4, seed: 1), Labels(4, seed: 1), Ct);
            await durable.AddAsync(Images(3, seed: 2), Labels(3, seed: 2), Ct);
            oldSegments = [.. MemoryLog.FindSegments(durable.LogPath!).Select(s => s.File)];
            var saved = oldSegments.ToDictionary(f => f, File.ReadAllBytes);
            await durable.SnapshotAsync(Ct);
            Assert.Equal(1, durable.Statistics.Snapshots);
            Assert.All(oldSegments, f => Assert.False(File.Exists(f)));
            await durable.AddAsync(Images(2, seed: 3), Labels(2, seed: 3), Ct);
            before = Probabilities(durable, queries);

            // A crash between the snapshot's rename and the deletion of the segments it replaced leaves them behind.
            foreach (var (file, bytes) in saved)
            {
                File.WriteAllBytes(file, bytes);
            }
        }

        Assert.Equal(BaseKeys + 7, CacheFileHeaderCount());
        var interrupted = _folder.File(".served.scache.0123456789ab.tmp"); // a snapshot the crash cut short
        File.WriteAllBytes(interrupted, new byte[100]);
        await using var reopened = Open(CrashLike);
        Assert.False(File.Exists(interrupted));
        Assert.Equal(BaseKeys + 7, reopened.Recovery.SnapshotKeys);
        Assert.Equal(7, reopened.Recovery.SkippedKeys);
        Assert.Equal(2, reopened.Recovery.ReplayedKeys);
        Assert.Equal(BaseKeys + 9, reopened.Count);
        Assert.Equal(before, Probabilities(reopened, queries));
    }

    [Fact]
    public async Task ATornTailIsDroppedWithTheUnacknowledgedAddAndTheCacheGoesOn()
    {
        var queries = Images(8, seed: 97);
        Answers afterTwo;
        await using (var durable = Create(CrashLike))
        {
            await durable.AddAsync(Images(4, seed: 1), Labels(4, seed: 1), Ct);
            await durable.AddAsync(Images(3, seed: 2), Labels(3, seed: 2), Ct);
            afterTwo = Probabilities(durable, queries);
            await durable.AddAsync(Images(5, seed: 3), Labels(5, seed: 3), Ct);
        }

        // The crash hit the third append halfway: its ack never went out.
        var segment = MemoryLog.FindSegments(DurableCacheClassifier.LogPathFor(CacheFile))[^1].File;
        using (var stream = new FileStream(segment, FileMode.Open))
        {
            stream.SetLength(stream.Length - 100);
        }

        await using (var reopened = Open(CrashLike))
        {
            Assert.True(reopened.Recovery.Log.DroppedBytes > 0);
            Assert.Equal(7, reopened.Recovery.ReplayedKeys);
            Assert.Equal(BaseKeys + 7, reopened.Count);
            Assert.Equal(afterTwo, Probabilities(reopened, queries));
            var next = await reopened.AddAsync(Images(1, seed: 4), Labels(1, seed: 4), Ct);
            Assert.Equal(BaseKeys + 7, next.FirstKey);
        }

        await using var again = Open(CrashLike);
        Assert.Equal(0, again.Recovery.Log.DroppedBytes);
        Assert.Equal(BaseKeys + 8, again.Count);
    }

    [Fact]
    public async Task ClosingTakesALastSnapshotSoTheNextStartReplaysNothing()
    {
        var queries = Images(8, seed: 96);
        Answers before;
        await using (var durable = Create(new DurableCacheOptions { SnapshotInterval = TimeSpan.Zero }))
        {
            await durable.AddAsync(Images(6, seed: 1), Labels(6, seed: 1), Ct);
            before = Probabilities(durable, queries);
        }

        await using var reopened = Open(CrashLike);
        Assert.Equal(BaseKeys + 6, reopened.Recovery.SnapshotKeys);
        Assert.Equal(0, reopened.Recovery.Log.Records);
        Assert.Equal(before, Probabilities(reopened, queries));
    }

    [Fact]
    public async Task PeriodicAndLogSizeSnapshotsCompactTheLog()
    {
        await using var durable = Create(new DurableCacheOptions { SnapshotInterval = TimeSpan.FromMilliseconds(200), SnapshotOnDispose = false });
        await durable.AddAsync(Images(3, seed: 1), Labels(3, seed: 1), Ct);
        await WaitFor(() => durable.Statistics.LastSnapshotKeys == BaseKeys + 3);
        Assert.Equal(BaseKeys + 3, CacheFileHeaderCount());
        Assert.Single(MemoryLog.FindSegments(durable.LogPath!));

        await using var bySize = Create(new DurableCacheOptions { SnapshotInterval = TimeSpan.Zero, SnapshotLogBytes = 1, SnapshotOnDispose = false }, "by-size.scache");
        await bySize.AddAsync(Images(2, seed: 2), Labels(2, seed: 2), Ct);
        await WaitFor(() => bySize.Statistics.Snapshots >= 1);
        Assert.Equal(BaseKeys + 2, bySize.Statistics.LastSnapshotKeys);
    }

    [Fact]
    public async Task BadAddsFailBeforeAnythingIsWritten()
    {
        await using var durable = Create(CrashLike);
        var bytes = durable.Statistics.LogBytes;
        using var scope = NewDisposeScope();
        Assert.Throws<ArgumentException>(() => durable.AddAsync(Images(2, seed: 1), tensor(new long[] { 0, 3 }), Ct).GetAwaiter().GetResult());
        Assert.Throws<ArgumentException>(() => durable.AddAsync(Images(2, seed: 1), tensor(new long[] { 0 }), Ct).GetAwaiter().GetResult());
        Assert.Throws<ArgumentException>(() => durable.AddAsync(zeros(2, 3, 4, 4), tensor(new long[] { 0, 1 }), Ct).GetAwaiter().GetResult());
        await Assert.ThrowsAsync<ArgumentException>(() => durable.AddKeysAsync(new float[durable.Dimension], [-1], Ct));
        await Assert.ThrowsAsync<ArgumentException>(() => durable.AddKeysAsync([.. Enumerable.Repeat(float.PositiveInfinity, durable.Dimension)], [0], Ct));
        Assert.Equal(bytes, durable.Statistics.LogBytes);
        Assert.Equal(BaseKeys, durable.Count);
    }

    [Fact]
    public async Task ALogOfAnotherCacheIsNeverReplayed()
    {
        await using (var first = Create(CrashLike))
        {
            await first.AddAsync(Images(2, seed: 1), Labels(2, seed: 1), Ct);
        }

        await using (var other = Create(CrashLike, "other.scache"))
        {
            await other.AddAsync(Images(2, seed: 2), Labels(2, seed: 2), Ct);
        }

        foreach (var (number, file) in MemoryLog.FindSegments(DurableCacheClassifier.LogPathFor(CacheFile)))
        {
            File.Copy(MemoryLog.SegmentPath(DurableCacheClassifier.LogPathFor(_folder.File("other.scache")), number), file, overwrite: true);
        }

        var e = Assert.Throws<MemoryLogException>(() => Open(CrashLike));
        Assert.Contains("belongs to log", e.Message, StringComparison.Ordinal);
        Assert.Throws<IOException>(() => Create(CrashLike)); // never over an existing cache
    }

    private DurableCacheClassifier Create(DurableCacheOptions options, string name = "served.scache")
    {
        using var scope = NewDisposeScope();
        var memory = new ExactCacheMemory(96, 3);
        var classifier = new CacheClassifier(_net, Recipe, memory, theta: 20, lambda: 0.5);
        classifier.Add(Images(BaseKeys, seed: 42), Labels(BaseKeys, seed: 42));
        return DurableCacheClassifier.Create(_folder.File(name), classifier, options, cancellationToken: Ct);
    }

    private DurableCacheClassifier Open(DurableCacheOptions options) =>
        DurableCacheClassifier.Open(CacheFile, _net, new CacheLoadOptions { Providers = [new ExactCacheMemoryFactory(new ExactCacheOptions())] }, options, cancellationToken: Ct);

    private long CacheFileHeaderCount() => Core.Persistence.CacheFile.ReadHeader(CacheFile).Count;

    /// <summary>Random uint8 images <c>[n, 2, 4, 4]</c> for <see cref="TinyTapNet"/> (also the Orleans serve tests').</summary>
    internal static Tensor Images(int n, int seed)
    {
        var generator = new TorchSharp.torch.Generator((ulong)seed);
        return randint(0, 256, [n, 2, 4, 4], generator: generator).to_type(ScalarType.Byte);
    }

    /// <summary>Random labels in [0, 3).</summary>
    internal static Tensor Labels(int n, int seed)
    {
        var random = new Random(seed);
        return tensor(Enumerable.Range(0, n).Select(_ => (long)random.Next(3)).ToArray());
    }

    private static Answers Probabilities(DurableCacheClassifier durable, Tensor images)
    {
        using var outputs = durable.Classify(images);
        using var predictions = outputs.Predictions();
        return new Answers(outputs.Probabilities.data<float>().ToArray(), predictions.data<long>().ToArray());
    }

    /// <summary>The acknowledged adds cover keys [<paramref name="from"/>, <paramref name="to"/>) without gaps or overlaps.</summary>
    internal static void AssertCovers(IEnumerable<DurableAddResult> results, long from, long to)
    {
        var expected = from;
        foreach (var r in results.OrderBy(r => r.FirstKey))
        {
            Assert.Equal(expected, r.FirstKey);
            expected += r.Count;
        }

        Assert.Equal(to, expected);
    }

    /// <summary>
    /// Probabilities and predicted classes. A memory restored from a snapshot stores its keys in other chunks than one grown add by
    /// add, so the blocked log-sum-exp may differ in the last bits: predictions must be equal, probabilities within 1e-6.
    /// </summary>
    private sealed record Answers(float[] Probabilities, long[] Predictions)
    {
        public bool Equals(Answers? other) =>
            other is not null && Predictions.SequenceEqual(other.Predictions) && Probabilities.Length == other.Probabilities.Length &&
            Probabilities.Zip(other.Probabilities).All(p => Math.Abs(p.First - p.Second) <= 1e-6);

        public override int GetHashCode() => Predictions.Length;
    }

    private static async Task WaitFor(Func<bool> condition)
    {
        for (var i = 0; i < 200 && !condition(); i++)
        {
            await Task.Delay(50, Ct);
        }

        Assert.True(condition(), "timed out waiting");
    }
}
