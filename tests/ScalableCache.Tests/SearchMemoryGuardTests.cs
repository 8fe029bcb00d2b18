using ScalableCache.Core;
using ScalableCache.Core.Data;
using ScalableCache.Core.Evaluation;
using ScalableCache.Core.Features;
using ScalableCache.Core.Models;
using ScalableCache.Exact;
using Xunit;

namespace ScalableCache.Tests;

/// <summary>
/// A layer search whose similarity matrices cannot fit in memory (ImageNet-size caches: 3 candidates × 25,000 validation ×
/// 275,000 training images is 41.25 GB of float16) is refused before the training pass reads an image, naming the sizes and the ways out.
/// </summary>
public sealed class SearchMemoryGuardTests : IDisposable
{
    private readonly PersistenceTempFolder _folder = new();

    [Fact]
    public void TheSimilarityBytesAreOneFloat16MatrixPerCandidate()
    {
        Assert.Equal(3L * 25_000 * 275_000 * 2, DatasetFeatureExtractor.SearchSimilarityBytes(3, 25_000, 275_000));
        Assert.Equal(4L * 5_000 * 50_000 * 2, DatasetFeatureExtractor.SearchSimilarityBytes(4, 5_000, 50_000));
    }

    [Fact]
    public void AMatrixSetLargerThanTheAvailableMemoryIsRefusedWithBothSizes()
    {
        var ex = Assert.Throws<InvalidOperationException>(() => DatasetFeatureExtractor.EnsureSimilaritiesFit(3, 25_000, 275_000, 24_000_000_000));
        Assert.Contains("41.2 GB", ex.Message, StringComparison.Ordinal);
        Assert.Contains("24.0 GB", ex.Message, StringComparison.Ordinal);
        Assert.Contains("--layers", ex.Message, StringComparison.Ordinal);
        Assert.Contains("--per-class", ex.Message, StringComparison.Ordinal);

        // The CIFAR-10 search (4 × 5,000 × 50,000: 2 GB) fits, and an unknown amount of memory is not checked.
        DatasetFeatureExtractor.EnsureSimilaritiesFit(4, 5_000, 50_000, 24_000_000_000);
        DatasetFeatureExtractor.EnsureSimilaritiesFit(3, 25_000, 275_000, null);
    }

    [Fact]
    public void TheAvailableMemoryIsKnownAndBelowThePhysicalMemory()
    {
        var available = ProcessMemory.AvailableBytes();
        Assert.NotNull(available);
        Assert.InRange(available.Value, 1, GC.GetGCMemoryInfo().TotalAvailableMemoryBytes);
    }

    [Fact]
    public void TheFitterRefusesATooLargeSearchBeforeReadingAnImageAndLeavesNoKeyFolder()
    {
        using var net = ModelTestSupport.LoadResNet20();
        var fitter = new CacheFitter(net.Model, new CacheFitOptions
        {
            Store = new ExactCacheMemoryFactory(new ExactCacheOptions()),
            Input = InputNormalization.ImageNet,
            InputShape = InputShape.Cifar,
            KeyFolder = _folder.Path,
        });
        var candidates = fitter.Candidates();
        using var validation = fitter.ExtractLayers(ModelTestSupport.Cifar10Test.ClassBalancedSubset(10, seed: 1), candidates, "validation", TestContext.Current.CancellationToken);
        var huge = new UnreadableImages(int.MaxValue);
        var ex = Assert.Throws<InvalidOperationException>(() => fitter.ExtractForSearch(huge, validation, candidates, "train", TestContext.Current.CancellationToken));
        Assert.Contains("similarity matrices", ex.Message, StringComparison.Ordinal);
        Assert.Contains($"{int.MaxValue:N0} training images", ex.Message, StringComparison.Ordinal);
        Assert.Equal(0, huge.Reads);
        Assert.Empty(Directory.EnumerateFileSystemEntries(_folder.Path));
    }

    public void Dispose() => _folder.Dispose();

    /// <summary>A source of <paramref name="count"/> CIFAR-shaped images that counts, and refuses, every read.</summary>
    private sealed class UnreadableImages(int count) : IImageSource
    {
        public int Reads { get; private set; }

        public int Count => count;

        public InputShape Shape => InputShape.Cifar;

        public IReadOnlyList<string> ClassNames { get; } = [.. Enumerable.Range(0, 10).Select(i => $"class{i}")];

        public IReadOnlyList<int> Labels { get; } = new ZeroLabels(count);

        public void Read(int start, int count, Span<byte> destination)
        {
            Reads++;
            throw new InvalidOperationException("The guard should have refused the search before reading.");
        }
    }

    private sealed class ZeroLabels(int count) : IReadOnlyList<int>
    {
        public int this[int index] => (uint)index < (uint)count ? 0 : throw new ArgumentOutOfRangeException(nameof(index));

        public int Count => count;

        public IEnumerator<int> GetEnumerator() => Enumerable.Repeat(0, count).GetEnumerator();

        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
    }
}
