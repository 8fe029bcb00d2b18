using ScalableCache.Core;
using ScalableCache.Core.Data;
using ScalableCache.Core.Evaluation;
using ScalableCache.Core.Features;
using ScalableCache.Core.Models;
using ScalableCache.Exact;
using Xunit;

namespace ScalableCache.Tests;

/// <summary>
/// A layer search whose files cannot fit on the key folder's disk (ImageNet-size caches: 3 candidates × 25,000 validation ×
/// 1,281,167 training images is 192 GB of float16 similarities), or whose panels cannot fit in memory, is refused before the training
/// pass reads an image, naming the sizes and the ways out.
/// </summary>
public sealed class SearchMemoryGuardTests : IDisposable
{
    private readonly PersistenceTempFolder _folder = new();

    [Fact]
    public void TheSimilarityBytesAreOneFloat16MatrixPerCandidateAndThePanelsOnePanelEach()
    {
        Assert.Equal(3L * 25_000 * 275_000 * 2, DatasetFeatureExtractor.SearchSimilarityBytes(3, 25_000, 275_000));
        Assert.Equal(4L * 5_000 * 50_000 * 2, DatasetFeatureExtractor.SearchSimilarityBytes(4, 5_000, 50_000));
        Assert.Equal(5L * 5_000 * SimilarityFile.PanelWidth * 2, DatasetFeatureExtractor.SearchPanelBytes(5, 5_000));
    }

    [Fact]
    public void FilesLargerThanTheFreeDiskAreRefusedWithTheSizes()
    {
        // ImageNet at 275 images per class with 2,048-wide candidates: 41.25 GB of similarities and 6.76 GB of keys.
        const long keys = 3L * 2_048 * 275_000 * 4;
        var ex = Assert.Throws<InvalidOperationException>(
            () => DatasetFeatureExtractor.EnsureSearchFits(3, 25_000, 275_000, keys, "/keys", 24_000_000_000, 24_000_000_000));
        Assert.Contains("48.0 GB to /keys", ex.Message, StringComparison.Ordinal);
        Assert.Contains("41.2 GB of similarity matrices", ex.Message, StringComparison.Ordinal);
        Assert.Contains("6.8 GB of training keys", ex.Message, StringComparison.Ordinal);
        Assert.Contains("24.0 GB free", ex.Message, StringComparison.Ordinal);
        Assert.Contains("TMPDIR", ex.Message, StringComparison.Ordinal);
        Assert.Contains("--layers", ex.Message, StringComparison.Ordinal);
        Assert.Contains("--per-class", ex.Message, StringComparison.Ordinal);

        // With 61 GB free the same search fits; the CIFAR-10 search (5 × 5,000 × 50,000: 2.5 GB, and 4 GB of keys) fits in 24 GB;
        // unknown amounts are not checked.
        DatasetFeatureExtractor.EnsureSearchFits(3, 25_000, 275_000, keys, "/keys", 61_000_000_000, 24_000_000_000);
        DatasetFeatureExtractor.EnsureSearchFits(5, 5_000, 50_000, 5L * 4_096 * 50_000 * 4, "/keys", 24_000_000_000, 24_000_000_000);
        DatasetFeatureExtractor.EnsureSearchFits(3, 25_000, 1_281_167, keys, "/keys", null, null);
    }

    [Fact]
    public void PanelsLargerThanTheAvailableMemoryAreRefused()
    {
        var ex = Assert.Throws<InvalidOperationException>(
            () => DatasetFeatureExtractor.EnsureSearchFits(3, 1_000_000, 10, 0, "/keys", null, 1_000_000_000));
        Assert.Contains("24.6 GB of memory for its similarity matrices' panels", ex.Message, StringComparison.Ordinal);
        Assert.Contains("1.0 GB of memory is available", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void TheFreeDiskAndTheAvailableMemoryAreKnown()
    {
        var available = ProcessMemory.AvailableBytes();
        Assert.NotNull(available);
        Assert.InRange(available.Value, 1, GC.GetGCMemoryInfo().TotalAvailableMemoryBytes);
        var free = DatasetFeatureExtractor.FreeDiskBytes(_folder.Path);
        Assert.NotNull(free);
        Assert.True(free > 0);

        // A folder still to be created is measured on the disk of its nearest existing parent.
        Assert.NotNull(DatasetFeatureExtractor.FreeDiskBytes(Path.Combine(_folder.Path, "not", "yet")));
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
        Assert.Contains(_folder.Path, ex.Message, StringComparison.Ordinal);
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
