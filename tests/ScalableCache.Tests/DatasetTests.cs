using ScalableCache.Core.Data;
using TorchSharp;
using Xunit;

namespace ScalableCache.Tests;

public sealed class DatasetTests
{
    [Fact]
    public void ConstructorCopiesAndValidates()
    {
        var pixels = new byte[2 * 3 * 2 * 2];
        var data = new ImageDataset(pixels, [0, 1], 3, 2, 2, ["a", "b"]);
        pixels[0] = 9;
        Assert.Equal(0, data.Pixels[0]);
        Assert.Equal((2, 3, 2, 2, 12, 2), (data.Count, data.Channels, data.Height, data.Width, data.ImageSize, data.ClassCount));

        var badLabel = Assert.Throws<ArgumentException>(() => new ImageDataset(pixels, [0, 2], 3, 2, 2, ["a", "b"]));
        Assert.Contains("image 1", badLabel.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => new ImageDataset(new byte[5], [0], 3, 2, 2, ["a"]));
    }

    [Fact]
    public void SliceSubsetAndConcatCopyTheRightImages()
    {
        var data = DataTestFiles.Synthetic(10, 3);
        var slice = data.Slice(4, 3);
        Assert.Equal(data.GetImage(4).ToArray(), slice.GetImage(0).ToArray());
        Assert.Equal(data.Labels[4..7].ToArray(), slice.Labels.ToArray());

        var subset = data.Subset([9, 0, 9]);
        Assert.Equal(3, subset.Count);
        Assert.Equal(data.GetImage(9).ToArray(), subset.GetImage(2).ToArray());
        Assert.Equal(new[] { data.Labels[9], data.Labels[0], data.Labels[9] }, subset.Labels.ToArray());
        Assert.Throws<ArgumentOutOfRangeException>(() => data.Subset([10]));
        Assert.Throws<ArgumentOutOfRangeException>(() => data.Slice(8, 3));

        var joined = ImageDataset.Concat(slice, subset);
        Assert.Equal(6, joined.Count);
        Assert.Equal(subset.GetImage(0).ToArray(), joined.GetImage(3).ToArray());
    }

    [Fact]
    public void HorizontalFlipMirrorsColumnsAndKeepsLabels()
    {
        var data = DataTestFiles.Synthetic(6, 3, channels: 3, height: 4, width: 5);
        var augmented = data.WithHorizontalFlips();
        Assert.Equal(12, augmented.Count);
        Assert.Equal(data.Pixels.ToArray(), augmented.Pixels[..data.Pixels.Length].ToArray());
        Assert.Equal([.. data.Labels, .. data.Labels], augmented.Labels.ToArray());
        for (var i = 0; i < data.Count; i++)
        {
            for (var c = 0; c < 3; c++)
            {
                for (var y = 0; y < 4; y++)
                {
                    for (var x = 0; x < 5; x++)
                    {
                        Assert.Equal(data.GetPixel(i, c, y, x), augmented.GetPixel(data.Count + i, c, y, 4 - x));
                    }
                }
            }
        }

        var flipped = augmented.Slice(data.Count, data.Count);
        var twice = flipped.WithHorizontalFlips().Slice(data.Count, data.Count);
        Assert.Equal(data.Pixels.ToArray(), twice.Pixels.ToArray());
        Assert.Equal(augmented.Pixels.ToArray(), data.WithHorizontalFlips().Pixels.ToArray());
    }

    [Fact]
    public void SeededSplitIsDeterministicDisjointAndCovering()
    {
        var data = DataTestFiles.Synthetic(101, 5);
        var split = data.SeededSplit(seed: 7, fraction: 0.5);
        var again = data.SeededSplit(seed: 7, fraction: 0.5);
        Assert.Equal(split.First, again.First);
        Assert.Equal(split.Second, again.Second);
        Assert.Equal(51, split.First.Count);
        Assert.Equal(50, split.Second.Count);
        Assert.Empty(split.First.Intersect(split.Second));
        Assert.Equal(Enumerable.Range(0, 101), split.First.Concat(split.Second).Order());
        Assert.Equal(split.First.Order(), split.First);
        Assert.NotEqual(split.First, data.SeededSplit(seed: 8, fraction: 0.5).First);
    }

    [Fact]
    public void SeededSplitIsPinnedAcrossVersions()
    {
        // SplitMix64 + Lemire + Fisher–Yates are fixed by the library; this golden value must never change, or
        // validation/report halves would differ between runs made with different versions. Cross-checked against an
        // independent Python implementation of the same algorithm (whose SplitMix64 gives 0xE220A8397B1DCDAF first for seed 0).
        var split = DataTestFiles.Synthetic(20, 2).SeededSplit(seed: 42, fraction: 0.25);
        Assert.Equal(Golden42, split.First);
    }

    [Fact]
    public void ClassBalancedSubsetHasEqualCountsAndDependsOnlyOnTheSeed()
    {
        // Unbalanced: class 0 has 40 images, class 1 has 20, class 2 has 10.
        var data = DataTestFiles.Synthetic(70, 3, label: i => i < 40 ? 0 : i < 60 ? 1 : 2);
        var subset = data.ClassBalancedSubset(perClass: 6, seed: 3);
        Assert.Equal([6, 6, 6], subset.CountPerClass());
        Assert.Equal(data.ClassBalancedIndices(6, 3), data.ClassBalancedIndices(6, 3));
        Assert.NotEqual(data.ClassBalancedIndices(6, 3), data.ClassBalancedIndices(6, 4));
        Assert.Equal(data.Subset(data.ClassBalancedIndices(6, 3)).Pixels.ToArray(), subset.Pixels.ToArray());

        var small = data.ClassBalancedIndices(2, 3);
        Assert.Subset(data.ClassBalancedIndices(6, 3).ToHashSet(), small.ToHashSet());

        var half = data.ClassBalancedSubset(fraction: 0.5, seed: 3);
        Assert.Equal([5, 5, 5], half.CountPerClass());
        Assert.Throws<ArgumentOutOfRangeException>(() => data.ClassBalancedSubset(perClass: 11, seed: 3));
        Assert.Throws<ArgumentOutOfRangeException>(() => data.ClassBalancedSubset(fraction: 0.0, seed: 3));
    }

    [Fact]
    public void ToTensorNormalisesLikeAHandComputation()
    {
        var data = DataTestFiles.Synthetic(4, 2, channels: 3, height: 4, width: 5);
        float[] mean = [0.485f, 0.456f, 0.406f];
        float[] std = [0.229f, 0.224f, 0.225f];
        using var x = data.ToTensor(1, 2, mean, std);
        Assert.Equal(new long[] { 2, 3, 4, 5 }, x.shape);
        Assert.Equal(torch.ScalarType.Float32, x.dtype);

        // image 2 (index 1 in the batch), channel 1, row 3, column 2
        var raw = data.GetPixel(2, 1, 3, 2);
        var expected = ((raw / 255f) - 0.456f) / 0.224f;
        Assert.Equal(expected, x[1, 1, 3, 2].ToSingle(), 1e-6f);

        using var unit = data.ToTensor(0, 4);
        Assert.Equal(data.GetPixel(3, 2, 0, 4) / 255f, unit[3, 2, 0, 4].ToSingle(), 1e-7f);

        using var labels = data.LabelsToTensor(1, 3);
        Assert.Equal(torch.ScalarType.Int64, labels.dtype);
        Assert.Equal(new long[] { 1, 0, 1 }, labels.data<long>().ToArray());

        Assert.Throws<ArgumentException>(() => data.ToTensor(0, 1, [0.5f], [0.5f]));
        Assert.Throws<ArgumentException>(() => data.ToTensor(0, 1, mean, [1f, 0f, 1f]));
    }

    private static readonly int[] Golden42 = [1, 7, 9, 15, 16];
}
