using System.Globalization;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Models;

/// <summary>
/// Per-channel input normalisation a model was trained with: pixels are scaled to <c>[0, 1]</c> (<c>x / 255</c>), then
/// <c>(x − Mean[c]) / Std[c]</c>, exactly as torchvision's <c>ToTensor</c> + <c>Normalize</c>.
/// </summary>
public sealed record InputNormalization
{
    /// <summary>The ImageNet statistics used by the public CIFAR ResNets: mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).</summary>
    public static InputNormalization ImageNet { get; } = new([0.485f, 0.456f, 0.406f], [0.229f, 0.224f, 0.225f]);

    /// <summary>Creates the normalisation; both lists need one finite entry per channel and every std must be positive.</summary>
    public InputNormalization(IReadOnlyList<float> mean, IReadOnlyList<float> std)
    {
        ArgumentNullException.ThrowIfNull(mean);
        ArgumentNullException.ThrowIfNull(std);
        if (mean.Count == 0 || mean.Count != std.Count)
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
    }

    /// <summary>Per-channel mean on the <c>[0, 1]</c> scale.</summary>
    public IReadOnlyList<float> Mean { get; }

    /// <summary>Per-channel standard deviation on the <c>[0, 1]</c> scale.</summary>
    public IReadOnlyList<float> Std { get; }

    /// <summary>Number of channels.</summary>
    public int Channels => Mean.Count;

    /// <summary>
    /// Normalises images <c>[b, C, H, W]</c> on <paramref name="device"/> (the images' device when <see langword="null"/>):
    /// uint8 pixels are divided by 255 first; floating-point input is taken to be in <c>[0, 1]</c> already; other types are rejected.
    /// Returns a new float32 tensor owned by the caller; the input is not disposed.
    /// </summary>
    public Tensor Normalize(Tensor images, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(images);
        if (images.dim() != 4 || images.shape[1] != Channels)
        {
            throw new ArgumentException(
                $"Expected images [b, {Channels}, H, W]; got [{string.Join(", ", images.shape)}].", nameof(images));
        }

        if (images.dtype != ScalarType.Byte && !images.is_floating_point())
        {
            throw new ArgumentException($"Expected uint8 pixels or floating-point images in [0, 1]; got {images.dtype}.", nameof(images));
        }

        using var scope = NewDisposeScope();
        var target = device ?? images.device;
        var x = images.to(target);
        x = x.dtype == ScalarType.Byte ? x.to_type(ScalarType.Float32).div_(255f) : x.to_type(ScalarType.Float32);
        var mean = tensor(Mean.ToArray(), [1, Channels, 1, 1], device: target);
        var std = tensor(Std.ToArray(), [1, Channels, 1, 1], device: target);
        return (x - mean).div_(std).MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    public bool Equals(InputNormalization? other) =>
        other is not null && Mean.SequenceEqual(other.Mean) && Std.SequenceEqual(other.Std);

    /// <inheritdoc />
    public override int GetHashCode()
    {
        var hash = default(HashCode);
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
    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"mean ({string.Join(", ", Mean)}), std ({string.Join(", ", Std)})");
}
