using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Robustness;

/// <summary>
/// Per-channel Gaussian blur with the semantics of <c>scipy.ndimage.gaussian_filter</c> (what Foolbox 1 uses): a separable
/// kernel <c>exp(−t² / 2σ²)</c> normalised over <c>t ∈ [−r, r]</c>, <c>r = ⌊truncate·σ + 0.5⌋</c>, and <c>reflect</c> borders
/// (<c>d c b a | a b c d | d c b a</c>, repeated as often as the radius needs). Runs as two grouped <c>conv2d</c> passes.
/// </summary>
public static class GaussianBlur
{
    /// <summary>scipy's default truncation, in standard deviations.</summary>
    public const double DefaultTruncate = 4.0;

    /// <summary>
    /// Blurs image i of <paramref name="images"/> <c>[n, C, H, W]</c> with σ = <paramref name="sigmas"/>[i] pixels along both
    /// spatial axes (σ = 0 leaves the image unchanged). Keeps the input's precision and device; the result joins the caller's scope.
    /// </summary>
    public static Tensor Blur(Tensor images, IReadOnlyList<double> sigmas, double truncate = DefaultTruncate)
    {
        ArgumentNullException.ThrowIfNull(images);
        ArgumentNullException.ThrowIfNull(sigmas);
        if (images.dim() != 4 || sigmas.Count != images.shape[0])
        {
            throw new ArgumentException($"Expected images [n, C, H, W] and n σ values; got [{string.Join(", ", images.shape)}] and {sigmas.Count}.");
        }

        if (sigmas.Any(s => !(s >= 0 && double.IsFinite(s))) || !(truncate > 0 && double.IsFinite(truncate)))
        {
            throw new ArgumentOutOfRangeException(nameof(sigmas), "σ must be finite and non-negative, truncate finite and positive.");
        }

        using var scope = NewDisposeScope();
        var (n, channels, height, width) = (images.shape[0], images.shape[1], images.shape[2], images.shape[3]);
        if (n == 0)
        {
            return images.clone().MoveToOuterDisposeScope();
        }

        var radii = sigmas.Select(s => Radius(s, truncate)).ToArray();
        var radius = radii.Max();
        var size = (2 * radius) + 1;
        var weights = new double[n * size];
        for (var i = 0; i < n; i++)
        {
            var kernel = Kernel(sigmas[i], radii[i]);
            kernel.CopyTo(weights, (i * size) + radius - radii[i]);
        }

        // One kernel per image, repeated for its channels: [n·C, 1, K] for a grouped convolution over all images at once.
        var k = tensor(weights, [n, 1, 1, size], dtype: images.dtype, device: images.device)
            .expand(n, channels, 1, size).reshape(n * channels, 1, 1, size);
        var rowsIndex = tensor(ReflectIndex(height, radius), device: images.device);
        var colsIndex = tensor(ReflectIndex(width, radius), device: images.device);
        var padded = images.index_select(2, rowsIndex).index_select(3, colsIndex).reshape(1, n * channels, height + (2 * radius), width + (2 * radius));
        var vertical = nn.functional.conv2d(padded, k.transpose(2, 3), groups: n * channels);
        var blurred = nn.functional.conv2d(vertical, k, groups: n * channels);
        return blurred.reshape(n, channels, height, width).MoveToOuterDisposeScope();
    }

    /// <summary>The kernel radius scipy uses: <c>⌊truncate·σ + 0.5⌋</c>.</summary>
    public static int Radius(double sigma, double truncate = DefaultTruncate) => (int)((truncate * sigma) + 0.5);

    /// <summary>The normalised 1-D kernel of length <c>2r + 1</c> (a unit impulse when σ = 0).</summary>
    public static double[] Kernel(double sigma, int radius)
    {
        var kernel = new double[(2 * radius) + 1];
        if (sigma <= 0)
        {
            kernel[radius] = 1;
            return kernel;
        }

        for (var t = -radius; t <= radius; t++)
        {
            kernel[t + radius] = Math.Exp(-0.5 * t * t / (sigma * sigma));
        }

        var sum = kernel.Sum();
        for (var i = 0; i < kernel.Length; i++)
        {
            kernel[i] /= sum;
        }

        return kernel;
    }

    /// <summary>Source index of each position of a length-<paramref name="length"/> axis padded by <paramref name="radius"/> on both sides (scipy <c>reflect</c>).</summary>
    public static long[] ReflectIndex(long length, int radius)
    {
        var index = new long[length + (2 * radius)];
        var period = 2 * length;
        for (var p = 0; p < index.Length; p++)
        {
            var m = (((p - radius) % period) + period) % period;
            index[p] = m < length ? m : period - 1 - m;
        }

        return index;
    }
}

/// <summary>Settings of <see cref="GaussianBlurAttack"/>.</summary>
public sealed class GaussianBlurOptions
{
    /// <summary>Number of σ values: <c>σ = ε · max(H, W)</c> for ε in <c>linspace(0, 1, Steps + 1)[1:]</c> (Foolbox 1 default: 1000).</summary>
    public int Steps { get; set; } = 1000;

    /// <summary>Kernel truncation in standard deviations (scipy default 4).</summary>
    public double Truncate { get; set; } = GaussianBlur.DefaultTruncate;

    /// <summary>Candidates per forward pass.</summary>
    public int BatchSize { get; set; } = 64;

    internal void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(Steps, 1, nameof(Steps));
        ArgumentOutOfRangeException.ThrowIfLessThan(BatchSize, 1, nameof(BatchSize));
        if (!(Truncate > 0 && double.IsFinite(Truncate)))
        {
            throw new ArgumentOutOfRangeException(nameof(Truncate), Truncate, "Truncate must be finite and positive.");
        }
    }
}

/// <summary>
/// Foolbox 1 <c>GaussianBlurAttack</c>: blur every channel with σ increasing from 0 to <c>max(H, W)</c> over the grid (clipping
/// to [0, 1]) until the predicted label differs from the reference label. <see cref="AttackResult.Strength"/> is σ in pixels.
/// </summary>
public sealed class GaussianBlurAttack(GaussianBlurOptions? options = null) : IAdversarialAttack
{
    private readonly GaussianBlurOptions _options = options ?? new GaussianBlurOptions();

    /// <inheritdoc />
    public string Name => "blur";

    /// <inheritdoc />
    public AttackResult Run(Func<Tensor, Tensor> classifier, Tensor pixels, Tensor labels, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(classifier);
        AttackEngine.CheckInputs(pixels, labels);
        _options.Validate();
        using var scope = NewDisposeScope();
        var n = (int)pixels.shape[0];
        var x = pixels.detach();
        var y = AttackEngine.Labels(labels);
        var size = Math.Max(x.shape[2], x.shape[3]);
        var sigmas = AttackEngine.Grid(1, _options.Steps).Select(e => e * size).ToArray();

        Tensor Candidates(int image, int start, int count) =>
            GaussianBlur.Blur(x[image].unsqueeze(0).expand(count, -1, -1, -1), sigmas.AsSpan(start, count).ToArray(), _options.Truncate).clamp(0, 1);

        var first = AttackEngine.FirstSuccess(classifier, y, Enumerable.Repeat(sigmas.Length, n).ToArray(), Candidates, _options.BatchSize, cancellationToken);
        var adversarial = x.clone();
        var strength = new double[n];
        for (var i = 0; i < n; i++)
        {
            strength[i] = first[i] >= 0 ? sigmas[first[i]] : double.NaN;
            if (first[i] >= 0)
            {
                adversarial[i].copy_(Candidates(i, first[i], 1)[0]);
            }
        }

        var success = first.Select(f => f >= 0).ToArray();
        var rho = AdversarialDistance.Rho(x, adversarial);
        return new AttackResult(Name, adversarial, success, [.. rho.Select((r, i) => success[i] ? r : double.NaN)], strength);
    }
}
