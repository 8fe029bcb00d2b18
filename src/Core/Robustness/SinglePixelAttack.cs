using ScalableCache.Core.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Robustness;

/// <summary>Which extreme values <see cref="SinglePixelAttack"/> writes into a pixel.</summary>
public enum PixelExtremes
{
    /// <summary>The bounds of the pixel domain, 0 and 1 (Foolbox 1: <c>a.bounds()</c>).</summary>
    Bounds,

    /// <summary>The smallest and largest value of the attacked image (over all channels).</summary>
    ImageRange,
}

/// <summary>Settings of <see cref="SinglePixelAttack"/>.</summary>
public sealed class SinglePixelOptions
{
    /// <summary>Pixels tried per image at most (Foolbox 1 default: 1000); each is tried with the low then the high value.</summary>
    public int MaxPixels { get; set; } = 1000;

    /// <summary>Seed of the pixel order: image i uses the permutation of seed <c>Seed · 1,000,003 + i</c>.</summary>
    public int Seed { get; set; }

    /// <summary>Which low and high values are written (default: the [0, 1] bounds, as Foolbox 1).</summary>
    public PixelExtremes Values { get; set; } = PixelExtremes.Bounds;

    /// <summary>Candidates per forward pass.</summary>
    public int BatchSize { get; set; } = 128;

    internal void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxPixels, 1, nameof(MaxPixels));
        ArgumentOutOfRangeException.ThrowIfLessThan(BatchSize, 1, nameof(BatchSize));
    }
}

/// <summary>
/// Foolbox 1 <c>SinglePixelAttack</c>: pixels (one spatial location, all channels) are taken in a seeded random order; each is
/// set to the low value, then to the high value, until the predicted label differs from the reference label. At most
/// <see cref="SinglePixelOptions.MaxPixels"/> pixels are tried. <see cref="AttackResult.Strength"/> is the number of pixels tried.
/// </summary>
public sealed class SinglePixelAttack(SinglePixelOptions? options = null) : IAdversarialAttack
{
    private readonly SinglePixelOptions _options = options ?? new SinglePixelOptions();

    /// <inheritdoc />
    public string Name => "pixel";

    /// <summary>The pixel order (row-major indices <c>y · W + x</c>) tried on image <paramref name="image"/>.</summary>
    public IReadOnlyList<int> PixelOrder(int image, int height, int width)
    {
        var permutation = SplitMix64.Permutation(height * width, unchecked((_options.Seed * 1_000_003) + image));
        return permutation.Length > _options.MaxPixels ? permutation[.._options.MaxPixels] : permutation;
    }

    /// <inheritdoc />
    public AttackResult Run(Func<Tensor, Tensor> classifier, Tensor pixels, Tensor labels, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(classifier);
        AttackEngine.CheckInputs(pixels, labels);
        _options.Validate();
        using var scope = NewDisposeScope();
        var n = (int)pixels.shape[0];
        var (height, width) = ((int)pixels.shape[2], (int)pixels.shape[3]);
        var x = pixels.detach();
        var y = AttackEngine.Labels(labels);
        var orders = Enumerable.Range(0, n).Select(i => PixelOrder(i, height, width).ToArray()).ToArray();
        var (low, high) = Extremes(x);

        Tensor Candidates(int image, int start, int count)
        {
            var location = new long[count];
            var value = new double[count];
            for (var j = 0; j < count; j++)
            {
                location[j] = orders[image][(start + j) / 2];
                value[j] = (start + j) % 2 == 0 ? low[image] : high[image];
            }

            var mask = nn.functional.one_hot(tensor(location, device: x.device), height * width).view(count, 1, height, width).to_type(ScalarType.Bool);
            var values = tensor(value, [count, 1, 1, 1], dtype: x.dtype, device: x.device);
            return where(mask, values.expand(count, x.shape[1], height, width), x[image].unsqueeze(0).expand(count, -1, -1, -1));
        }

        var first = AttackEngine.FirstSuccess(classifier, y, orders.Select(o => 2 * o.Length).ToArray(), Candidates, _options.BatchSize, cancellationToken);
        var adversarial = x.clone();
        var strength = new double[n];
        for (var i = 0; i < n; i++)
        {
            strength[i] = first[i] >= 0 ? (first[i] / 2) + 1 : double.NaN;
            if (first[i] >= 0)
            {
                adversarial[i].copy_(Candidates(i, first[i], 1)[0]);
            }
        }

        var success = first.Select(f => f >= 0).ToArray();
        var rho = AdversarialDistance.Rho(x, adversarial);
        return new AttackResult(Name, adversarial, success, [.. rho.Select((r, i) => success[i] ? r : double.NaN)], strength);
    }

    private (double[] Low, double[] High) Extremes(Tensor x)
    {
        var n = (int)x.shape[0];
        if (_options.Values == PixelExtremes.Bounds)
        {
            return (new double[n], Enumerable.Repeat(1.0, n).ToArray());
        }

        using var scope = NewDisposeScope();
        var flat = x.flatten(1).to_type(ScalarType.Float64).cpu();
        return (flat.amin([1]).data<double>().ToArray(), flat.amax([1]).data<double>().ToArray());
    }
}
