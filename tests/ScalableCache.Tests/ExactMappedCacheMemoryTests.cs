using ScalableCache.Core;
using ScalableCache.Core.Persistence;
using ScalableCache.Exact;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>
/// The exact store over a memory-mapped key file against the contract. Each memory opens an empty key file (the file is
/// unlinked once mapped), so adds go to the in-memory tail after the file's keys; <see cref="ExactMappedCacheMemoryTests"/>
/// checks queries over mapped chunks themselves.
/// </summary>
public sealed class ExactMappedConformanceTests : CacheMemoryConformanceTests
{
    private static readonly ExactCacheOptions Options = new() { KeyBlockSize = 16, QueryBlockSize = 4 };

    protected override string ExpectedProvider => "Exact";

    protected override IReadOnlyList<ICacheMemoryFactory> RestoreFactories => [new ExactCacheMemoryFactory(Options)];

    protected override ICacheMemory CreateMemory(int dimension, int classCount)
    {
        var path = Path.Combine(Path.GetTempPath(), $"scache-mapped-{Guid.NewGuid():N}{KeyFile.Extension}");
        using (var writer = KeyFileWriter.Open(path, new KeyFileLayout(dimension, classCount, ScalarType.Float32)))
        {
            writer.Complete();
        }

        var memory = ExactCacheMemory.OpenKeyFile(path, Options);
        File.Delete(path); // the mapping keeps the file's contents
        return memory;
    }
}

public sealed class ExactMappedCacheMemoryTests : IDisposable
{
    private const int Dim = 24;
    private const int Classes = 7;
    private static readonly double[] Thetas = [10, 37.5, 90];
    private readonly PersistenceTempFolder _folder = new();

    public void Dispose() => _folder.Dispose();

    /// <summary>Writes keys to a key file in chunks of <paramref name="rowsPerChunk"/>, <paramref name="step"/> rows per append.</summary>
    private string Write(float[] keys, long[] labels, ScalarType type, int rowsPerChunk, int step = 11, string name = "keys")
    {
        var path = Path.Combine(_folder.Path, name + KeyFile.Extension);
        using var writer = KeyFileWriter.Open(path, new KeyFileLayout(Dim, Classes, type, rowsPerChunk));
        Append(writer, keys, labels, 0, labels.Length, step);
        writer.Complete();
        return path;
    }

    private static void Append(KeyFileWriter writer, float[] keys, long[] labels, int from, int to, int step)
    {
        for (var start = from; start < to; start += step)
        {
            var n = Math.Min(step, to - start);
            using var scope = NewDisposeScope();
            writer.Append(tensor(keys.AsSpan(start * Dim, n * Dim).ToArray(), [n, Dim]), tensor(labels.AsSpan(start, n).ToArray()));
        }
    }

    [Theory]
    [InlineData(ScalarType.Float32, 3e-7)]
    [InlineData(ScalarType.Float16, 5e-4)]
    [InlineData(ScalarType.BFloat16, 4e-3)]
    public void MappedKeysMatchTheDoublePrecisionReference(ScalarType type, double tolerance)
    {
        // Tolerances as the conformance suites state them: float32 3e-7, float16 2⁻¹¹ rounding → 5e-4, bfloat16 2⁻⁸ → 4e-3,
        // each times (1 + θ + |L|).
        var (keys, labels) = PersistenceTestSupport.UnitKeys(seed: 5, n: 301, d: Dim, classes: Classes);
        var queries = TestData.RandomUnitArray(13, Dim, new Random(6));
        var path = Write(keys, labels, type, rowsPerChunk: 40);
        using var memory = ExactCacheMemory.OpenKeyFile(path, new ExactCacheOptions { KeyBlockSize = 17, QueryBlockSize = 5 });
        Assert.Equal(301, memory.Count);
        Assert.Equal(type, memory.StorageType);
        Assert.Equal(8, memory.ChunkCount); // ⌈301 / 40⌉ mapped chunks
        Assert.Equal(Path.GetFullPath(path), memory.KeyFilePath);

        using var q = tensor(queries, [13, Dim]);
        using var logMass = memory.ClassLogMass(q, Thetas);
        BruteForce.AssertClose(logMass, BruteForce.LogMass(keys, labels, queries, Dim, Classes, Thetas), Thetas, tolerance);
    }

    [Theory]
    [InlineData(ExactStorageType.Float32)]
    [InlineData(ExactStorageType.Float16)]
    [InlineData(ExactStorageType.BFloat16)]
    public void MappedStoreAgreesWithTheInMemoryStoreOfTheSameStorageType(ExactStorageType storage)
    {
        // Same stored values, other block boundaries: only the order of the float32 sums differs (≤ 2e-6 relative here).
        var (keys, labels) = PersistenceTestSupport.UnitKeys(seed: 8, n: 250, d: Dim, classes: Classes);
        var queries = TestData.RandomUnitArray(9, Dim, new Random(9));
        var options = new ExactCacheOptions { KeyBlockSize = 32, StorageType = storage };
        using var inMemory = new ExactCacheMemory(Dim, Classes, options);
        PersistenceTestSupport.Add(inMemory, keys, labels, 0, 250);
        var factory = new ExactCacheMemoryFactory(options);
        var path = Path.Combine(_folder.Path, "factory" + KeyFile.Extension);
        using (var writer = factory.CreateKeyFile(path, Dim, Classes))
        {
            Append(writer, keys, labels, 0, 250, 64);
            writer.Complete();
        }

        using var mapped = factory.OpenKeyFile(path);
        var expected = PersistenceTestSupport.LogMass(inMemory, queries, Thetas);
        var actual = PersistenceTestSupport.LogMass(mapped, queries, Thetas);
        for (var i = 0; i < expected.Length; i++)
        {
            Assert.True(actual[i] == expected[i] || Math.Abs(actual[i] - expected[i]) <= 2e-6 * (1 + Math.Abs(expected[i])), $"entry {i}: {actual[i]} vs {expected[i]}");
        }
    }

    [Fact]
    public void AddsAfterTheFileJoinTheMemoryAndSaveWithTheMappedKeys()
    {
        var (keys, labels) = PersistenceTestSupport.UnitKeys(seed: 11, n: 200, d: Dim, classes: Classes);
        var queries = TestData.RandomUnitArray(7, Dim, new Random(12));
        var path = Write(keys.AsSpan(0, 150 * Dim).ToArray(), labels[..150], ScalarType.Float32, rowsPerChunk: 64);
        var options = new ExactCacheOptions { KeyBlockSize = 20 };
        using var mapped = ExactCacheMemory.OpenKeyFile(path, options);
        PersistenceTestSupport.Add(mapped, keys, labels, 150, 50);
        Assert.Equal(200, mapped.Count);
        using (var q = tensor(queries, [7, Dim]))
        using (var logMass = mapped.ClassLogMass(q, Thetas))
        {
            BruteForce.AssertClose(logMass, BruteForce.LogMass(keys, labels, queries, Dim, Classes, Thetas), Thetas, 3e-7);
        }

        // A cache file saved from the mapped memory holds all 200 keys and reloads into an ordinary memory with the same answers.
        var cacheFile = Path.Combine(_folder.Path, "mapped" + CacheFile.Extension);
        PersistenceTestSupport.Save(cacheFile, PersistenceTestSupport.Header(), mapped);
        var factory = new ExactCacheMemoryFactory(options);
        var loaded = PersistenceTestSupport.Load(cacheFile, [factory]);
        using var restored = loaded.Memory;
        Assert.Equal(200, restored.Count);
        Assert.Equal(PersistenceTestSupport.LogMass(mapped, queries, Thetas), PersistenceTestSupport.LogMass(restored, queries, Thetas));
    }

    [Fact]
    public void CacheFileCanReferenceTheKeyFileAndLoadingMapsIt()
    {
        var (keys, labels) = PersistenceTestSupport.UnitKeys(seed: 21, n: 180, d: Dim, classes: Classes);
        var queries = TestData.RandomUnitArray(6, Dim, new Random(22));
        var path = Write(keys.AsSpan(0, 150 * Dim).ToArray(), labels[..150], ScalarType.Float16, rowsPerChunk: 50, name: "train");
        var options = new ExactCacheOptions { SaveKeyFileByReference = true };
        var cacheFile = Path.Combine(_folder.Path, "train" + CacheFile.Extension);
        float[] expected;
        using (var mapped = ExactCacheMemory.OpenKeyFile(path, options))
        {
            PersistenceTestSupport.Add(mapped, keys, labels, 150, 30); // online adds after the file are saved in the cache file
            PersistenceTestSupport.Save(cacheFile, PersistenceTestSupport.Header(), mapped);
            expected = PersistenceTestSupport.LogMass(mapped, queries, Thetas);
        }

        // The cache file holds the 30 added keys (float32) and a reference, not the 150 keys of the key file.
        Assert.InRange(new FileInfo(cacheFile).Length, 30 * Dim * 4 / 4, 150 * Dim * 2);
        var factory = new ExactCacheMemoryFactory(new ExactCacheOptions());
        var loaded = PersistenceTestSupport.Load(cacheFile, [factory]);
        using (var restored = (ExactCacheMemory)loaded.Memory)
        {
            Assert.Equal(Path.GetFullPath(path), restored.KeyFilePath);
            Assert.Equal(180, restored.Count);
            var actual = PersistenceTestSupport.LogMass(restored, queries, Thetas);
            for (var i = 0; i < expected.Length; i++)
            {
                Assert.True(actual[i] == expected[i] || Math.Abs(actual[i] - expected[i]) <= 2e-6 * (1 + Math.Abs(expected[i])), $"entry {i}");
            }
        }

        // Another key file under the same name, or none, fails with CacheFileException naming the problem.
        File.Move(path, path + ".moved");
        var missing = Assert.Throws<CacheFileException>(() => PersistenceTestSupport.Load(cacheFile, [factory]).Memory.Dispose());
        Assert.Equal(CacheFileProblem.Inconsistent, missing.Problem);
        Assert.Contains("missing", missing.Message, StringComparison.Ordinal);
        var other = labels[..150].Select(l => (l + 1) % Classes).ToArray();
        _ = Write(keys.AsSpan(0, 150 * Dim).ToArray(), other, ScalarType.Float16, rowsPerChunk: 50, name: "train");
        var changed = Assert.Throws<CacheFileException>(() => PersistenceTestSupport.Load(cacheFile, [factory]).Memory.Dispose());
        Assert.Contains("checksum", changed.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ConcurrentQueriesOverMappedChunksWhileAddingGiveTheSnapshotAnswers()
    {
        // Each query copies blocks out of the mapping into its own buffers and releases the pages: concurrent queries (and an add)
        // must not see each other's blocks. Before the add every answer equals the single-threaded one bit for bit.
        var (keys, labels) = PersistenceTestSupport.UnitKeys(seed: 31, n: 400, d: Dim, classes: Classes);
        var queries = TestData.RandomUnitArray(5, Dim, new Random(32));
        var path = Write(keys.AsSpan(0, 300 * Dim).ToArray(), labels[..300], ScalarType.BFloat16, rowsPerChunk: 64);
        using var memory = ExactCacheMemory.OpenKeyFile(path, new ExactCacheOptions { KeyBlockSize = 16 });
        var before = PersistenceTestSupport.LogMass(memory, queries, Thetas);
        var answers = new System.Collections.Concurrent.ConcurrentBag<(long Count, float[] Answer)>();
        var adder = Task.Run(() => PersistenceTestSupport.Add(memory, keys, labels, 300, 100), TestContext.Current.CancellationToken);
        Parallel.For(0, 24, _ =>
        {
            var count = memory.Count;
            answers.Add((count, PersistenceTestSupport.LogMass(memory, queries, Thetas)));
        });
        await adder;
        var after = PersistenceTestSupport.LogMass(memory, queries, Thetas);
        Assert.NotEqual(before, after);
        foreach (var (count, answer) in answers)
        {
            Assert.True(answer.SequenceEqual(before) || answer.SequenceEqual(after), $"a query (count {count} when it started) saw neither snapshot");
            if (count == 400)
            {
                Assert.Equal(after, answer);
            }
        }
    }

    [Fact]
    public void ResumedWriteContinuesAfterTheLastCompleteChunkAndEqualsAnUninterruptedOne()
    {
        var (keys, labels) = PersistenceTestSupport.UnitKeys(seed: 13, n: 100, d: Dim, classes: Classes);
        var layout = new KeyFileLayout(Dim, Classes, ScalarType.Float16, RowsPerChunk: 16);
        var whole = Write(keys, labels, ScalarType.Float16, rowsPerChunk: 16, name: "whole");

        var path = Path.Combine(_folder.Path, "resumed" + KeyFile.Extension);
        using (var first = KeyFileWriter.Open(path, layout, identity: "build A"))
        {
            Append(first, keys, labels, 0, 57, 10); // 3 full chunks (48 keys) reach the disk; 9 buffered keys are lost
            Assert.Equal(48, first.DurableCount);
        }

        // A torn fourth chunk (its contents, no page) must be dropped too.
        using (var stream = new FileStream(path, FileMode.Append))
        {
            stream.Write(new byte[KeyFile.PageBytes + 100]);
        }

        var unfinished = Assert.Throws<CacheFileException>(() => KeyFile.Open(path));
        Assert.Equal(CacheFileProblem.Truncated, unfinished.Problem);
        Assert.Contains("resume", unfinished.Message, StringComparison.Ordinal);

        var other = Assert.Throws<CacheFileException>(() => KeyFileWriter.Open(path, layout, identity: "build B", resume: true));
        Assert.Equal(CacheFileProblem.Mismatch, other.Problem);

        using (var resumed = KeyFileWriter.Open(path, layout, identity: "build A", resume: true))
        {
            Assert.Equal(48, resumed.ResumedCount);
            Assert.Equal(48, resumed.Count);
            Append(resumed, keys, labels, 48, 100, 7);
            resumed.Complete();
        }

        // Identity aside (header digest), the files hold the same chunks: compare everything after the header.
        Assert.Equal(File.ReadAllBytes(whole)[KeyFile.PageBytes..], File.ReadAllBytes(path)[KeyFile.PageBytes..]);
        using var finished = KeyFileWriter.Open(path, layout, identity: "build A", resume: true);
        Assert.True(finished.IsComplete);
        Assert.Equal(100, finished.Count);
        Assert.Throws<InvalidOperationException>(() => Append(finished, keys, labels, 0, 1, 1));
    }

    [Fact]
    public void DamagedTruncatedOrForeignKeyFilesFailWithCacheFileException()
    {
        var (keys, labels) = PersistenceTestSupport.UnitKeys(seed: 17, n: 90, d: Dim, classes: Classes);
        var path = Write(keys, labels, ScalarType.Float32, rowsPerChunk: 32);
        var bytes = File.ReadAllBytes(path);
        var damaged = Path.Combine(_folder.Path, "damaged" + KeyFile.Extension);
        var chunkPage = KeyFile.PageBytes;
        var labelsAt = chunkPage + KeyFile.PageBytes;
        var keysAt = labelsAt + KeyFile.PageBytes;

        CacheFileProblem Open(byte[] content, bool verify = true)
        {
            File.WriteAllBytes(damaged, content);
            var e = Assert.Throws<CacheFileException>(() => KeyFile.Open(damaged, new KeyFileOpenOptions { VerifyKeys = verify }).Dispose());
            Assert.Contains(damaged, e.Message, StringComparison.Ordinal);
            return e.Problem;
        }

        byte[] With(Action<byte[]> change)
        {
            var copy = (byte[])bytes.Clone();
            change(copy);
            return copy;
        }

        Assert.Equal(CacheFileProblem.NotACacheFile, Open("not a key file at all, just text......"u8.ToArray()));
        Assert.Equal(CacheFileProblem.ChecksumMismatch, Open(With(b => b[20] ^= 1))); // header field
        Assert.Equal(CacheFileProblem.ChecksumMismatch, Open(With(b => b[chunkPage + 12] ^= 1))); // chunk page
        Assert.Equal(CacheFileProblem.ChecksumMismatch, Open(With(b => b[keysAt + 8] ^= 0x40))); // a key
        Assert.Equal(CacheFileProblem.ChecksumMismatch, Open(With(b => b[labelsAt] = (byte)((b[labelsAt] + 1) % Classes)))); // a label
        Assert.Equal(CacheFileProblem.Inconsistent, Open(With(b => b[labelsAt + 3] = 0x7F), verify: false)); // label out of range
        Assert.Equal(CacheFileProblem.Inconsistent, Open([.. bytes, 0])); // bytes after the trailer
        foreach (var cut in new[] { 8, KeyFile.PageBytes, keysAt + 5, bytes.Length - KeyFile.PageBytes, bytes.Length - 1 })
        {
            Assert.Equal(CacheFileProblem.Truncated, Open(bytes[..cut]));
        }

        // Without verification a changed key is served as it is (documented), and still opens.
        File.WriteAllBytes(damaged, With(b => b[keysAt + 8] ^= 0x40));
        using (var unverified = KeyFile.Open(damaged, new KeyFileOpenOptions { VerifyKeys = false }))
        {
            Assert.Equal(90, unverified.Count);
        }

        // A NaN key whose digests were all recomputed (a forgery, not damage) is refused by the finiteness check.
        var forged = (byte[])bytes.Clone();
        BitConverter.GetBytes(float.NaN).CopyTo(forged, keysAt + (4 * 5));
        Reseal(forged, chunks: 3, rowsPerChunk: 32, rows: 90);
        Assert.Equal(CacheFileProblem.Inconsistent, Open(forged));
        Assert.Equal(90, KeyFileOpenCount(forged, verify: false)); // unverified, it opens: the kernel then sees NaN, not a crash
    }

    private int KeyFileOpenCount(byte[] content, bool verify)
    {
        var path = Path.Combine(_folder.Path, "count" + KeyFile.Extension);
        File.WriteAllBytes(path, content);
        using var file = KeyFile.Open(path, new KeyFileOpenOptions { VerifyKeys = verify });
        return (int)file.Count;
    }

    /// <summary>Recomputes every chunk's payload and page digest and the trailer's chain (float32 keys of <see cref="Dim"/>).</summary>
    private static void Reseal(byte[] file, int chunks, int rowsPerChunk, int rows)
    {
        static int Pad(int n) => (n + KeyFile.PageBytes - 1) / KeyFile.PageBytes * KeyFile.PageBytes;
        using var chain = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        var at = KeyFile.PageBytes;
        for (var c = 0; c < chunks; c++)
        {
            var n = Math.Min(rowsPerChunk, rows - (c * rowsPerChunk));
            var labelsAt = at + KeyFile.PageBytes;
            var keysAt = labelsAt + Pad(4 * n);
            var payload = file.AsSpan(labelsAt, 4 * n).ToArray().Concat(file.AsSpan(keysAt, 4 * n * Dim).ToArray()).ToArray();
            var digest = System.Security.Cryptography.SHA256.HashData(payload);
            digest.CopyTo(file, at + 32);
            System.Security.Cryptography.SHA256.HashData(file.AsSpan(at, 64)).CopyTo(file, at + 64);
            chain.AppendData(digest);
            at = keysAt + Pad(4 * n * Dim);
        }

        chain.GetHashAndReset().CopyTo(file, at + 24);
        System.Security.Cryptography.SHA256.HashData(file.AsSpan(at, 56)).CopyTo(file, at + 56);
    }
}
