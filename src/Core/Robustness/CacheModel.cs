using ScalableCache.Core.Evaluation;
using ScalableCache.Core.Features;
using ScalableCache.Core.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Robustness;

/// <summary>Settings of a <see cref="CacheModel"/>.</summary>
public sealed class CacheModelOptions
{
    /// <summary>
    /// Keys compared with the queries per block (rows); blocks are merged by log-add-exp. Without gradients, memory for one block is
    /// <c>b × KeyBlockSize</c> similarities whatever the number of keys (with gradients, autograd keeps every block). Must be positive.
    /// </summary>
    public int KeyBlockSize { get; set; } = 8192;

    /// <summary>Number of classes C; when <see langword="null"/>, an <see cref="ImageClassifier"/>'s own class count.</summary>
    public int? ClassCount { get; set; }
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
/// <para><b>Log-mass.</b> The keys are held as a copy (detached, on the network's device, in the precision they were given). The
/// similarities are computed in blocks of <see cref="CacheModelOptions.KeyBlockSize"/> keys, each block reduced by the shared kernel
/// <see cref="Evaluation.SimilarityLogMass"/> (the one the stores and the layer search use) and blocks merged by
/// <see cref="LogMass.Merge"/>: stable at any θ, exact gradients (the softmax weights of the keys), and float64 inputs stay float64
/// (finite-difference checks). Classes without keys have <c>L_c = −∞</c>, <c>p_mem = 0</c> and zero gradients. The mixture is
/// <see cref="CacheMixer.Mix"/>.</para>
/// <para><b>Threading and ownership.</b> Not thread-safe (one forward pass at a time, like the network). The network is not
/// owned; the key copies are, and <see cref="Dispose"/> frees them and removes the hooks. Inputs are never disposed.</para>
/// </remarks>
public sealed class CacheModel : IDisposable
{
    private readonly nn.Module<Tensor, Tensor> _network;
    private readonly InputNormalization _normalization;
    private readonly LayerTapExtractor _tap;
    private readonly Tensor _keys;
    private readonly Tensor _labels;
    private readonly int _keyBlockSize;
    private bool _disposed;

    /// <summary>Builds the model over <paramref name="network"/> (not owned) with a copy of the keys.</summary>
    /// <param name="network">The backbone (images → logits), in evaluation mode, whose device the keys are moved to.</param>
    /// <param name="normalization">The backbone's input normalisation (pixels in [0, 1] → network input).</param>
    /// <param name="layers">Tapped layers, in key order (the layers <paramref name="keys"/> were made from).</param>
    /// <param name="keys">Unit keys μ_k <c>[N, D]</c> (float32 or float64; float16 is widened to float32).</param>
    /// <param name="labels">Labels y_k <c>[N]</c> in <c>[0, ClassCount)</c>.</param>
    /// <param name="options">Block size, class count; defaults when <see langword="null"/>.</param>
    public CacheModel(
        nn.Module<Tensor, Tensor> network, InputNormalization normalization, IReadOnlyList<string> layers, Tensor keys, Tensor labels,
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
        ClassCount = options.ClassCount ?? (network as ImageClassifier)?.ClassCount
            ?? throw new ArgumentException("Give CacheModelOptions.ClassCount for a backbone that is not an ImageClassifier.", nameof(options));
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
            var device = network.ParameterDevice();
            _keys = keys.detach().to(dtype, device, copy: true).contiguous().DetachFromDisposeScope();
            _labels = y.to(device).DetachFromDisposeScope();
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
    public nn.Module<Tensor, Tensor> Network => _network;

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
            return nn.functional.softmax(_network.call(x), 1).MoveToOuterDisposeScope();
        }

        var (logits, keys) = _tap.Forward(x);
        var memory = LogMass.ToProbabilities(ClassLogMass(keys, variant.Theta));
        return CacheMixer.Mix(nn.functional.softmax(logits, 1), memory, Math.Min(variant.Lambda, 1)).MoveToOuterDisposeScope();
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
        var q = queries.to(_keys.dtype, _keys.device);
        Tensor? mass = null;
        for (long start = 0; start < _keys.shape[0]; start += _keyBlockSize)
        {
            var n = Math.Min(_keyBlockSize, _keys.shape[0] - start);
            var part = SimilarityLogMass.Compute(q.mm(_keys.narrow(0, start, n).t()), _labels.narrow(0, start, n), ClassCount, [theta])[0];
            mass = mass is null ? part : LogMass.Merge(mass, part);
        }

        return mass!.to(queries.dtype, queries.device).MoveToOuterDisposeScope();
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
        _keys.Dispose();
        _labels.Dispose();
    }
}
