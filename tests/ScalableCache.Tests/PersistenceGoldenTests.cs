using System.Runtime.InteropServices;
using ScalableCache.Core.Persistence;
using ScalableCache.Exact;
using Xunit;
using static ScalableCache.Tests.PersistenceTestSupport;

namespace ScalableCache.Tests;

/// <summary>
/// Reads <c>Golden/exact-v1.scache</c>, a format-version-1 file committed once (12 keys × 4 dimensions, 3 classes, Exact
/// provider) and never regenerated: every later reader must read it field by field exactly as written.
/// </summary>
public sealed class PersistenceGoldenTests
{
    /// <summary>The golden keys, row-major [12, 4].</summary>
    internal static readonly float[] Keys =
    [
        1f, 0f, 0f, 0f,
        0f, 1f, 0f, 0f,
        0f, 0f, 1f, 0f,
        0f, 0f, 0f, 1f,
        0.6f, 0.8f, 0f, 0f,
        0f, 0.6f, 0.8f, 0f,
        0f, 0f, 0.6f, 0.8f,
        0.8f, 0f, 0f, 0.6f,
        0.5f, 0.5f, 0.5f, 0.5f,
        -0.5f, 0.5f, -0.5f, 0.5f,
        0f, -0.8f, 0f, 0.6f,
        -0.6f, 0f, 0.8f, 0f,
    ];

    /// <summary>The golden labels.</summary>
    internal static readonly long[] Labels = [0, 0, 1, 2, 1, 0, 2, 2, 1, 0, 1, 2];

    /// <summary>The golden header (as passed to <see cref="CacheFile.Save"/>).</summary>
    internal static CacheFileHeader GoldenHeader => new()
    {
        Model = new CacheModelId("resnet20", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "resnet20-12fca82f.th"),
        Layers = ["layer3.2", "avgpool"],
        Flip = true,
        Normalization = "input: (pixel/255 - mean) / std, ImageNet statistics; keys: per-layer L2, concatenated, L2",
        Theta = 40,
        Lambda = 0.3,
        CreatedUtc = new DateTime(2025, 1, 2, 3, 4, 5, DateTimeKind.Utc).AddTicks(6789010),
        Metadata = new Dictionary<string, string> { ["purpose"] = "golden format-version-1 test file" },
    };

    private static string GoldenPath => Path.Combine(AppContext.BaseDirectory, "Golden", "exact-v1.scache");

    [Fact]
    public void GoldenHeaderReadsFieldByField()
    {
        var header = CacheFile.ReadHeader(GoldenPath);
        Assert.Equal(1, header.FormatVersion);
        Assert.Equal(1, header.MinimumReaderVersion);
        Assert.Equal("Exact", header.Provider);
        Assert.Equal(4, header.Dimension);
        Assert.Equal(12, header.Count);
        Assert.Equal(3, header.ClassCount);
        Assert.Equal("resnet20", header.Model.Name);
        Assert.Equal("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", header.Model.CheckpointSha256);
        Assert.Equal("resnet20-12fca82f.th", header.Model.CheckpointFile);
        Assert.Equal(["layer3.2", "avgpool"], header.Layers);
        Assert.True(header.Flip);
        Assert.Equal("input: (pixel/255 - mean) / std, ImageNet statistics; keys: per-layer L2, concatenated, L2", header.Normalization);
        Assert.Equal(40.0, header.Theta);
        Assert.Equal(0.3, header.Lambda);
        Assert.Equal(new DateTime(2025, 1, 2, 3, 4, 5, DateTimeKind.Utc).AddTicks(6789010), header.CreatedUtc);
        Assert.Equal(DateTimeKind.Utc, header.CreatedUtc.Kind);
        Assert.Equal(new Dictionary<string, string> { ["purpose"] = "golden format-version-1 test file" }, header.Metadata);
    }

    [Fact]
    public void GoldenPayloadRestoresTheExactKeysLabelsAndAnswers()
    {
        var factory = new ExactCacheMemoryFactory(new ExactCacheOptions());
        var (header, memory) = Load(GoldenPath, [factory]);
        using var restored = Assert.IsType<ExactCacheMemory>(memory);
        Assert.Equal(("Exact", 4, 12L, 3), (restored.Provider, restored.Dimension, restored.Count, restored.ClassCount));
        Assert.Equal(header.Count, restored.Count);

        // The stored state, field by field.
        var state = restored.ExportState();
        Assert.Equal(("Exact", 4, 12L), (state.Provider, state.Dimension, state.Count));
        Assert.Equal("12", state.Properties["views"]);
        Assert.Equal("Float32", state.Properties["storage"]);
        Assert.Equal(1.0, state.DoubleProperty("maxKeyNorm"), 1e-6);
        Assert.Equal(["labels", "keys"], state.Blobs.Select(b => b.Name));
        Assert.Equal(Labels.Select(l => (int)l), state.Blob("labels").ReadInt32s());
        Assert.Equal(Keys, MemoryMarshal.Cast<byte, float>(state.Blob("keys").ReadAllBytes()).ToArray());
        Assert.Empty(state.Children);

        // Answers: the brute-force log-mass L_c = log Σ_{k∈c} exp(θ q·μ_k).
        float[] queries = [0.5f, 0.5f, 0.5f, 0.5f, 1f, 0f, 0f, 0f, 0f, 0.6f, 0f, 0.8f];
        double[] thetas = [1, 40];
        var logMass = LogMass(restored, queries, thetas);
        for (var t = 0; t < thetas.Length; t++)
        {
            for (var q = 0; q < 3; q++)
            {
                for (var c = 0; c < 3; c++)
                {
                    var terms = Enumerable.Range(0, 12).Where(k => Labels[k] == c)
                        .Select(k => thetas[t] * Enumerable.Range(0, 4).Sum(j => (double)queries[(q * 4) + j] * Keys[(k * 4) + j])).ToList();
                    var max = terms.Max();
                    var expected = max + Math.Log(terms.Sum(x => Math.Exp(x - max)));
                    Assert.Equal(expected, logMass[(((t * 3) + q) * 3) + c], 1e-3 * Math.Max(1, Math.Abs(expected)));
                }
            }
        }
    }

    [Fact]
    public void GoldenFileStartsWithTheSignatureAndIsNotRewritten()
    {
        var bytes = File.ReadAllBytes(GoldenPath);
        Assert.Equal("SCACHE\u001A\n"u8.ToArray(), bytes[..8]);
        Assert.Equal(0xC6, bytes[8]);

        // Loading is read-only.
        var before = File.GetLastWriteTimeUtc(GoldenPath);
        var (_, memory) = Load(GoldenPath, [new ExactCacheMemoryFactory(new ExactCacheOptions())]);
        memory.Dispose();
        Assert.Equal(before, File.GetLastWriteTimeUtc(GoldenPath));
        Assert.Equal(bytes, File.ReadAllBytes(GoldenPath));
    }
}
