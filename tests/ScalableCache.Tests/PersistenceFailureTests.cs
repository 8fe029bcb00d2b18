using System.Buffers.Binary;
using System.Security.Cryptography;
using ScalableCache.Core;
using ScalableCache.Core.Models;
using ScalableCache.Core.Persistence;
using ScalableCache.Exact;
using ScalableCache.Hnsw;
using Xunit;
using static ScalableCache.Tests.PersistenceTestSupport;

namespace ScalableCache.Tests;

/// <summary>
/// Damaged, foreign, future and forged files fail with a <see cref="CacheFileException"/> naming the problem; failed saves
/// change nothing, and the next save removes what a killed one left. Forged files have their digests and checksum
/// recomputed after a change (what a buggy writer or a forger produces, see <see cref="CacheFileFrames"/>): they fail naming
/// the field, before anything is allocated for it or handed to native code.
/// </summary>
public sealed class PersistenceFailureTests : IDisposable
{
    private const int Dimension = 8;
    private const int Classes = 3;
    private readonly PersistenceTempFolder _folder = new();
    private readonly ExactCacheMemoryFactory _exact = new(new ExactCacheOptions());
    private readonly HnswCacheMemoryFactory _hnsw = new(new HnswCacheOptions { Connectivity = 4, Threads = 1 });
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
    public void TemporaryFilesLeftByKilledSavesAreDeletedByTheNextSaveOfTheSameFile()
    {
        // What a save killed mid-write leaves (".NAME.RANDOM.tmp", RANDOM 12 lower-case hex digits), and look-alikes.
        var old = DateTime.UtcNow.AddHours(-1);
        string Temp(string name, DateTime? written = null)
        {
            var path = _folder.File(name);
            File.WriteAllBytes(path, [1, 2, 3]);
            File.SetLastWriteTimeUtc(path, written ?? old);
            return path;
        }

        var stale = Temp(".good.scache.0123456789ab.tmp");
        var staleToo = Temp(".good.scache.ffffffffffff.tmp");
        var fresh = Temp(".good.scache.aaaaaaaaaaaa.tmp", DateTime.UtcNow); // a save may be writing it right now
        var held = Temp(".good.scache.bbbbbbbbbbbb.tmp");
        var lookAlikes = new[]
        {
            Temp(".other.scache.cccccccccccc.tmp"), Temp(".good.scache.0123456789AB.tmp"), Temp(".good.scache.0123456789a.tmp"),
            Temp(".good.scache.0123456789abc.tmp"), Temp("good.scache.0123456789ab.tmp"), Temp(".good.scache.0123456789ab.tmp.keep"),
            Temp(".good.scache.0123456789ab.tmpx"), Temp("..good.scache.0123456789ab.tmp"),
        };
        var target = Temp("elsewhere.bin");
        var link = _folder.File(".good.scache.dddddddddddd.tmp");
        File.CreateSymbolicLink(link, target);

        using var memory = _exact.Create(Dimension, Classes);
        using (new FileStream(held, FileMode.Open, FileAccess.ReadWrite, FileShare.None)) // a live writer holds its file
        {
            Save(_path, Header(), memory);
        }

        Assert.False(File.Exists(stale));
        Assert.False(File.Exists(staleToo));
        Assert.All(new[] { fresh, held, link, target }.Concat(lookAlikes), path => Assert.True(File.Exists(path), path));
        using (var loaded = Load(_path, [_exact]).Memory)
        {
            Assert.Equal(0, loaded.Count);
        }

        // Saving another file leaves this file's temporary files alone.
        var another = Temp(".good.scache.eeeeeeeeeeee.tmp");
        Save(_folder.File("other.scache"), Header(), memory);
        Assert.True(File.Exists(another));
        Assert.False(File.Exists(lookAlikes[0]));
    }

    [Fact]
    public void AMemoryWithoutPersistenceCannotBeSaved()
    {
        using var memory = new RandomProjectionNaiveMemoryFactory().Create(4, 2);
        Assert.Throws<NotSupportedException>(() => Save(_folder.File("naive.scache"), Header(), memory));
        Assert.False(File.Exists(_folder.File("naive.scache")));
    }

    [Fact]
    public void ForgedHeaderFieldsAreRejectedNamingTheField()
    {
        var original = File.ReadAllBytes(WithRecipe(_exact.Create(Dimension, Classes)));
        (string Field, Action<object?[]> Change, string Phrase)[] cases =
        [
            ("θ NaN", h => h[13] = double.NaN, "θ must be finite and positive (got NaN)"),
            ("θ ∞", h => h[13] = double.PositiveInfinity, "θ must be finite and positive"),
            ("θ 0", h => h[13] = 0.0, "θ must be finite and positive (got 0)"),
            ("θ −2", h => h[13] = -2.0, "θ must be finite and positive (got -2)"),
            ("λ 1.5", h => h[14] = 1.5, "λ must lie in [0, 1] (got 1.5)"),
            ("λ NaN", h => h[14] = double.NaN, "λ must lie in [0, 1] (got NaN)"),
            ("class count 2^31 − 1", h => h[6] = int.MaxValue, "class count 2147483647 is outside [1, 65536] (key 6)"),
            ("class count 0", h => h[6] = 0, "class count 0 is outside [1, 65536]"),
            ("dimension 2^31 − 1", h => h[4] = State(h)[1] = int.MaxValue, "dimension 2147483647 is outside [1, 1048576]"),
            ("count 2^31 − 1", h => h[5] = State(h)[2] = int.MaxValue, "count 2147483647 is outside"),
            ("header count only", h => h[5] = 1L, "describes 1 keys of dimension 8"),
            ("non-hex digest", h => h[8] = new string('g', 64), "checkpoint SHA-256 (key 8) 'gggg"),
            ("upper-case digest", h => h[8] = new string('A', 64), "not 64 lower-case hexadecimal digits"),
            ("short digest", h => h[8] = "abc", "checkpoint SHA-256 'abc' is not 64 hexadecimal digits"),
            ("checkpoint file with a folder", h => h[9] = "../../etc/passwd", "checkpoint file name '../../etc/passwd' is not a plain file name"),
            ("empty model name", h => h[7] = "", "model name is empty"),
            ("empty layer name", h => (h[10], h[19]) = (new object?[] { "layer3.2", "" }, null), "layer name is empty"),
            ("minimum reader version 0", h => h[2] = 0, "minimum reader version (key 2) 0"),
            ("metadata without a value", h => h[16] = new Dictionary<object, object?> { ["k"] = null }, "metadata (key 16) has no value for 'k'"),
            ("payload larger than the file can hold", h => h[17] = 1L << 50, "payload bytes (key 17)"),
            ("a blob longer than the payload", h => ((object?[])((object?[])State(h)[4]!)[1]!)[1] = 1L << 40, "invalid or repeated blob 'keys'"),
            ("recipe input of 2^31 − 1 rows", h => h[19] = Recipe(height: int.MaxValue), "input shape"),
            ("recipe layers not the header's", h => h[19] = Recipe(height: 32, layers: ["avgpool"]), "differ from its layers"),
        ];

        foreach (var (_, change, phrase) in cases)
        {
            var e = LoadFails(CacheFileFrames.Forge(original, f => f.ChangeHeader(change)), CacheFileProblem.Inconsistent, phrase);

            // The header alone (what a classifier reads before it loads a model or the payload) is refused too.
            Assert.Contains(phrase, Assert.Throws<CacheFileException>(() => CacheFile.ReadHeader(e.FilePath)).Message, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void ForgedExactPayloadIsRejectedNamingTheField()
    {
        var (keys, labels) = UnitKeys(seed: 21, n: 40, Dimension, Classes);
        var memory = _exact.Create(Dimension, Classes);
        Add(memory, keys, labels, 0, 40);
        var original = File.ReadAllBytes(WithRecipe(memory));
        LoadFails(CacheFileFrames.Forge(original, f => f.ChangeBlob(0, 4 * 7, 4, b => BinaryPrimitives.WriteInt32LittleEndian(b, Classes))),
            CacheFileProblem.Inconsistent, "Label 3 of key 7 is outside [0, 3)");
        LoadFails(CacheFileFrames.Forge(original, f => f.ChangeBlob(0, 4 * 9, 4, b => BinaryPrimitives.WriteInt32LittleEndian(b, -1))), CacheFileProblem.Inconsistent, "Label -1 of key 9");
        LoadFails(CacheFileFrames.Forge(original, f => f.ChangeBlob(1, 4 * ((5 * Dimension) + 2), 4, b => BinaryPrimitives.WriteSingleLittleEndian(b, float.NaN))),
            CacheFileProblem.Inconsistent, "Key 5 has a non-finite value");
        LoadFails(CacheFileFrames.Forge(original, f => f.ChangeHeader(h => Properties(h)["storage"] = "Float64")), CacheFileProblem.Inconsistent, "storage type 'Float64'");
    }

    [Fact]
    public void ForgedHnswGraphIsRejectedBeforeUSearchSeesIt()
    {
        var data = HnswTestData.Clustered(seed: 22, n: 60, Dimension, Classes, clusters: 4);
        var memory = _hnsw.CreateHnsw(Dimension, Classes);
        Add(memory, data.Keys, data.Labels, 0, data.Count);
        var original = File.ReadAllBytes(WithRecipe(memory));
        var graph = CacheFileFrames.Parse(original).Blob(1).Bytes;
        var levels = HnswTestData.GraphOffset(graph) + 40; // after the graph header's five u64
        var firstNode = levels + (2 * data.Count);
        byte[] Graph(long offset, CacheFileFrames.BytesChange change) => CacheFileFrames.Forge(original, f => f.ChangeBlob(1, offset, 4, change));

        // Node 0's first neighbour on level 0 (after its key u64, level i16 and neighbour count u32), one past the last slot:
        // USearch would follow it outside the graph (this was a SIGSEGV).
        LoadFails(Graph(firstNode + 14, b => BinaryPrimitives.WriteUInt32LittleEndian(b, (uint)data.Count)), CacheFileProblem.Inconsistent,
            $"node 0's neighbour 0 on level 0 is slot {data.Count}, not below its {data.Count} nodes", [_hnsw]);
        LoadFails(Graph(firstNode + 10, b => BinaryPrimitives.WriteUInt32LittleEndian(b, 1000)), CacheFileProblem.Inconsistent,
            "node 0 lists 1000 neighbours on level 0", [_hnsw]);
        LoadFails(Graph(levels, b => BinaryPrimitives.WriteInt16LittleEndian(b, 30)), CacheFileProblem.Inconsistent, "node 0 has level 30", [_hnsw]);
        LoadFails(Graph(8, b => BinaryPrimitives.WriteSingleLittleEndian(b, float.PositiveInfinity)), CacheFileProblem.Inconsistent,
            "the vector in slot 0 has a non-finite component", [_hnsw]);
        LoadFails(CacheFileFrames.Forge(original, f => f.ChangeBlob(0, 4 * 3, 4, b => BinaryPrimitives.WriteInt32LittleEndian(b, 7))), CacheFileProblem.Inconsistent,
            "Label 7 of key 3", [_hnsw]);
        LoadFails(CacheFileFrames.Forge(original, f => f.ChangeHeader(h => Properties(h)["scalarKind"] = "Int8")), CacheFileProblem.Inconsistent,
            "scalar kind 'Int8' is not its graph's (Float32)", [_hnsw]);
    }

    [Fact]
    public void TheWriterKeepsTheReadersLimits()
    {
        var path = _folder.File("limits.scache");
        var classes = new ScriptedPersistentMemory("Exact", 4, (1 << 16) + 1, () => new CacheState("Exact", 4, 0));
        Assert.Contains("class count 65537", Assert.Throws<NotSupportedException>(() => Save(path, Header(), classes)).Message, StringComparison.Ordinal);
        var wide = new ScriptedPersistentMemory("Wide", (1 << 20) + 1, 2, () => new CacheState("Wide", (1 << 20) + 1, 0));
        Assert.Contains("dimension 1048577", Assert.Throws<NotSupportedException>(() => Save(path, Header(), wide)).Message, StringComparison.Ordinal);
        var large = Header() with { Recipe = new KeyRecipe(Header().Layers, InputNormalization.ImageNet, new InputShape(3, 4096, 4096)) };
        using var memory = _exact.Create(4, 2);
        Assert.Contains("input shape", Assert.Throws<NotSupportedException>(() => Save(path, large, memory)).Message, StringComparison.Ordinal);
        Assert.False(File.Exists(path));
    }

    private static object?[] State(object?[] header) => (object?[])header[18]!;

    private static IDictionary<object, object?> Properties(object?[] header) => (IDictionary<object, object?>)State(header)[3]!;

    /// <summary>A key recipe as header key 19 stores it, over the test header's layers unless given.</summary>
    private static object?[] Recipe(int height, string[]? layers = null) =>
        [layers ?? ["layer3.2", "avgpool"], 0, new object?[] { 0.5f, 0.5f, 0.5f }, new object?[] { 0.25f, 0.25f, 0.25f }, 3, height, 32];

    /// <summary>Saves (and disposes) <paramref name="memory"/> with a key recipe in its header; returns the file.</summary>
    private string WithRecipe(ICacheMemory memory)
    {
        using (memory)
        {
            var path = _folder.File($"{memory.Provider}-{Guid.NewGuid():N}.scache");
            Save(path, Header() with { Recipe = new KeyRecipe(Header().Layers, InputNormalization.ImageNet, InputShape.Cifar) }, memory);
            return path;
        }
    }

    /// <summary>Length of the last record (the trailer): 5 framing bytes, its digest and its body.</summary>
    private static int TrailerLength(byte[] file) => 5 + 32 + CacheFileFrames.Parse(file).TrailerBody.Length;
}
