using System.Globalization;
using ScalableCache.Core.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Data;

/// <summary>
/// An immutable, in-memory labelled image set: <see cref="Count"/> images of <see cref="Channels"/>×<see cref="Height"/>×<see cref="Width"/>
/// uint8 pixels stored planar (NCHW: image-major, then channel, row, column) in one array, one label in
/// <c>[0, ClassCount)</c> per image, and the class names in label order.
/// </summary>
/// <remarks>
/// <para>Every operation that selects images (<see cref="Slice"/>, <see cref="Subset"/>, <see cref="ClassBalancedSubset(int, int)"/>,
/// <see cref="WithHorizontalFlips"/>) returns a new data set with copied pixels; none mutates this one, so an instance may be shared
/// freely between threads.</para>
/// <para><b>Seeded selections</b> (<see cref="SeededSplit"/>, <see cref="ClassBalancedIndices"/>) shuffle <c>0 … Count−1</c> with a
/// Fisher–Yates shuffle driven by SplitMix64 seeded with <c>(ulong)(long)seed</c> and Lemire's unbiased bounded integers
/// (not <see cref="Random"/>), so they are identical across runs, machines and .NET versions.</para>
/// </remarks>
public sealed class ImageDataset : IImageSource
{
    private readonly byte[] _pixels;
    private readonly int[] _labels;
    private readonly string[] _classNames;

    /// <summary>Creates a data set from copies of <paramref name="pixels"/> (NCHW, <c>n·c·h·w</c> bytes) and <paramref name="labels"/> (<c>n</c>).</summary>
    /// <exception cref="ArgumentException">Lengths disagree, a dimension is not positive, or a label lies outside <c>[0, classNames.Count)</c>.</exception>
    public ImageDataset(ReadOnlySpan<byte> pixels, ReadOnlySpan<int> labels, int channels, int height, int width, IReadOnlyList<string> classNames)
        : this(pixels.ToArray(), labels.ToArray(), channels, height, width, ToArray(classNames), validateLabels: true)
    {
    }

    /// <summary>Takes ownership of the arrays without copying (readers and selections build fresh arrays).</summary>
    internal ImageDataset(byte[] pixels, int[] labels, int channels, int height, int width, string[] classNames, bool validateLabels)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(channels);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(height);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(width);
        if (classNames.Length == 0)
        {
            throw new ArgumentException("A data set needs at least one class name.", nameof(classNames));
        }

        var imageSize = (long)channels * height * width;
        if (imageSize > Array.MaxLength)
        {
            throw new ArgumentException($"An image of {channels}×{height}×{width} bytes is too large.", nameof(channels));
        }

        if (pixels.LongLength != imageSize * labels.LongLength)
        {
            throw new ArgumentException(
                $"{pixels.LongLength} pixel bytes do not hold {labels.Length} images of {channels}×{height}×{width} = {imageSize} bytes " +
                $"(expected {imageSize * labels.LongLength}).",
                nameof(pixels));
        }

        if (validateLabels)
        {
            for (var i = 0; i < labels.Length; i++)
            {
                if ((uint)labels[i] >= (uint)classNames.Length)
                {
                    throw new ArgumentException(
                        $"Label {labels[i]} of image {i} lies outside [0, {classNames.Length}).", nameof(labels));
                }
            }
        }

        _pixels = pixels;
        _labels = labels;
        _classNames = classNames;
        Channels = channels;
        Height = height;
        Width = width;
        ImageSize = (int)imageSize;
    }

    /// <summary>Number of images.</summary>
    public int Count => _labels.Length;

    /// <summary>Channels per image (3 for RGB).</summary>
    public int Channels { get; }

    /// <summary>Image height in pixels.</summary>
    public int Height { get; }

    /// <summary>Image width in pixels.</summary>
    public int Width { get; }

    /// <summary>Bytes per image: <c>Channels · Height · Width</c>.</summary>
    public int ImageSize { get; }

    /// <summary>Number of classes C; labels lie in <c>[0, C)</c>. Some classes may have no images in a subset.</summary>
    public int ClassCount => _classNames.Length;

    /// <summary>Class names in label order.</summary>
    public IReadOnlyList<string> ClassNames => _classNames;

    /// <summary>All pixels, NCHW planar, <c>Count · ImageSize</c> bytes.</summary>
    public ReadOnlySpan<byte> Pixels => _pixels;

    /// <summary>All labels, one per image.</summary>
    public ReadOnlySpan<int> Labels => _labels;

    /// <inheritdoc />
    InputShape IImageSource.Shape => new(Channels, Height, Width);

    /// <inheritdoc />
    IReadOnlyList<int> IImageSource.Labels => _labels;

    /// <inheritdoc />
    public void Read(int start, int count, Span<byte> destination)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(start);
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(start + (long)count, Count, nameof(count));
        _pixels.AsSpan(start * ImageSize, count * ImageSize).CopyTo(destination);
    }

    /// <summary>The <c>ImageSize</c> pixel bytes of image <paramref name="index"/> (CHW).</summary>
    public ReadOnlySpan<byte> GetImage(int index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, Count);
        return _pixels.AsSpan(index * ImageSize, ImageSize);
    }

    /// <summary>One pixel value: image <paramref name="index"/>, channel <paramref name="channel"/>, row <paramref name="y"/>, column <paramref name="x"/>.</summary>
    public byte GetPixel(int index, int channel, int y, int x)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(channel);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(channel, Channels);
        ArgumentOutOfRangeException.ThrowIfNegative(y);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(y, Height);
        ArgumentOutOfRangeException.ThrowIfNegative(x);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(x, Width);
        return GetImage(index)[((channel * Height) + y) * Width + x];
    }

    /// <summary>Number of images of each class, indexed by label (length <see cref="ClassCount"/>).</summary>
    public int[] CountPerClass() => ImageSourceSelection.CountPerClass(this);

    /// <summary>Images <c>[start, start + count)</c> as a new data set.</summary>
    public ImageDataset Slice(int start, int count)
    {
        CheckRange(start, count);
        return new ImageDataset(
            _pixels.AsSpan(start * ImageSize, count * ImageSize).ToArray(),
            _labels.AsSpan(start, count).ToArray(),
            Channels, Height, Width, _classNames, validateLabels: false);
    }

    /// <summary>The images at <paramref name="indices"/>, in that order (repeats allowed), as a new data set.</summary>
    public ImageDataset Subset(IReadOnlyList<int> indices)
    {
        ArgumentNullException.ThrowIfNull(indices);
        var pixels = new byte[(long)indices.Count * ImageSize];
        var labels = new int[indices.Count];
        for (var i = 0; i < indices.Count; i++)
        {
            var index = indices[i];
            if ((uint)index >= (uint)Count)
            {
                throw new ArgumentOutOfRangeException(nameof(indices), $"Index {index} at position {i} lies outside [0, {Count}).");
            }

            _pixels.AsSpan(index * ImageSize, ImageSize).CopyTo(pixels.AsSpan(i * ImageSize, ImageSize));
            labels[i] = _labels[index];
        }

        return new ImageDataset(pixels, labels, Channels, Height, Width, _classNames, validateLabels: false);
    }

    /// <summary>
    /// The paper's augmented cache (C-10+): <c>2·Count</c> images, the originals in order followed by their horizontal mirror
    /// images in the same order (pixel column <c>x</c> ↔ <c>Width−1−x</c>), with the same labels.
    /// </summary>
    public ImageDataset WithHorizontalFlips()
    {
        var n = Count;
        var pixels = new byte[2L * n * ImageSize];
        _pixels.AsSpan().CopyTo(pixels);
        var flipped = pixels.AsSpan(n * ImageSize);
        for (var row = 0; row < n * Channels * Height; row++)
        {
            var source = _pixels.AsSpan(row * Width, Width);
            var target = flipped.Slice(row * Width, Width);
            source.CopyTo(target);
            target.Reverse();
        }

        var labels = new int[2 * n];
        _labels.AsSpan().CopyTo(labels);
        _labels.AsSpan().CopyTo(labels.AsSpan(n));
        return new ImageDataset(pixels, labels, Channels, Height, Width, _classNames, validateLabels: false);
    }

    /// <summary>Indices of <paramref name="perClass"/> images of every class that has images, ascending; see <see cref="ImageSourceSelection.ClassBalancedIndices"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="perClass"/> is not positive or exceeds the smallest non-empty class.</exception>
    public int[] ClassBalancedIndices(int perClass, int seed) => ImageSourceSelection.ClassBalancedIndices(this, perClass, seed);

    /// <summary>A class-balanced subset of <paramref name="perClass"/> images per class; see <see cref="ClassBalancedIndices"/>.</summary>
    public ImageDataset ClassBalancedSubset(int perClass, int seed) => Subset(ClassBalancedIndices(perClass, seed));

    /// <summary>
    /// A class-balanced subset holding <c>round(fraction · m)</c> images per class (midpoint away from zero), where m is the
    /// size of the smallest non-empty class; see <see cref="ClassBalancedIndices"/>.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="fraction"/> is outside <c>(0, 1]</c> or rounds to zero images per class.</exception>
    public ImageDataset ClassBalancedSubset(double fraction, int seed) => ClassBalancedSubset(PerClassForFraction(fraction), seed);

    /// <summary>The per-class count <see cref="ClassBalancedSubset(double, int)"/> uses for <paramref name="fraction"/>.</summary>
    public int PerClassForFraction(double fraction)
    {
        if (!(fraction > 0 && fraction <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(fraction), fraction, "The fraction must lie in (0, 1].");
        }

        var smallest = CountPerClass().Where(c => c > 0).DefaultIfEmpty(0).Min();
        var perClass = (int)Math.Round(fraction * smallest, MidpointRounding.AwayFromZero);
        if (perClass < 1)
        {
            throw new ArgumentOutOfRangeException(
                nameof(fraction), fraction, $"A fraction of {fraction.ToString(CultureInfo.InvariantCulture)} of {smallest} images per class selects none.");
        }

        return perClass;
    }

    /// <summary>
    /// Splits <c>0 … Count−1</c> at random into two disjoint index sets that together cover every image (the validation/report halves
    /// of a test set); see <see cref="ImageSourceSelection.SeededSplit"/>. Deterministic for a seed (see the type's remarks).
    /// </summary>
    public DatasetSplit SeededSplit(int seed, double fraction) => ImageSourceSelection.SeededSplit(this, seed, fraction);

    /// <summary>
    /// Images <c>[start, start + count)</c> as a float32 tensor <c>[count, Channels, Height, Width]</c> on <paramref name="device"/>
    /// (CPU when <see langword="null"/>), normalised per channel: <c>(x / 255 − mean[c]) / std[c]</c>. Owned by the caller.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="mean"/> or <paramref name="std"/> does not have <see cref="Channels"/> entries, or a std is not positive and finite.</exception>
    public Tensor ToTensor(int start, int count, ReadOnlySpan<float> mean, ReadOnlySpan<float> std, Device? device = null)
    {
        CheckRange(start, count);
        if (mean.Length != Channels || std.Length != Channels)
        {
            throw new ArgumentException(
                $"Normalisation needs one mean and one std per channel ({Channels}); got {mean.Length} and {std.Length}.", nameof(mean));
        }

        foreach (var s in std)
        {
            if (!(s > 0 && float.IsFinite(s)))
            {
                throw new ArgumentException($"Every std must be positive and finite; got {s.ToString(CultureInfo.InvariantCulture)}.", nameof(std));
            }
        }

        using var scope = NewDisposeScope();
        var target = device ?? CPU;
        var x = RawTensor(start, count).to(target).to_type(ScalarType.Float32).div_(255f);
        var meanTensor = tensor(mean.ToArray(), [1, Channels, 1, 1], device: target);
        var stdTensor = tensor(std.ToArray(), [1, Channels, 1, 1], device: target);
        return x.sub_(meanTensor).div_(stdTensor).MoveToOuterDisposeScope();
    }

    /// <summary>Images <c>[start, start + count)</c> as float32 <c>[count, Channels, Height, Width]</c> in <c>[0, 1]</c> (<c>x / 255</c>). Owned by the caller.</summary>
    public Tensor ToTensor(int start, int count, Device? device = null)
    {
        CheckRange(start, count);
        using var scope = NewDisposeScope();
        return RawTensor(start, count).to(device ?? CPU).to_type(ScalarType.Float32).div_(255f).MoveToOuterDisposeScope();
    }

    /// <summary>Labels <c>[start, start + count)</c> as an int64 tensor <c>[count]</c> on <paramref name="device"/> (CPU when <see langword="null"/>). Owned by the caller.</summary>
    public Tensor LabelsToTensor(int start, int count, Device? device = null)
    {
        CheckRange(start, count);
        var labels = new long[count];
        for (var i = 0; i < count; i++)
        {
            labels[i] = _labels[start + i];
        }

        using var scope = NewDisposeScope();
        return tensor(labels, [count]).to(device ?? CPU).MoveToOuterDisposeScope();
    }

    /// <summary>Concatenates data sets of one image shape and one list of class names, in order.</summary>
    public static ImageDataset Concat(params IReadOnlyList<ImageDataset> parts)
    {
        ArgumentNullException.ThrowIfNull(parts);
        if (parts.Count == 0)
        {
            throw new ArgumentException("Nothing to concatenate.", nameof(parts));
        }

        var first = parts[0];
        long total = 0;
        foreach (var part in parts)
        {
            ArgumentNullException.ThrowIfNull(part, nameof(parts));
            if (part.Channels != first.Channels || part.Height != first.Height || part.Width != first.Width ||
                !part._classNames.SequenceEqual(first._classNames, StringComparer.Ordinal))
            {
                throw new ArgumentException(
                    "Only data sets with the same image shape and class names can be concatenated " +
                    $"({first.Channels}×{first.Height}×{first.Width} vs {part.Channels}×{part.Height}×{part.Width}).", nameof(parts));
            }

            total += part.Count;
        }

        var pixels = new byte[total * first.ImageSize];
        var labels = new int[total];
        var offset = 0;
        foreach (var part in parts)
        {
            part._pixels.AsSpan().CopyTo(pixels.AsSpan(offset * first.ImageSize));
            part._labels.AsSpan().CopyTo(labels.AsSpan(offset));
            offset += part.Count;
        }

        return new ImageDataset(pixels, labels, first.Channels, first.Height, first.Width, first._classNames, validateLabels: false);
    }

    /// <inheritdoc />
    public override string ToString() =>
        $"{Count} images {Channels}×{Height}×{Width}, {ClassCount} classes";

    private Tensor RawTensor(int start, int count) =>
        tensor(_pixels.AsSpan(start * ImageSize, count * ImageSize).ToArray(), [count, Channels, Height, Width]);

    private void CheckRange(int start, int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(start);
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if (start > Count - count)
        {
            throw new ArgumentOutOfRangeException(nameof(count), $"Images [{start}, {start + (long)count}) lie outside [0, {Count}).");
        }
    }

    private static string[] ToArray(IReadOnlyList<string> classNames)
    {
        ArgumentNullException.ThrowIfNull(classNames);
        return [.. classNames];
    }
}

/// <summary>Two disjoint, ascending index sets that together cover a data set (see <see cref="ImageDataset.SeededSplit"/>).</summary>
/// <param name="First">The <c>round(fraction · Count)</c> indices of the first part (e.g. validation).</param>
/// <param name="Second">The remaining indices (e.g. report).</param>
public sealed record DatasetSplit(IReadOnlyList<int> First, IReadOnlyList<int> Second);
