using System.Buffers.Binary;
using System.Text.Json;
using ScalableCache.Core.Data;
using ScalableCache.Core.Models;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>
/// The ImageNet evaluation transform against torchvision's output (<c>fixtures/imagenet/preprocessed.npy</c>: PIL decode,
/// <c>Resize(256)</c>, <c>CenterCrop(224)</c>, <c>ToTensor</c>, <c>Normalize</c>) on eight real JPEGs, two of them greyscale, sizes from
/// 75×56 (upsampled) to 2400×1600.
/// </summary>
public sealed class ImageNetTransformTests
{
    /// <summary>
    /// Bounds on the normalised values. Seen: 0 (bit-identical) on all eight, mean and max; the resampling is Pillow's integer arithmetic
    /// and SkiaSharp's libjpeg-turbo decodes as Pillow's does. One uint8 step is 1/(255·0.225) ≈ 0.0174, so any decoding or rounding
    /// difference fails this.
    /// </summary>
    private const double MeanTolerance = 1e-6;

    private const double MaxTolerance = 1e-6;

    [Fact]
    public void MatchesTorchVisionOnTheFixtureJpegs()
    {
        var folder = SharedData.ImageNetFixtures;
        using var manifest = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "manifest.json")));
        var images = manifest.RootElement.GetProperty("images").EnumerateArray().ToList();
        var expected = ReadNpy(Path.Combine(folder, "preprocessed.npy"), out var shape);
        Assert.Equal([images.Count, 3L, 224, 224], shape);

        var transform = new ImageNetTransform();
        var size = transform.Output.Size;
        using var scope = NewDisposeScope();
        var report = new List<string>();
        double worstMean = 0, worstMax = 0;
        for (var i = 0; i < images.Count; i++)
        {
            var pixels = transform.Apply(Path.Combine(folder, images[i].GetProperty("file").GetString()!));
            var batch = tensor(pixels, [1, 3, 224, 224]);
            var ours = InputNormalization.ImageNet.Normalize(batch);
            var theirs = tensor(expected.AsSpan(i * size, size).ToArray(), [1, 3, 224, 224]);
            var diff = (ours - theirs).abs();
            var mean = diff.mean().item<float>();
            var max = diff.max().item<float>();
            worstMean = Math.Max(worstMean, mean);
            worstMax = Math.Max(worstMax, max);
            report.Add($"{images[i].GetProperty("file").GetString()} ({images[i].GetProperty("mode").GetString()}): mean |Δ| {mean:E2}, max |Δ| {max:E2}");
        }

        TestContext.Current.TestOutputHelper?.WriteLine(string.Join(Environment.NewLine, report));
        Assert.True(worstMean < MeanTolerance, string.Join("; ", report));
        Assert.True(worstMax < MaxTolerance, string.Join("; ", report));
    }

    [Theory]
    [InlineData(500, 375, 341, 256)]
    [InlineData(375, 500, 256, 341)]
    [InlineData(75, 56, 342, 256)]
    [InlineData(2400, 1600, 384, 256)]
    [InlineData(256, 256, 256, 256)]
    public void ResizedSizeIsTorchVisions(int width, int height, int outWidth, int outHeight) =>
        Assert.Equal((outWidth, outHeight), new ImageNetTransform().ResizedSize(width, height));

    /// <summary>Reads a little-endian float32 <c>.npy</c> (format 1.0, C order).</summary>
    private static float[] ReadNpy(string path, out long[] shape)
    {
        var bytes = File.ReadAllBytes(path);
        Assert.Equal(0x93, bytes[0]);
        var headerLength = BinaryPrimitives.ReadUInt16LittleEndian(bytes.AsSpan(8, 2));
        var header = System.Text.Encoding.ASCII.GetString(bytes, 10, headerLength);
        Assert.Contains("'descr': '<f4'", header);
        Assert.Contains("'fortran_order': False", header);
        var dims = header[(header.IndexOf('(') + 1)..header.IndexOf(')')];
        shape = [.. dims.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(long.Parse)];
        var data = bytes.AsSpan(10 + headerLength);
        var values = new float[data.Length / 4];
        for (var i = 0; i < values.Length; i++)
        {
            values[i] = BinaryPrimitives.ReadSingleLittleEndian(data.Slice(4 * i, 4));
        }

        return values;
    }
}
