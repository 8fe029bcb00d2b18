using System.Buffers.Binary;
using System.Security.Cryptography;
using ScalableCache.Core;
using ScalableCache.Core.Persistence;
using ScalableCache.Exact;
using ScalableCache.Hnsw;
using Xunit;
using static ScalableCache.Tests.PersistenceTestSupport;

namespace ScalableCache.Tests;

/// <summary>Damaged, foreign and future files fail with a <see cref="CacheFileException"/> naming the problem; failed saves change nothing.</summary>
public sealed class PersistenceFailureTests : IDisposable
{
    private const int Dimension = 8;
    private const int Classes = 3;
    private readonly PersistenceTempFolder _folder = new();
    private readonly ExactCacheMemoryFactory _exact = new(new ExactCacheOptions());
    private readonly string _path;
    private readonly byte[] _bytes;

    public PersistenceFailureTests()
    {
        _path = _folder.File("good.scache");
        var (keys, labels) = UnitKeys(seed: 11, n: 300, Dimension, Classes);
        using var memory = _exact.Create(Dimension, Classes);
        Add(memory, keys, labels, 0, 300);
        Save(_path, Header(), memory);
        _bytes = File.ReadAllBytes(_path);
    }

    public void Dispose() => _folder.Dispose();

    private CacheFileException LoadFails(byte[] bytes, CacheFileProblem problem, string phrase, IEnumerable<ICacheMemoryFactory>? factories = null)
    {
        var path = _folder.File($"bad-{Guid.NewGuid():N}.scache");
        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<CacheFileException>(() => Load(path, factories ?? [_exact]));
        Assert.Equal(problem, e.Problem);
        Assert.Equal(path, e.FilePath);
        Assert.Contains(path, e.Message, StringComparison.Ordinal);
        Assert.Contains(phrase, e.Message, StringComparison.OrdinalIgnoreCase);
        return e;
    }

    [Fact]
    public void TheGoodFileLoads()
    {
        var (_, memory) = Load(_path, [_exact]);
        using (memory)
        {
            Assert.Equal(300, memory.Count);
        }
    }

    [Theory]
    [InlineData(0.5)]
    [InlineData(0.9)]
    [InlineData(0.999)]
    public void TruncatedFileFails(double keep)
    {
        LoadFails(_bytes[..(int)(_bytes.Length * keep)], CacheFileProblem.Truncated, "truncated");
    }

    [Fact]
    public void FileCutInsideTheSignatureOrHeaderOrBeforeTheTrailerFails()
    {
        LoadFails(_bytes[..5], CacheFileProblem.Truncated, "truncated");
        LoadFails(_bytes[..30], CacheFileProblem.Truncated, "truncated");
        var trailerStart = _bytes.Length - TrailerLength(_bytes);
        LoadFails(_bytes[..trailerStart], CacheFileProblem.Truncated, "before the trailer");
    }

    [Fact]
    public void FlippedPayloadByteFailsItsChecksum()
    {
        // A byte of the key data (well inside the last chunk), one in the header and one inside a digest.
        foreach (var position in new[] { _bytes.Length - TrailerLength(_bytes) - 1000, 60, 20 })
        {
            var damaged = (byte[])_bytes.Clone();
            damaged[position] ^= 0x10;
            LoadFails(damaged, CacheFileProblem.ChecksumMismatch, "checksum mismatch");
        }
    }

    [Fact]
    public void EveryFlippedByteIsCaught()
    {
        // Whatever byte is damaged, loading fails with a CacheFileException (never garbage, never another exception).
        var rng = new Random(5);
        for (var i = 0; i < 40; i++)
        {
            var damaged = (byte[])_bytes.Clone();
            damaged[rng.Next(damaged.Length)] ^= (byte)(1 << rng.Next(8));
            var path = _folder.File($"flip-{i}.scache");
            File.WriteAllBytes(path, damaged);
            Assert.Throws<CacheFileException>(() => Load(path, [_exact]));
        }
    }

    [Fact]
    public void WrongMagicIsNotACacheFile()
    {
        var damaged = (byte[])_bytes.Clone();
        damaged[0] = (byte)'X';
        LoadFails(damaged, CacheFileProblem.NotACacheFile, "bad magic");
        LoadFails("{\"not\": \"a cache\"}"u8.ToArray(), CacheFileProblem.NotACacheFile, "not a cache file");
        LoadFails([], CacheFileProblem.NotACacheFile, "not a cache file");
    }

    [Fact]
    public void FutureVersionNeedsANewerReader()
    {
        // Header body: digest then a MessagePack array (array 16: DC 00 14, twenty keys) of magic (A6 "scache"), version, minimum reader version.
        var future = (byte[])_bytes.Clone();
        const int body = 8 + 5 + 32;
        Assert.Equal([0xDC, 0x00, 0x14, 0xA6, .. "scache"u8, 0x01, 0x01], future[body..(body + 12)]);
        future[body + 10] = 0x02;
        future[body + 11] = 0x02;
        var length = (int)BinaryPrimitives.ReadUInt32BigEndian(future.AsSpan(9, 4)) - 32;
        SHA256.HashData(future.AsSpan(body, length), future.AsSpan(13, 32));

        var e = LoadFails(future, CacheFileProblem.UnsupportedVersion, "format version 2");
        Assert.Contains("reads version 1", e.Message, StringComparison.Ordinal);
        Assert.Equal(CacheFileProblem.UnsupportedVersion, Assert.Throws<CacheFileException>(() => CacheFile.ReadHeader(e.FilePath)).Problem);
    }

    [Fact]
    public void UnregisteredProviderIsNamed()
    {
        var hnsw = new HnswCacheMemoryFactory(new HnswCacheOptions());
        using var memory = hnsw.CreateHnsw(Dimension, Classes);
        var (keys, labels) = UnitKeys(seed: 12, n: 20, Dimension, Classes);
        Add(memory, keys, labels, 0, 20);
        var path = _folder.File("hnsw.scache");
        Save(path, Header(), memory);

        var e = LoadFails(File.ReadAllBytes(path), CacheFileProblem.UnknownProvider, "'Hnsw'");
        Assert.Contains("Exact", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void HeaderAndPayloadThatDisagreeAreInconsistent()
    {
        // An "Exact" state that claims 3 keys but carries the bytes of 2.
        var state = new CacheState("Exact", 4, 3);
        state.Properties["views"] = "3";
        state.Properties["maxKeyNorm"] = "1";
        state.Blobs.Add(CacheBlob.FromInt32s("labels", [0, 1]));
        state.Blobs.Add(CacheBlob.FromBytes("keys", new byte[2 * 4 * 4]));
        var path = _folder.File("inconsistent.scache");
        Save(path, Header(), new ScriptedPersistentMemory("Exact", 4, Classes, () => state));
        LoadFails(File.ReadAllBytes(path), CacheFileProblem.Inconsistent, "inconsistent");

        // Labels outside [0, C) name their key.
        var badLabel = new CacheState("Exact", 2, 2);
        badLabel.Properties["views"] = "2";
        badLabel.Properties["maxKeyNorm"] = "1";
        badLabel.Blobs.Add(CacheBlob.FromInt32s("labels", [0, 7]));
        badLabel.Blobs.Add(CacheBlob.FromBytes("keys", new byte[2 * 2 * 4]));
        Save(path, Header(), new ScriptedPersistentMemory("Exact", 2, Classes, () => badLabel));
        LoadFails(File.ReadAllBytes(path), CacheFileProblem.Inconsistent, "Label 7 of key 1");

        // So do non-finite keys.
        var nan = new CacheState("Exact", 2, 2);
        nan.Properties["views"] = "2";
        nan.Properties["maxKeyNorm"] = "1";
        nan.Blobs.Add(CacheBlob.FromInt32s("labels", [0, 1]));
        nan.Blobs.Add(CacheBlob.FromBytes("keys", System.Runtime.InteropServices.MemoryMarshal.AsBytes<float>([1f, 0f, float.NaN, 1f]).ToArray()));
        CacheFile.Save(path, Header(), new ScriptedPersistentMemory("Exact", 2, Classes, () => nan), TestContext.Current.CancellationToken);
        LoadFails(File.ReadAllBytes(path), CacheFileProblem.Inconsistent, "Key 1 has a non-finite value");
    }

    [Fact]
    public void FailedSavesLeaveThePreviousFileByteIdentical()
    {
        using var memory = _exact.Create(Dimension, Classes);
        var (keys, labels) = UnitKeys(seed: 13, n: 50, Dimension, Classes);
        Add(memory, keys, labels, 0, 50);

        // A header that fails validation: nothing is written.
        Assert.Throws<ArgumentException>(() => Save(_path, Header() with { Theta = -1 }, memory));
        Assert.Throws<ArgumentException>(() => Save(_path, Header() with { Model = new CacheModelId("") }, memory));
        Assert.Throws<ArgumentException>(() => Save(_path, Header() with { Dimension = Dimension + 1 }, memory));

        // A failure in the middle of writing the payload.
        var failing = new ScriptedPersistentMemory("Exact", Dimension, Classes, () =>
        {
            var state = new CacheState("Exact", Dimension, 1000);
            state.Blobs.Add(CacheBlob.FromPieces("keys", 1 << 20, FailAfterOnePiece));
            return state;
        });
        var e = Assert.Throws<IOException>(() => Save(_path, Header(), failing));
        Assert.Contains("simulated", e.Message, StringComparison.Ordinal);

        // A cancelled save.
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        Assert.ThrowsAny<OperationCanceledException>(() => CacheFile.Save(_path, Header(), memory, cancelled.Token));

        Assert.Equal(_bytes, File.ReadAllBytes(_path));
        Assert.Equal(["good.scache"], Directory.GetFiles(_folder.Path).Select(Path.GetFileName));

        static IEnumerable<ReadOnlyMemory<byte>> FailAfterOnePiece()
        {
            yield return new byte[4096];
            throw new IOException("disk full (simulated)");
        }
    }

    [Fact]
    public void AMemoryWithoutPersistenceCannotBeSaved()
    {
        using var memory = new RandomProjectionNaiveMemoryFactory().Create(4, 2);
        Assert.Throws<NotSupportedException>(() => Save(_folder.File("naive.scache"), Header(), memory));
        Assert.False(File.Exists(_folder.File("naive.scache")));
    }

    /// <summary>Length of the last record (the trailer): 5 framing bytes + its content.</summary>
    private static int TrailerLength(byte[] file)
    {
        // Walk the records from the signature.
        var position = 8;
        var last = 0;
        while (position < file.Length)
        {
            Assert.Equal(0xC6, file[position]);
            last = 5 + (int)BinaryPrimitives.ReadUInt32BigEndian(file.AsSpan(position + 1, 4));
            position += last;
        }

        Assert.Equal(file.Length, position);
        return last;
    }
}
