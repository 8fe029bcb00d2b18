using ScalableCache.Core.Evaluation;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>
/// Similarity matrices in files (<see cref="SimilarityFile"/>): written column block by column block in panels, read tile by tile,
/// they must hold the float16 values given, and the layer search scored from them must be the search scored from the same matrices
/// in memory, bit for bit.
/// </summary>
public sealed class SimilarityFileTests : IDisposable
{
    private readonly PersistenceTempFolder _folder = new();

    /// <summary>Writes <paramref name="matrix"/> in column blocks of <paramref name="block"/> (the last one shorter).</summary>
    private SimilarityFile Write(Tensor matrix, int block, string name)
    {
        using var writer = new SimilarityFile.Writer(_folder.File(name), matrix.shape[0], matrix.shape[1]);
        for (long start = 0; start < matrix.shape[1]; start += block)
        {
            using var scope = NewDisposeScope();
            writer.Append(matrix.narrow(1, start, Math.Min(block, matrix.shape[1] - start)).to_type(ScalarType.Float32));
        }

        return writer.Complete();
    }

    [Fact]
    public void AFileHoldsTheMatrixAndEveryTileOfIt()
    {
        using var scope = NewDisposeScope();
        var (similarities, _, _, _) = LayerCombinationSearchTests.FusedCase(seed: 3, q: 37, signal: 1.5);
        var matrix = similarities[1]; // [37, 9003] float16: panels of 4096, 4096 and 811 keys
        foreach (var block in new[] { 1000, 4096, 9003, 333 })
        {
            using var file = Write(matrix, block, $"m{block}.f16");
            Assert.Equal(37L * 9003 * sizeof(ushort), new FileInfo(file.Path).Length);
            Assert.Equal((37L, 9003L), (file.Rows, file.Columns));
            Assert.True(file.ToTensor().ne(matrix).sum().item<long>() == 0, $"blocks of {block}: the file's values are the matrix's");
        }

        using var tiles = Write(matrix, 700, "tiles.f16");
        var held = SimilarityMatrix.InMemory(matrix);
        foreach (var (start, len, offset, count) in new[] { (0L, 37, 0L, 4096), (5L, 20, 4096L, 4096), (36L, 1, 8192L, 811), (3L, 9, 4100L, 17), (0L, 37, 8999L, 4) })
        {
            var expected = matrix.narrow(0, start, len).narrow(1, offset, count).to_type(ScalarType.Float32).contiguous().data<float>().ToArray();
            Assert.True(expected.AsSpan().SequenceEqual(Read(tiles, start, len, offset, count)), $"file tile {start}+{len} × {offset}+{count}");
            Assert.True(expected.AsSpan().SequenceEqual(Read(held, start, len, offset, count)), $"memory tile {start}+{len} × {offset}+{count}");
        }

        Assert.Throws<ArgumentOutOfRangeException>(() => tiles.Tile(0, 1, 4000, 200)); // crosses the first panel's end
        Assert.Throws<ArgumentOutOfRangeException>(() => tiles.Tile(30, 8, 0, 10)); // past the last row
        var path = tiles.Path;
        tiles.Dispose();
        Assert.False(File.Exists(path), "disposing the matrix deletes its file");
        Assert.Throws<ObjectDisposedException>(() => tiles.Tile(0, 1, 0, 1));
    }

    [Fact]
    public void PanelsLeftForTheCallerToWriteMakeTheSameFileAndAFullPanelMustBeWrittenFirst()
    {
        using var scope = NewDisposeScope();
        var (similarities, _, _, _) = LayerCombinationSearchTests.FusedCase(seed: 5, q: 11, signal: 1.5);
        var matrix = similarities[0]; // [11, 9003]: panels of 4096, 4096 and 811 keys
        foreach (var block in new[] { 512, 4096, 1000 }) // panel ends at block ends (512, 4096) or inside blocks (1000)
        {
            using var plain = Write(matrix, block, $"plain{block}.f16");
            var path = _folder.File($"deferred{block}.f16");
            using var writer = new SimilarityFile.Writer(path, matrix.shape[0], matrix.shape[1]);
            var deferred = 0;
            for (long start = 0; start < matrix.shape[1]; start += block)
            {
                using var inner = NewDisposeScope();
                var width = Math.Min(block, matrix.shape[1] - start);
                if (writer.AppendDeferringWrite(matrix.narrow(1, start, width).to_type(ScalarType.Float32)))
                {
                    deferred++;
                    if (start + width < matrix.shape[1])
                    {
                        Assert.Throws<ArgumentException>(() => writer.Append(zeros(3, 1))); // shapes are still checked first
                    }

                    writer.WritePanel();
                    Assert.Throws<InvalidOperationException>(() => writer.WritePanel()); // nothing full is waiting any more
                }
            }

            Assert.Equal(block == 1000 ? 1 : 3, deferred); // blocks of 1000: the first two panels end inside a block, so Append-like writes
            using var file = writer.Complete();
            Assert.True(File.ReadAllBytes(file.Path).AsSpan().SequenceEqual(File.ReadAllBytes(plain.Path)), $"blocks of {block}: the same bytes as Append writes");
        }
    }

    [Fact]
    public void TheWriterRefusesWrongShapesAndAnIncompleteMatrixAndLeavesNoFileWhenAbandoned()
    {
        using var scope = NewDisposeScope();
        var path = _folder.File("w.f16");
        using (var writer = new SimilarityFile.Writer(path, 4, 10))
        {
            Assert.Throws<ArgumentException>(() => writer.Append(zeros(3, 2)));
            writer.Append(zeros(4, 6));
            Assert.Throws<ArgumentException>(() => writer.Append(zeros(4, 5))); // 11 columns of 10
            Assert.Throws<InvalidOperationException>(() => writer.Complete()); // 6 of 10
        }

        Assert.False(File.Exists(path), "an abandoned writer deletes its file");
        Assert.Throws<IOException>(() =>
        {
            File.WriteAllBytes(path, [1]);
            using var again = new SimilarityFile.Writer(path, 4, 10); // an existing file is never overwritten
        });
    }

    [Fact]
    public void TheSearchScoredFromFilesIsTheSearchScoredFromMemoryBitForBit()
    {
        using var scope = NewDisposeScope();
        const int classes = 10, q = 300;
        double[] thetas = [10, 30, 50, 70, 90];
        double[] lambdas = [0.2, 0.5, 0.8, 1.0];
        var (similarities, weights, trainY, valY) = LayerCombinationSearchTests.FusedCase(seed: 8, q, signal: 0.3);
        var gen = manual_seed(9);
        var pNet = (randn(q, classes, generator: gen) + (nn.functional.one_hot(valY, classes).to_type(ScalarType.Float32) * 1.2)).softmax(1);
        var files = similarities.Select((m, i) => Write(m, 96 + (i * 37), $"s{i}.f16")).ToArray();
        try
        {
            SimilarityMatrix[] held = [.. similarities.Select(SimilarityMatrix.InMemory)];
            foreach (var w in new[] { null, weights })
            {
                foreach (var (start, len) in new[] { (0L, q), (37L, 50) })
                {
                    var fromFiles = LayerCombinationSearch.LogMass(files, w, trainY, classes, thetas, start, len, fused: true);
                    var fromMemory = LayerCombinationSearch.LogMass(held, w, trainY, classes, thetas, start, len, fused: true);
                    Assert.True(fromFiles.eq(fromMemory).all().item<bool>(), $"log-mass, rows {start}…{start + len}, weighted: {w is not null}");
                }

                var a = LayerCombinationSearch.Errors(files, trainY, pNet, valY, classes, thetas, lambdas, 128, w, fused: true);
                var b = LayerCombinationSearch.Errors(similarities, trainY, pNet, valY, classes, thetas, lambdas, 128, w, fused: true);
                Assert.Equal(b.Cast<long>(), a.Cast<long>());
            }

            var searched = LayerCombinationSearch.Run(["a", "b"], files, trainY, pNet, valY, classes, thetas, lambdas, maxLayers: 2);
            var reference = LayerCombinationSearch.Run(["a", "b"], similarities, trainY, pNet, valY, classes, thetas, lambdas, maxLayers: 2);
            Assert.Equal(reference.Evaluated.Select(s => (string.Join(",", s.Layers), s.Error, s.Theta, s.Lambda)),
                searched.Evaluated.Select(s => (string.Join(",", s.Layers), s.Error, s.Theta, s.Lambda)));
            Assert.Equal(reference.Layers, searched.Layers);

            // The tensor reference path needs the matrices in memory and says so.
            Assert.Contains("in memory", Assert.Throws<ArgumentException>(
                () => LayerCombinationSearch.LogMass(files, null, trainY, classes, thetas, 0, 10, fused: false)).Message, StringComparison.Ordinal);
        }
        finally
        {
            foreach (var f in files)
            {
                f.Dispose();
            }
        }
    }

    [Fact]
    public void AFloat32FileHoldsTheExactValuesAndIsScoredAsTheSameMatricesInMemory()
    {
        using var scope = NewDisposeScope();
        const int classes = 10, q = 70;
        double[] thetas = [10, 50, 90];
        var (half, weights, trainY, _) = LayerCombinationSearchTests.FusedCase(seed: 5, q, signal: 0.5);
        var gen = manual_seed(6);
        // Exact values: the float16 matrices plus noise below a float16 step, so that a float16 file could not hold them.
        Tensor[] exact = [.. half.Select(m => m.to_type(ScalarType.Float32) + (randn(m.shape, generator: gen) * 1e-4f))];
        var files = exact.Select((m, i) =>
        {
            using var writer = new SimilarityFile.Writer(_folder.File($"e{i}.f32"), m.shape[0], m.shape[1], ScalarType.Float32);
            for (long start = 0; start < m.shape[1]; start += 500 + i)
            {
                writer.Append(m.narrow(1, start, Math.Min(500 + i, m.shape[1] - start)));
            }

            return writer.Complete();
        }).ToArray();
        try
        {
            Assert.All(files, f => Assert.Equal(ScalarType.Float32, f.ElementType));
            Assert.Equal(q * 9003L * sizeof(float), new FileInfo(files[0].Path).Length);
            Assert.True(files[0].ToTensor().eq(exact[0]).all().item<bool>(), "the file's float32 values are the matrix's, bit for bit");
            SimilarityMatrix[] held = [.. exact.Select(SimilarityMatrix.InMemory)];
            foreach (var w in new[] { null, weights })
            {
                var fromFiles = LayerCombinationSearch.LogMass(files, w, trainY, classes, thetas, 3, 60, fused: true);
                var fromMemory = LayerCombinationSearch.LogMass(held, w, trainY, classes, thetas, 3, 60, fused: true);
                Assert.True(fromFiles.eq(fromMemory).all().item<bool>(), $"files and memory, weighted: {w is not null}");

                // The tensor path over the same float32 values: the same combined similarities, so the log-mass within a few
                // float32 steps of θ + ln N (as for float16 matrices), and far from the float16 matrices' where the noise matters.
                var reference = LayerCombinationSearch.LogMass(held, w, trainY, classes, thetas, 3, 60, fused: false);
                var finite = reference.isfinite();
                Assert.True(finite.eq(fromFiles.isfinite()).all().item<bool>(), "the same classes without keys");
                var scale = tensor(thetas.Select(t => 4 * Math.Pow(2, -23) * (t + Math.Log(trainY.shape[0]))).ToArray()).view(-1, 1, 1);
                var share = where(finite, (fromFiles.to_type(ScalarType.Float64) - reference.to_type(ScalarType.Float64)).abs() / scale, 0.0).max().item<double>();
                Assert.True(share <= 1, $"largest |ΔL| is {4 * share:F2} float32 steps of θ + ln N (weighted: {w is not null})");
                var fromHalf = LayerCombinationSearch.LogMass(half, w, trainY, classes, thetas, 3, 60, fused: true);
                var lost = where(finite, (fromHalf.to_type(ScalarType.Float64) - fromFiles.to_type(ScalarType.Float64)).abs() / scale, 0.0).max().item<double>();
                Assert.True(lost > 10, $"the float16 matrices' log-mass is only {4 * lost:F2} float32 steps away: the noise did not matter");
            }
        }
        finally
        {
            foreach (var f in files)
            {
                f.Dispose();
            }
        }
    }

    public void Dispose() => _folder.Dispose();

    /// <summary>A tile's values (float16, exactly as float32), query by query.</summary>
    private static float[] Read(SimilarityMatrix matrix, long start, int len, long offset, int count)
    {
        var (address, stride) = matrix.Tile(start, len, offset, count);
        var bits = new short[count];
        var result = new float[len * count];
        for (var q = 0; q < len; q++)
        {
            System.Runtime.InteropServices.Marshal.Copy(address + (nint)(q * stride * sizeof(ushort)), bits, 0, count);
            for (var k = 0; k < count; k++)
            {
                result[(q * count) + k] = (float)BitConverter.Int16BitsToHalf(bits[k]);
            }
        }

        return result;
    }
}
