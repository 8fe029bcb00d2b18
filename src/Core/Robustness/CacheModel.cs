using ScalableCache.Core.Features;
using ScalableCache.Core.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Robustness;

/// <summary>Settings of a <see cref="CacheModel"/>.</summary>
public sealed class CacheModelOptions
{
    /// <summary>
    /// Keys compared with the queries per block (rows). Memory for one block is <c>b × KeyBlockSize</c> similarities (plus the
    /// autograd buffers of the same size when gradients are taken), whatever the number of keys. Must be positive.
    /// </summary>
    public int KeyBlockSize { get; set; } = 8192;
}

/// <summary>
/// The differentiable cache model of Orhan (2018) on one backbone, for attacks and Jacobians:
/// <c>p(y|x) = (1 − λ) softmax(net(x)) + λ p_mem(y|x)</c> with <c>p_mem = softmax_c(L_c)</c>,
/// <c>L_c = log Σ_{k: y_k = c} exp(θ φ(x)·μ_k)</c>, where gradients flow to the input through BOTH terms.
/// </summary>
/// <remarks>
/// <para><b>Input domain.</b> <see cref="Probabilities"/> takes images in the <c>[0, 1]</c> pixel domain (<c>x / 255</c>,
/// <c>[b, C, H, W]</c>, float32 or float64) and applies the backbone's <see cref="InputNormalization"/> itself (in the input's
/// precision), so attacks perturb and clip pixels and gradients are with respect to pixels.</para>
/// <para><b>Keys.</b> The query key φ(x) is made by a gradient-carrying tap of <see cref="Layers"/>: each activation is flattened
/// and L2-normalised, the pieces are concatenated and L2-normalised again — exactly as <see cref="Features.LayerTapExtractor"/>
/// makes the stored keys μ_k.</para>
/// <para><b>Log-mass.</b> The keys are held grouped by class (a copy, detached, on the network's device, in the precision they were
/// given). For every class the similarities are computed in blocks of <see cref="CacheModelOptions.KeyBlockSize"/> keys, each
/// block reduced with <c>logsumexp</c> and blocks merged with <c>logaddexp</c>: stable at any θ, exact gradients (the softmax
/// weights of the keys), and the input's precision is kept (float64 for finite-difference checks). Classes without keys have
/// <c>L_c = −∞</c> and <c>p_mem = 0</c>. This is the kernel of <see cref="Evaluation.SimilarityLogMass"/> restated per class
/// so that no class is ever absent from a block (whose −∞ would give NaN gradients when blocks merge).</para>
/// <para><b>Threading and ownership.</b> Not thread-safe (one forward pass at a time, like the network). The network is not
/// owned; the key copies are, and <see cref="Dispose"/> frees them and removes the hooks. Inputs are never disposed.</para>
/// </remarks>
public sealed class CacheModel : IDisposable
{
    private readonly ImageClassifier _network;
    private readonly InputNormalization _normalization;
    private readonly LayerTapExtractor _tap;
    private readonly Tensor?[] _classKeys;
    private readonly int _keyBlockSize;
    private bool _disposed;

    /// <summary>Builds the model over <paramref name="network"/> (not owned) with a copy of the keys.</summary>
    /// <param name="network">The backbone, in evaluation mode, whose device and precision the keys are moved to.</param>
    /// <param name="normalization">The backbone's input normalisation (pixels in [0, 1] → network input).</param>
    /// <param name="layers">Tapped layers, in key order (the layers <paramref name="keys"/> were made from).</param>
    /// <param name="keys">Unit keys μ_k <c>[N, D]</c> (float32 or float64; float16 is widened to float32).</param>
    /// <param name="labels">Labels y_k <c>[N]</c> in <c>[0, ClassCount)</c>.</param>
    /// <param name="options">Block size; defaults when <see langword="null"/>.</param>
    public CacheModel(
        ImageClassifier network, InputNormalization normalization, IReadOnlyList<string> layers, Tensor keys, Tensor labels,
        CacheModelOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(network);
        ArgumentNullException.ThrowIfNull(normalization);
        ArgumentNullException.ThrowIfNull(layers);
        ArgumentNullException.ThrowIfNull(keys);
        ArgumentNullException.ThrowIfNull(labels);
        options ??= new CacheModelOptions();
        ArgumentOutOfRangeException.ThrowIfLessThan(options.KeyBlockSize, 1, nameof(options));
        if (keys.dim() != 2 || keys.shape[0] == 0)
        {
            throw new ArgumentException($"keys must be a non-empty [N, D] matrix; got [{string.Join(", ", keys.shape)}].", nameof(keys));
        }

        if (labels.dim() != 1 || labels.shape[0] != keys.shape[0])
        {
            throw new ArgumentException($"labels has shape [{string.Join(", ", labels.shape)}]; expected [{keys.shape[0]}].", nameof(labels));
        }

        _network = network;
        _normalization = normalization;
        _keyBlockSize = options.KeyBlockSize;
        ClassCount = network.ClassCount;
        Dimension = keys.shape[1];
        KeyCount = keys.shape[0];

        using (var scope = NewDisposeScope())
        using (no_grad())
        {
            var y = labels.detach().cpu().to_type(ScalarType.Int64);
            if (y.lt(0).any().item<bool>() || y.ge(ClassCount).any().item<bool>())
            {
                throw new ArgumentException($"labels must lie in [0, {ClassCount}).", nameof(labels));
            }

            var dtype = keys.dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
            var device = network.ParameterDevice;
            var source = keys.detach();
            _classKeys = new Tensor?[ClassCount];
            for (var c = 0; c < ClassCount; c++)
            {
                var rows = nonzero(y.eq(c)).flatten();
                if (rows.shape[0] > 0)
                {
                    _classKeys[c] = source.index_select(0, rows.to(source.device)).to(dtype, device).contiguous().DetachFromDisposeScope();
                }
            }
        }

        try
        {
            _tap = new LayerTapExtractor(network, layers);
        }
        catch
        {
            DisposeKeys();
            throw;
        }
    }

    /// <summary>Number of classes C.</summary>
    public int ClassCount { get; }

    /// <summary>Key dimension D.</summary>
    public long Dimension { get; }

    /// <summary>Number of keys N.</summary>
    public long KeyCount { get; }

    /// <summary>Tapped layers, in key order.</summary>
    public IReadOnlyList<string> Layers => _tap.Layers;

    /// <summary>The backbone.</summary>
    public ImageClassifier Network => _network;

    /// <summary>
    /// Class probabilities <c>[b, C]</c> of <paramref name="variant"/> for pixels <c>[b, C, H, W]</c> in <c>[0, 1]</c>, in the
    /// autograd graph of <paramref name="pixels"/> when gradients are enabled. Joins the caller's dispose scope.
    /// </summary>
    public Tensor Probabilities(Tensor pixels, CacheVariant variant)
    {
        ArgumentNullException.ThrowIfNull(pixels);
        ArgumentNullException.ThrowIfNull(variant);
        ObjectDisposedException.ThrowIf(_disposed, this);
        variant.Validate();
        using var scope = NewDisposeScope();
        var x = Normalize(pixels);
        if (!variant.UsesMemory)
        {
            return nn.functional.softmax(_network.Logits(x), 1).MoveToOuterDisposeScope();
        }

        var (logits, keys) = _tap.Forward(x);
        var memory = nn.functional.softmax(ClassLogMass(keys, variant.Theta), 1);
        if (variant.Lambda >= 1)
        {
            return memory.MoveToOuterDisposeScope();
        }

        var network = nn.functional.softmax(logits, 1);
        return (network * (1 - variant.Lambda) + memory * variant.Lambda).MoveToOuterDisposeScope();
    }

    /// <summary>The classifier <c>pixels → probabilities</c> of <paramref name="variant"/>, for the attacks.</summary>
    public Func<Tensor, Tensor> Classifier(CacheVariant variant)
    {
        ArgumentNullException.ThrowIfNull(variant);
        variant.Validate();
        return pixels => Probabilities(pixels, variant);
    }

    /// <summary>The unit query keys φ(x) <c>[b, D]</c> of pixels in <c>[0, 1]</c> (differentiable). Joins the caller's scope.</summary>
    public Tensor QueryKeys(Tensor pixels)
    {
        ArgumentNullException.ThrowIfNull(pixels);
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var scope = NewDisposeScope();
        var (_, keys) = _tap.Forward(Normalize(pixels));
        return keys.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Per-class log-mass <c>L_c = log Σ_{k: y_k = c} exp(θ q·μ_k)</c> <c>[b, C]</c> of queries <c>[b, D]</c> (differentiable
    /// with respect to the queries; −∞ for classes without keys). Joins the caller's scope.
    /// </summary>
    public Tensor ClassLogMass(Tensor queries, double theta)
    {
        ArgumentNullException.ThrowIfNull(queries);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!(theta > 0 && double.IsFinite(theta)))
        {
            throw new ArgumentOutOfRangeException(nameof(theta), theta, "θ must be finite and positive.");
        }

        if (queries.dim() != 2 || queries.shape[1] != Dimension)
        {
            throw new ArgumentException($"queries has shape [{string.Join(", ", queries.shape)}]; expected [b, {Dimension}].", nameof(queries));
        }

        using var scope = NewDisposeScope();
        var b = queries.shape[0];
        var perClass = new Tensor[ClassCount];
        for (var c = 0; c < ClassCount; c++)
        {
            var keys = _classKeys[c];
            if (keys is null)
            {
                perClass[c] = full(b, double.NegativeInfinity, dtype: queries.dtype, device: queries.device);
                continue;
            }

            var q = queries.to(keys.dtype, keys.device);
            Tensor? mass = null;
            for (long start = 0; start < keys.shape[0]; start += _keyBlockSize)
            {
                var block = keys.narrow(0, start, Math.Min(_keyBlockSize, keys.shape[0] - start));
                var part = q.mm(block.t()).mul(theta).logsumexp(1);
                mass = mass is null ? part : mass.logaddexp(part);
            }

            perClass[c] = mass!.to(queries.dtype, queries.device);
        }

        return stack(perClass, 1).MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _tap.Dispose();
        DisposeKeys();
    }

    private Tensor Normalize(Tensor pixels)
    {
        if (pixels.dim() != 4 || pixels.shape[1] != _normalization.Channels)
        {
            throw new ArgumentException(
                $"Expected pixels [b, {_normalization.Channels}, H, W] in [0, 1]; got [{string.Join(", ", pixels.shape)}].", nameof(pixels));
        }

        if (!pixels.is_floating_point())
        {
            throw new ArgumentException($"Expected floating-point pixels in [0, 1]; got {pixels.dtype}.", nameof(pixels));
        }

        var mean = tensor(_normalization.Mean.Select(m => (double)m).ToArray(), [1, _normalization.Channels, 1, 1], dtype: pixels.dtype, device: pixels.device);
        var std = tensor(_normalization.Std.Select(s => (double)s).ToArray(), [1, _normalization.Channels, 1, 1], dtype: pixels.dtype, device: pixels.device);
        return (pixels - mean) / std;
    }

    private void DisposeKeys()
    {
        for (var c = 0; c < _classKeys.Length; c++)
        {
            _classKeys[c]?.Dispose();
            _classKeys[c] = null;
        }
    }
}
