using System.Globalization;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Models;

/// <summary>
/// The input normalisation a model was trained with: pixels are scaled to <c>[0, 1]</c> (<c>x / 255</c>), then
/// <c>(x − mean) / std</c> with one mean and std per channel (torchvision's <c>ToTensor</c> + <c>Normalize</c>), or with one
/// mean and std per pixel and channel (<see cref="PerPixel"/>: the statistics Orhan's Keras scripts compute over a whole data set).
/// </summary>
public sealed record InputNormalization
{
    /// <summary>The ImageNet statistics used by the public CIFAR ResNets: mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).</summary>
    public static InputNormalization ImageNet { get; } = new([0.485f, 0.456f, 0.406f], [0.229f, 0.224f, 0.225f]);

    /// <summary>Creates a per-channel normalisation; both lists need one finite entry per channel and every std must be positive.</summary>
    public InputNormalization(IReadOnlyList<float> mean, IReadOnlyList<float> std)
        : this(mean, std, null)
    {
    }

    private InputNormalization(IReadOnlyList<float> mean, IReadOnlyList<float> std, InputShape? pixelShape)
    {
        ArgumentNullException.ThrowIfNull(mean);
        ArgumentNullException.ThrowIfNull(std);
        if (pixelShape is { } shape)
        {
            if (shape.Channels < 1 || shape.Height < 1 || shape.Width < 1 || mean.Count != shape.Size || std.Count != shape.Size)
            {
                throw new ArgumentException(
                    $"Per-pixel normalisation over {shape} images needs {shape.Size} means and stds; got {mean.Count} and {std.Count}.", nameof(mean));
            }
        }
        else if (mean.Count == 0 || mean.Count != std.Count)
        {
            throw new ArgumentException($"Normalisation needs one mean and one std per channel; got {mean.Count} and {std.Count}.", nameof(mean));
        }

        foreach (var m in mean)
        {
            if (!float.IsFinite(m))
            {
                throw new ArgumentException($"Every mean must be finite; got {m.ToString(CultureInfo.InvariantCulture)}.", nameof(mean));
            }
        }

        foreach (var s in std)
        {
            if (!(s > 0 && float.IsFinite(s)))
            {
                throw new ArgumentException($"Every std must be positive and finite; got {s.ToString(CultureInfo.InvariantCulture)}.", nameof(std));
            }
        }

        Mean = [.. mean];
        Std = [.. std];
        PixelShape = pixelShape;
    }

    /// <summary>
    /// A per-pixel normalisation: <paramref name="mean"/> and <paramref name="std"/> hold one value per channel, row and column
    /// of a <paramref name="shape"/> image, in channel-major (C, H, W) order, on the <c>[0, 1]</c> scale.
    /// </summary>
    /// <exception cref="ArgumentException">The lists do not hold <c>shape.Size</c> finite values, or a std is not positive.</exception>
    public static InputNormalization PerPixel(IReadOnlyList<float> mean, IReadOnlyList<float> std, InputShape shape) => new(mean, std, shape);

    /// <summary>Mean on the <c>[0, 1]</c> scale: one per channel, or (per pixel) one per channel, row and column in C, H, W order.</summary>
    public IReadOnlyList<float> Mean { get; }

    /// <summary>Standard deviation on the <c>[0, 1]</c> scale, laid out as <see cref="Mean"/>.</summary>
    public IReadOnlyList<float> Std { get; }

    /// <summary>The image shape of a per-pixel normalisation; <see langword="null"/> for a per-channel one.</summary>
    public InputShape? PixelShape { get; }

    /// <summary>Whether the statistics are per pixel (<see cref="PixelShape"/> is set).</summary>
    public bool IsPerPixel => PixelShape.HasValue;

    /// <summary>Number of channels.</summary>
    public int Channels => PixelShape?.Channels ?? Mean.Count;

    /// <summary>
    /// Normalises images <c>[b, C, H, W]</c> on <paramref name="device"/> (the images' device when <see langword="null"/>):
    /// uint8 pixels are divided by 255 first; floating-point input is taken to be in <c>[0, 1]</c> already; other types are rejected.
    /// Per-pixel statistics need images of their <see cref="PixelShape"/>. Returns a new float32 tensor owned by the caller; the
    /// input is not disposed.
    /// </summary>
    public Tensor Normalize(Tensor images, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(images);
        if (images.dim() != 4 || images.shape[1] != Channels
            || (PixelShape is { } pixels && (images.shape[2] != pixels.Height || images.shape[3] != pixels.Width)))
        {
            var expected = PixelShape is { } p ? $"[b, {p.Channels}, {p.Height}, {p.Width}]" : $"[b, {Channels}, H, W]";
            throw new ArgumentException($"Expected images {expected}; got [{string.Join(", ", images.shape)}].", nameof(images));
        }

        if (images.dtype != ScalarType.Byte && !images.is_floating_point())
        {
            throw new ArgumentException($"Expected uint8 pixels or floating-point images in [0, 1]; got {images.dtype}.", nameof(images));
        }

        using var scope = NewDisposeScope();
        var target = device ?? images.device;
        var x = images.to(target);
        x = x.dtype == ScalarType.Byte ? x.to_type(ScalarType.Float32).div_(255f) : x.to_type(ScalarType.Float32);
        long[] statsShape = PixelShape is { } s ? [1, s.Channels, s.Height, s.Width] : [1, Channels, 1, 1];
        var mean = tensor(Mean.ToArray(), statsShape, device: target);
        var std = tensor(Std.ToArray(), statsShape, device: target);
        return (x - mean).div_(std).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The statistics mirrored left to right: normalising a horizontally flipped image with them gives the flip of the normalised
    /// image (Orhan's scripts flip images after per-pixel normalisation). A per-channel normalisation is its own mirror.
    /// </summary>
    public InputNormalization Mirrored()
    {
        if (PixelShape is not { } shape)
        {
            return this;
        }

        float[] Mirror(IReadOnlyList<float> values)
        {
            var result = new float[values.Count];
            for (var c = 0; c < shape.Channels; c++)
            {
                for (var y = 0; y < shape.Height; y++)
                {
                    var row = ((c * shape.Height) + y) * shape.Width;
                    for (var x = 0; x < shape.Width; x++)
                    {
                        result[row + x] = values[row + shape.Width - 1 - x];
                    }
                }
            }

            return result;
        }

        return PerPixel(Mirror(Mean), Mirror(Std), shape);
    }

    /// <summary>The normalisation in words, for people and cache-file descriptions (per-pixel statistics are summarised).</summary>
    public string Describe()
    {
        static string List(IEnumerable<float> values) => string.Join(", ", values.Select(v => v.ToString("R", CultureInfo.InvariantCulture)));
        if (PixelShape is not { } shape)
        {
            return $"(pixel/255 - mean) / std per channel, mean [{List(Mean)}], std [{List(Std)}]";
        }

        var plane = shape.Height * shape.Width;
        float[] ChannelMeans(IReadOnlyList<float> values) =>
            [.. Enumerable.Range(0, shape.Channels).Select(c => (float)Enumerable.Range(c * plane, plane).Average(i => values[i]))];
        return $"(pixel/255 - mean) / std per pixel over {shape} images; channel averages of the mean [{List(ChannelMeans(Mean))}], " +
               $"of the std [{List(ChannelMeans(Std))}]";
    }

    /// <inheritdoc />
    public bool Equals(InputNormalization? other) =>
        other is not null && PixelShape == other.PixelShape && Mean.SequenceEqual(other.Mean) && Std.SequenceEqual(other.Std);

    /// <inheritdoc />
    public override int GetHashCode()
    {
        var hash = default(HashCode);
        hash.Add(PixelShape);
        foreach (var m in Mean)
        {
            hash.Add(m);
        }

        foreach (var s in Std)
        {
            hash.Add(s);
        }

        return hash.ToHashCode();
    }

    /// <inheritdoc />
    public override string ToString() => PixelShape is null
        ? string.Create(CultureInfo.InvariantCulture, $"mean ({string.Join(", ", Mean)}), std ({string.Join(", ", Std)})")
        : Describe();
}
