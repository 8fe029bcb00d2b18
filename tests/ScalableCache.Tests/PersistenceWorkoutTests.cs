using ScalableCache.Core;
using ScalableCache.Core.Persistence;
using ScalableCache.Exact;
using ScalableCache.Hnsw;
using ScalableCache.RandomProjection;
using Xunit;
using static ScalableCache.Tests.PersistenceTestSupport;

namespace ScalableCache.Tests;

/// <summary>Per provider: build from random unit keys, save, reload, identical answers.</summary>
public sealed class PersistenceWorkoutTests
{
    private static readonly double[] Thetas = [1, 10, 50];

    [Theory]
    [InlineData(ExactStorageType.Float32)]
    [InlineData(ExactStorageType.Float16)]
    public void ExactReloadsWithBitIdenticalAnswers(ExactStorageType storage)
    {
        const int d = 24, classes = 5;
        var (keys, labels) = UnitKeys(seed: 1, n: 437, d, classes);
        var (queries, _) = UnitKeys(seed: 2, n: 33, d, classes);
        var factory = new ExactCacheMemoryFactory(new ExactCacheOptions { KeyBlockSize = 64, QueryBlockSize = 16, StorageType = storage });
        using var folder = new PersistenceTempFolder();
        var path = folder.File("exact.scache");
        using var original = factory.Create(d, classes);
        Add(original, keys, labels, 0, 100); // storage chunks of 100, 100 (37 used, then filled) and 137 rows
        Add(original, keys, labels, 100, 37);
        Add(original, keys, labels, 137, 300);

        var written = Save(path, Header(), original);
        Assert.Equal(("Exact", d, 437L, classes), (written.Provider, written.Dimension, written.Count, written.ClassCount));

        var (header, memory) = Load(path, [factory]);
        using var restored = memory;
        Assert.Equal(written, header with { Layers = written.Layers, Metadata = written.Metadata });
        Assert.Equal(written.Layers, header.Layers);
        Assert.Equal(written.Metadata, header.Metadata);
        Assert.Equal(("Exact", d, 437L, classes), (restored.Provider, restored.Dimension, restored.Count, restored.ClassCount));
        Assert.Equal(LogMass(original, queries, Thetas), LogMass(restored, queries, Thetas));

        // The restored memory keeps working.
        Add(restored, keys, labels, 0, 10);
        Assert.Equal(447, restored.Count);
    }

    [Fact]
    public void HnswReloadsItsGraphWithoutRebuildingAndAnswersIdentically()
    {
        const int d = 16, classes = 4;
        var (keys, labels) = UnitKeys(seed: 3, n: 600, d, classes);
        var (queries, _) = UnitKeys(seed: 4, n: 20, d, classes);
        var factory = new HnswCacheMemoryFactory(new HnswCacheOptions { TopK = 25, Threads = 2 });
        using var folder = new PersistenceTempFolder();
        var path = folder.File("hnsw.scache");
        using var original = factory.CreateHnsw(d, classes);
        Add(original, keys, labels, 0, 600);

        Save(path, Header(), original);
        var (header, memory) = Load(path, [factory, new ExactCacheMemoryFactory(new ExactCacheOptions())]);
        using var restored = Assert.IsAssignableFrom<IHnswCacheMemory>(memory);
        Assert.Equal("Hnsw", header.Provider);
        Assert.Equal(600, restored.Count);
        Assert.Equal(LogMass(original, queries, Thetas), LogMass(restored, queries, Thetas));

        // Loaded, not rebuilt: the native index serialises to the very bytes that were saved (a multi-threaded rebuild
        // would link the graph differently).
        Assert.Equal(original.SaveGraph().Graph, restored.SaveGraph().Graph);
    }

    [Fact]
    public void RandomProjectionOverExactReloadsItsMatrixAndInnerStore()
    {
        const int d = 32, classes = 3;
        var (keys, labels) = UnitKeys(seed: 5, n: 250, d, classes);
        var (queries, _) = UnitKeys(seed: 6, n: 17, d, classes);
        var exact = new ExactCacheMemoryFactory(new ExactCacheOptions { KeyBlockSize = 50 });
        var factory = new RandomProjectionCacheMemoryFactory(
            new RandomProjectionCacheOptions { Inner = "Exact", OutputDimension = 8, Kind = RandomProjectionKind.Achlioptas, Seed = 77, Renormalize = false },
            [exact]);
        using var folder = new PersistenceTempFolder();
        var path = folder.File("rp.scache");
        using var original = factory.CreateProjected(d, classes);
        Add(original, keys, labels, 0, 250);

        Save(path, Header(), original);
        var (header, memory) = Load(path, [exact, factory]);
        using var restored = Assert.IsAssignableFrom<IRandomProjectionCacheMemory>(memory);
        Assert.Equal(("RandomProjection", d, 250L), (header.Provider, header.Dimension, header.Count));
        Assert.Equal(original.Projection.Definition, restored.Projection.Definition);
        Assert.Equal(original.Projection.ExportMatrix(), restored.Projection.ExportMatrix());
        Assert.False(restored.Renormalize);
        Assert.Equal(("Exact", 8, 250L), (restored.Inner.Provider, restored.Inner.Dimension, restored.Inner.Count));

        // The inner stores answer bit-identically for the same projected queries.
        float[] projected;
        using (var scope = TorchSharp.torch.NewDisposeScope())
        {
            projected = original.Projection.Apply(TorchSharp.torch.tensor(queries, [17, d])).data<float>().ToArray();
        }

        Assert.Equal(LogMass(original.Inner, projected, Thetas), LogMass(restored.Inner, projected, Thetas));

        // End to end, up to float32 rounding: the projection is a BLAS matrix multiply, whose rounding can depend on where
        // libtorch finds the (identical) matrix in memory.
        var expected = LogMass(original, queries, Thetas);
        var actual = LogMass(restored, queries, Thetas);
        for (var i = 0; i < expected.Length; i++)
        {
            Assert.Equal(expected[i], actual[i], 1e-5 * Math.Max(1, Math.Abs(expected[i])));
        }

        // The inner store's provider must be registered too.
        var e = Assert.Throws<CacheFileException>(() => Load(path, [factory]));
        Assert.Equal(CacheFileProblem.UnknownProvider, e.Problem);
        Assert.Contains("'Exact'", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void EmptyMemoryRoundTrips()
    {
        var factory = new ExactCacheMemoryFactory(new ExactCacheOptions());
        using var folder = new PersistenceTempFolder();
        var path = folder.File("empty.scache");
        using var original = factory.Create(6, 2);
        Save(path, Header(), original);
        var (header, memory) = Load(path, [factory]);
        using var restored = memory;
        Assert.Equal((0L, 6, 2), (header.Count, restored.Dimension, restored.ClassCount));
        Assert.Equal(0, restored.Count);
    }

    [Fact]
    public void ReadHeaderReturnsTheStoredFieldsWithoutLoading()
    {
        var factory = new ExactCacheMemoryFactory(new ExactCacheOptions());
        using var folder = new PersistenceTempFolder();
        var path = folder.File("header.scache");
        using var original = factory.Create(4, 3);
        Add(original, [1, 0, 0, 0, 0, 1, 0, 0], [2, 1], 0, 2);
        var created = new DateTime(2024, 5, 6, 7, 8, 9, DateTimeKind.Utc).AddTicks(1230);
        Save(path, Header() with { CreatedUtc = created }, original);

        var header = CacheFile.ReadHeader(path);
        Assert.Equal(CacheFile.FormatVersion, header.FormatVersion);
        Assert.Equal(CacheFile.FormatVersion, header.MinimumReaderVersion);
        Assert.Equal(("Exact", 4, 2L, 3), (header.Provider, header.Dimension, header.Count, header.ClassCount));
        Assert.Equal(new CacheModelId("resnet20", new string('a', 64), "resnet20.safetensors"), header.Model);
        Assert.Equal(["layer3.2", "avgpool"], header.Layers);
        Assert.True(header.Flip);
        Assert.Equal("test normalisation", header.Normalization);
        Assert.Equal(40, header.Theta);
        Assert.Equal(0.3, header.Lambda);
        Assert.Equal(created, header.CreatedUtc);
        Assert.Equal(DateTimeKind.Utc, header.CreatedUtc.Kind);
        Assert.Equal("test", header.Metadata["purpose"]);
    }

    [Fact]
    public void RestoringIntoAnotherProvidersFactoryFailsNamingBoth()
    {
        var exact = new ExactCacheMemoryFactory(new ExactCacheOptions());
        var hnsw = new HnswCacheMemoryFactory(new HnswCacheOptions());
        using var memory = hnsw.CreateHnsw(4, 2);
        Add(memory, [1, 0, 0, 0, 0, 1, 0, 0], [0, 1], 0, 2);
        var state = ((IPersistentCacheMemory)memory).ExportState();

        var e = Assert.Throws<ArgumentException>(() => exact.Restore(state, new CacheRestoreContext(2, [exact, hnsw])));
        Assert.Contains("'Hnsw'", e.Message, StringComparison.Ordinal);
        Assert.Contains("'Exact'", e.Message, StringComparison.Ordinal);

        // Through the context, the state's own provider restores it.
        using var restored = new CacheRestoreContext(2, [exact, hnsw]).Restore(state);
        Assert.Equal(("Hnsw", 2L), (restored.Provider, restored.Count));
    }
}

/// <summary>The file layer with blobs larger than a chunk, read in and out of order, and nested states.</summary>
public sealed class PersistenceStreamingTests
{
    private const int Large = (64 << 20) + 12345; // a full 64 MiB chunk and a partial one

    private static byte Pattern(long i, int salt) => (byte)((i % 251) ^ salt);

    private static CacheBlob PatternBlob(string name, long length, int salt) => CacheBlob.FromPieces(name, length, () => Pieces(length, salt));

    private static IEnumerable<ReadOnlyMemory<byte>> Pieces(long length, int salt)
    {
        // Odd-sized pieces, so chunk boundaries fall inside them.
        for (long start = 0; start < length;)
        {
            var piece = new byte[Math.Min(3_000_017, length - start)];
            for (var i = 0; i < piece.Length; i++)
            {
                piece[i] = Pattern(start + i, salt);
            }

            yield return piece;
            start += piece.Length;
        }
    }

    private static void AssertPattern(Stream stream, long length, int salt)
    {
        var buffer = new byte[1 << 20];
        long position = 0;
        int read;
        while ((read = stream.Read(buffer)) > 0)
        {
            for (var i = 0; i < read; i++)
            {
                if (buffer[i] != Pattern(position + i, salt))
                {
                    Assert.Fail($"byte {position + i} differs");
                }
            }

            position += read;
        }

        Assert.Equal(length, position);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void LargeBlobsStreamBackInOrderOrOutOfOrder(bool outOfOrder)
    {
        using var folder = new PersistenceTempFolder();
        var path = folder.File("large.scache");
        var child = new CacheState("Inner", 2, 5) { Properties = { ["x"] = "y" } };
        child.Blobs.Add(CacheBlob.FromBytes("small", [1, 2, 3]));
        var memory = new ScriptedPersistentMemory("Outer", 3, 2, () =>
        {
            var state = new CacheState("Outer", 3, 5);
            state.Blobs.Add(PatternBlob("a", Large, 1));
            state.Blobs.Add(CacheBlob.FromBytes("empty", []));
            state.Blobs.Add(PatternBlob("b", 1000, 2));
            state.Children.Add(child);
            return state;
        }, count: 5);
        Save(path, Header(), memory);
        Assert.InRange(new FileInfo(path).Length, 1000, Large / 10); // the pattern compresses

        var inner = new ScriptedPersistentFactory("Inner", (state, _) =>
        {
            Assert.Equal(("Inner", 2, 5L, "y"), (state.Provider, state.Dimension, state.Count, state.Properties["x"]));
            Assert.Equal([1, 2, 3], state.Blob("small").ReadAllBytes());
            return new ScriptedPersistentMemory("Inner", 2, 2, () => throw new NotSupportedException(), count: 5);
        });
        var outer = new ScriptedPersistentFactory("Outer", (state, context) =>
        {
            Assert.Equal(["a", "empty", "b"], state.Blobs.Select(b => b.Name));
            if (outOfOrder)
            {
                // The child first, then b, then a: the skipped blobs are held until read.
                using (context.Restore(state.Children[0]))
                {
                }

                using (var b = state.Blob("b").OpenRead())
                {
                    AssertPattern(b, 1000, 2);
                }

                using (var a = state.Blob("a").OpenRead())
                {
                    AssertPattern(a, Large, 1);
                }
            }
            else
            {
                using (var a = state.Blob("a").OpenRead())
                {
                    AssertPattern(a, Large, 1);
                }

                Assert.Empty(state.Blob("empty").ReadAllBytes());
                using (var b = state.Blob("b").OpenRead())
                {
                    AssertPattern(b, 1000, 2);
                }

                using (context.Restore(state.Children[0]))
                {
                }
            }

            Assert.Throws<InvalidOperationException>(() => state.Blob("b").OpenRead());
            return new ScriptedPersistentMemory("Outer", 3, 2, () => throw new NotSupportedException(), count: 5);
        });

        var (header, restored) = Load(path, [inner, outer]);
        using (restored)
        {
            Assert.Equal(("Outer", 5L), (header.Provider, restored.Count));
        }
    }

    [Fact]
    public void APayloadAtLz4sBestRatioStillLoads()
    {
        // Zeros compress about 255-fold, LZ4's limit: the reader's bound (payload ≤ 256 × file length) must admit them.
        using var folder = new PersistenceTempFolder();
        var path = folder.File("zeros.scache");
        var zeros = new byte[1 << 20];
        var memory = new ScriptedPersistentMemory("Zeros", 3, 2, () =>
        {
            var state = new CacheState("Zeros", 3, 0);
            state.Blobs.Add(CacheBlob.FromPieces("a", Large, () => Enumerable.Range(0, (Large / zeros.Length) + 1)
                .Select(i => (ReadOnlyMemory<byte>)zeros.AsMemory(0, (int)Math.Min(zeros.Length, Large - ((long)i * zeros.Length))))));
            return state;
        });
        Save(path, Header(), memory);
        Assert.InRange((double)Large / new FileInfo(path).Length, 250, 256);
        var factory = new ScriptedPersistentFactory("Zeros", (state, _) =>
        {
            var bytes = state.Blob("a").ReadAllBytes();
            Assert.Equal(Large, bytes.Length);
            Assert.False(bytes.AsSpan().ContainsAnyExcept((byte)0));
            return new ScriptedPersistentMemory("Zeros", 3, 2, () => throw new NotSupportedException());
        });
        using (Load(path, [factory]).Memory)
        {
        }
    }

    [Fact]
    public void UnreadBlobsAreStillVerified()
    {
        using var folder = new PersistenceTempFolder();
        var path = folder.File("unread.scache");
        var memory = new ScriptedPersistentMemory("Lazy", 3, 2, () =>
        {
            var state = new CacheState("Lazy", 3, 0);
            state.Blobs.Add(PatternBlob("a", 500_000, 3));
            return state;
        });
        Save(path, Header(), memory);
        var lazy = new ScriptedPersistentFactory("Lazy", (_, _) => new ScriptedPersistentMemory("Lazy", 3, 2, () => throw new NotSupportedException()));
        using (Load(path, [lazy]).Memory)
        {
        }

        var bytes = File.ReadAllBytes(path);
        bytes[bytes.Length / 2] ^= 1;
        File.WriteAllBytes(path, bytes);
        Assert.Equal(CacheFileProblem.ChecksumMismatch, Assert.Throws<CacheFileException>(() => Load(path, [lazy])).Problem);
    }
}
