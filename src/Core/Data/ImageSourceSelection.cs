namespace ScalableCache.Core.Data;

/// <summary>
/// Seeded selections over any <see cref="IImageSource"/>, by its labels alone (no pixels are read): the class-balanced subsets of a
/// cache (the paper's 275 ImageNet training images per class) and the validation/report halves of a test set. <see cref="ImageDataset"/>'s
/// methods of the same names are these.
/// </summary>
/// <remarks>
/// Every selection shuffles <c>0 … Count−1</c> with a Fisher–Yates shuffle driven by SplitMix64 seeded with <c>(ulong)(long)seed</c> and
/// Lemire's unbiased bounded integers (<see cref="SplitMix64.Permutation"/>), so it is identical across runs, machines and .NET versions,
/// and the same for an in-memory and a streamed copy of one data set.
/// </remarks>
public static class ImageSourceSelection
{
    /// <summary>Number of images of each class, indexed by label (length <c>ClassNames.Count</c>).</summary>
    public static int[] CountPerClass(this IImageSource source)
    {
        ArgumentNullException.ThrowIfNull(source);
        var counts = new int[source.ClassNames.Count];
        foreach (var label in source.Labels)
        {
            counts[label]++;
        }

        return counts;
    }

    /// <summary>
    /// Indices of <paramref name="perClass"/> images of every class that has images, ascending. The choice walks one seeded
    /// permutation of <c>0 … Count−1</c> and keeps the first <paramref name="perClass"/> images met of each class, so for one seed a
    /// smaller selection is contained in a larger one (nested cache-size sweeps). Classes with no images are skipped.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="perClass"/> is not positive or exceeds the smallest non-empty class.</exception>
    public static int[] ClassBalancedIndices(this IImageSource source, int perClass, int seed)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(perClass);
        var counts = source.CountPerClass();
        for (var c = 0; c < counts.Length; c++)
        {
            if (counts[c] > 0 && counts[c] < perClass)
            {
                throw new ArgumentOutOfRangeException(
                    nameof(perClass), $"Class {c} ({source.ClassNames[c]}) has {counts[c]} images, fewer than the {perClass} asked for per class.");
            }
        }

        var labels = source.Labels;
        var taken = new int[counts.Length];
        var selected = new List<int>();
        foreach (var index in SplitMix64.Permutation(source.Count, seed))
        {
            var label = labels[index];
            if (taken[label] < perClass)
            {
                taken[label]++;
                selected.Add(index);
            }
        }

        selected.Sort();
        return [.. selected];
    }

    /// <summary>
    /// Indices of a seeded class-balanced subset of at most <paramref name="max"/> images: <c>⌊max / m⌋</c> images of each of the
    /// m classes that have images (<see cref="ClassBalancedIndices"/>); all indices when <paramref name="max"/> is at least the count.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="max"/> is below the number of classes with images.</exception>
    public static int[] ClassBalancedIndicesAtMost(this IImageSource source, int max, int seed)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (max >= source.Count)
        {
            return [.. Enumerable.Range(0, source.Count)];
        }

        var classes = source.CountPerClass().Count(c => c > 0);
        return max < classes
            ? throw new ArgumentOutOfRangeException(nameof(max), max, $"A limit of {max} images leaves some of the {classes} classes empty.")
            : source.ClassBalancedIndices(max / classes, seed);
    }

    /// <summary>
    /// Splits <c>0 … Count−1</c> at random into two disjoint index sets that together cover every image: <see cref="DatasetSplit.First"/>
    /// holds <c>round(fraction · Count)</c> indices (midpoint away from zero), <see cref="DatasetSplit.Second"/> the rest; both ascending.
    /// Used for the validation/report halves of a test set.
    /// </summary>
    public static DatasetSplit SeededSplit(this IImageSource source, int seed, double fraction)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (!(fraction >= 0 && fraction <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(fraction), fraction, "The fraction must lie in [0, 1].");
        }

        var permutation = SplitMix64.Permutation(source.Count, seed);
        var firstCount = (int)Math.Round(fraction * source.Count, MidpointRounding.AwayFromZero);
        var first = permutation[..firstCount];
        var second = permutation[firstCount..];
        Array.Sort(first);
        Array.Sort(second);
        return new DatasetSplit(first, second);
    }

    /// <summary>
    /// The images at <paramref name="indices"/> as a source of the same kind: an <see cref="ImageDataset"/> copies their pixels, an
    /// <see cref="ImageFileSource"/> keeps only their file names.
    /// </summary>
    /// <exception cref="NotSupportedException">Another kind of source.</exception>
    public static IImageSource Subset(this IImageSource source, IReadOnlyList<int> indices)
    {
        ArgumentNullException.ThrowIfNull(source);
        return source switch
        {
            ImageDataset data => data.Subset(indices),
            ImageFileSource files => files.Subset(indices),
            _ => throw new NotSupportedException($"Subsets of a {source.GetType().Name} are not supported; select before making the source."),
        };
    }
}
