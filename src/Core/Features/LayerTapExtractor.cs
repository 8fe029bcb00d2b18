using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Features;

/// <summary>Keys and classifier outputs of one forward pass. All three tensors are owned by the caller.</summary>
/// <param name="Keys">Cache keys <c>[b, D]</c>, float32, unit L2 norm per row.</param>
/// <param name="Logits">Classifier logits <c>[b, C]</c> of the same pass.</param>
/// <param name="Probabilities"><c>softmax(Logits)</c> <c>[b, C]</c>.</param>
public sealed record TapResult(Tensor Keys, Tensor Logits, Tensor Probabilities) : IDisposable
{
    /// <summary>Disposes the three tensors.</summary>
    public void Dispose()
    {
        Keys.Dispose();
        Logits.Dispose();
        Probabilities.Dispose();
    }
}

/// <summary>
/// Taps named modules of any TorchSharp module <c>Module&lt;Tensor, Tensor&gt;</c> (images → logits) during ONE forward pass and
/// turns their activations into cache keys (Orhan 2018) with <see cref="KeyRecipe.Compose(IReadOnlyList{Tensor}, KeyNormalization)"/>:
/// by default each tapped activation is flattened per example and L2-normalised, the pieces are concatenated in tap order, and the
/// concatenation is L2-normalised again. The same pass yields the logits and softmax probabilities.
/// </summary>
/// <remarks>
/// Forward hooks are registered at construction and removed by <see cref="Dispose"/>; they capture only during
/// <see cref="Extract"/>, so other forward passes of the same model meanwhile cost nothing. Not thread-safe: one
/// <see cref="Extract"/> at a time per instance (the model itself allows no concurrent passes either). Inputs are never disposed.
/// </remarks>
public sealed class LayerTapExtractor : IDisposable
{
    private readonly nn.Module<Tensor, Tensor> _model;
    private readonly string[] _layers;
    private readonly Tensor?[] _captured;
    private readonly int[] _fired;
    private readonly List<Action> _removers = [];
    private bool _disposed;
    private bool _active;
    private int _forwardBatchSize = DefaultForwardBatchSize;

    /// <summary>
    /// The default <see cref="ForwardBatchSize"/>: 128 images. On a 2-core Xeon with 2 MiB of L2 per core the CIFAR ResNets ran
    /// 1.1–1.4× as fast in slices of 128 as in batches of 256, with bit-identical outputs; 512 was slower still.
    /// </summary>
    public const int DefaultForwardBatchSize = 128;

    /// <summary>Creates the extractor and hooks the named modules of <paramref name="model"/>.</summary>
    /// <param name="model">The model, images → logits (not owned: the caller disposes it after this extractor).</param>
    /// <param name="layers">Module names to tap, in key order, at least one, no duplicates (see <see cref="LayerInspector.ListLayers"/>); a name
    /// ending in <see cref="PooledSuffix"/> taps the module's globally average-pooled output.</param>
    /// <param name="keyNormalization">How the activations become one key.</param>
    /// <exception cref="ArgumentException">An unknown or repeated layer name; the message lists the valid names.</exception>
    public LayerTapExtractor(nn.Module<Tensor, Tensor> model, IEnumerable<string> layers, KeyNormalization keyNormalization = KeyNormalization.PerLayer)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(layers);
        _model = model;
        KeyNormalization = keyNormalization;
        _layers = [.. layers.Select(l => l?.Trim() ?? string.Empty)];
        if (_layers.Length == 0)
        {
            throw new ArgumentException("At least one layer must be tapped.", nameof(layers));
        }

        var duplicate = _layers.GroupBy(l => l, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null)
        {
            throw new ArgumentException($"Layer '{duplicate.Key}' is tapped twice.", nameof(layers));
        }

        var modules = model.named_modules()
            .Where(m => m.module is nn.Module<Tensor, Tensor>)
            .ToDictionary(m => m.name, m => (nn.Module<Tensor, Tensor>)m.module, StringComparer.Ordinal);
        var unknown = _layers.Where(l => !modules.ContainsKey(ModuleName(l))).ToList();
        if (unknown.Count > 0)
        {
            throw new ArgumentException(
                $"Unknown layer{(unknown.Count > 1 ? "s" : string.Empty)} {string.Join(", ", unknown.Select(u => $"'{u}'"))} in model {model.GetName()}. " +
                $"Valid layers: {string.Join(", ", modules.Keys)}.",
                nameof(layers));
        }

        _captured = new Tensor?[_layers.Length];
        _fired = new int[_layers.Length];
        for (var i = 0; i < _layers.Length; i++)
        {
            var slot = i;
            var hook = modules[ModuleName(_layers[i])].register_forward_hook((_, _, output) =>
            {
                Capture(slot, output);
                return output;
            });
            _removers.Add(hook.remove);
        }
    }

    /// <summary>
    /// Suffix of a pooled tap: <c>layer4.1:avg</c> taps module <c>layer4.1</c> and averages its output over the spatial dimensions
    /// (global average pooling, <c>[b, C, H, W]</c> → <c>[b, C]</c>) before it becomes part of a key, as Orhan's ImageNet caches pool
    /// the last blocks of ResNet-50. An output without spatial dimensions is used as it is.
    /// </summary>
    public const string PooledSuffix = ":avg";

    /// <summary>The module a layer reference taps: the name without <see cref="PooledSuffix"/>.</summary>
    public static string ModuleName(string layer)
    {
        ArgumentNullException.ThrowIfNull(layer);
        return IsPooled(layer) ? layer[..^PooledSuffix.Length] : layer;
    }

    /// <summary>Whether a layer reference asks for the globally average-pooled output (<see cref="PooledSuffix"/>).</summary>
    public static bool IsPooled(string layer)
    {
        ArgumentNullException.ThrowIfNull(layer);
        return layer.EndsWith(PooledSuffix, StringComparison.Ordinal);
    }

    /// <summary>The model tapped.</summary>
    public nn.Module<Tensor, Tensor> Model => _model;

    /// <summary>How the activations become one key.</summary>
    public KeyNormalization KeyNormalization { get; }

    /// <summary>Tapped module names, in key order.</summary>
    public IReadOnlyList<string> Layers => _layers;

    /// <summary>
    /// Most images a model in eval mode sees in one call (<see cref="ForwardActivations"/>); default
    /// <see cref="DefaultForwardBatchSize"/>. Larger batches are run in slices of this many, with the same outputs.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Set to less than 1.</exception>
    public int ForwardBatchSize
    {
        get => _forwardBatchSize;
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegativeOrZero(value);
            _forwardBatchSize = value;
        }
    }

    /// <summary>
    /// Runs one forward pass on normalised images <c>[b, C, H, W]</c> (on the model's device) under <c>no_grad</c> and returns
    /// the keys <c>[b, D]</c>, logits and probabilities of that pass, on the model's device.
    /// </summary>
    /// <exception cref="InvalidOperationException">A tapped module did not run exactly once in the pass.</exception>
    public TapResult Extract(Tensor images)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (logits, keys) = Forward(images);
        var probabilities = nn.functional.softmax(logits, 1);
        return new TapResult(keys.MoveToOuterDisposeScope(), logits.MoveToOuterDisposeScope(), probabilities.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// One forward pass on normalised images <c>[b, C, H, W]</c> under the caller's gradient mode: the logits and the keys
    /// <c>[b, D]</c>, built as <see cref="Extract"/> builds them, and both in the autograd graph of <paramref name="images"/> when
    /// gradients are enabled (white-box attacks and Jacobians differentiate through them). Both join the caller's dispose scope.
    /// </summary>
    /// <exception cref="InvalidOperationException">A tapped module did not run exactly once in the pass.</exception>
    public (Tensor Logits, Tensor Keys) Forward(Tensor images)
    {
        using var scope = NewDisposeScope();
        var (logits, activations) = ForwardActivations(images);
        var keys = KeyRecipe.Compose(activations, KeyNormalization);
        return (logits.MoveToOuterDisposeScope(), keys.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// One forward pass on normalised images under the caller's gradient mode: the logits and each tapped layer's activation
    /// flattened per example (<c>[b, D_l]</c>, in <see cref="Layers"/> order). All join the caller's dispose scope.
    /// </summary>
    /// <remarks>
    /// A model in eval mode sees at most <see cref="ForwardBatchSize"/> images per call: a larger batch goes through it in slices and
    /// the slices' outputs are concatenated. That changes no value (in eval mode an image's outputs do not depend on the other images
    /// of its batch) but keeps each layer's activations small enough to stay in the cores' caches. A model in training mode (batch
    /// statistics) always sees the whole batch.
    /// </remarks>
    /// <exception cref="InvalidOperationException">A tapped module did not run exactly once in the pass.</exception>
    public (Tensor Logits, Tensor[] Activations) ForwardActivations(Tensor images)
    {
        ArgumentNullException.ThrowIfNull(images);
        ObjectDisposedException.ThrowIf(_disposed, this);
        var count = images.dim() > 0 ? images.shape[0] : 0;
        if (count <= ForwardBatchSize || _model.training)
        {
            return ForwardOnce(images);
        }

        using var scope = NewDisposeScope();
        var logits = new List<Tensor>();
        var parts = _layers.Select(_ => new List<Tensor>()).ToArray();
        for (long start = 0; start < count; start += ForwardBatchSize)
        {
            var (sliceLogits, sliceParts) = ForwardOnce(images.narrow(0, start, Math.Min(ForwardBatchSize, count - start)));
            logits.Add(sliceLogits);
            for (var i = 0; i < parts.Length; i++)
            {
                parts[i].Add(sliceParts[i]);
            }
        }

        return (cat(logits, 0).MoveToOuterDisposeScope(), [.. parts.Select(p => cat(p, 0).MoveToOuterDisposeScope())]);
    }

    private (Tensor Logits, Tensor[] Activations) ForwardOnce(Tensor images)
    {
        Array.Clear(_fired);
        _active = true;
        try
        {
            using var scope = NewDisposeScope();
            var logits = _model.call(images);
            var parts = new Tensor[_layers.Length];
            for (var i = 0; i < _layers.Length; i++)
            {
                if (_fired[i] != 1 || _captured[i] is null)
                {
                    throw new InvalidOperationException(
                        $"Tapped layer '{_layers[i]}' ran {_fired[i]} time(s) in one forward pass; a tap needs a module that runs exactly once.");
                }

                var activation = _captured[i]!;
                _captured[i] = null;
                scope.Attach(activation);
                var tapped = IsPooled(_layers[i]) && activation.dim() > 2
                    ? activation.mean([.. Enumerable.Range(2, (int)activation.dim() - 2).Select(d => (long)d)])
                    : activation;
                parts[i] = tapped.reshape(activation.shape[0], -1).MoveToOuterDisposeScope();
            }

            return (logits.MoveToOuterDisposeScope(), parts);
        }
        finally
        {
            _active = false;
            ReleaseCaptured();
        }
    }

    /// <summary>Removes the hooks. The model stays usable.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        foreach (var remove in _removers)
        {
            remove();
        }

        ReleaseCaptured();
    }

    private void Capture(int slot, Tensor output)
    {
        // Forward passes outside Extract (e.g. a plain Logits call on the shared model) are not captured.
        if (!_active)
        {
            return;
        }

        _fired[slot]++;
        _captured[slot]?.Dispose();

        // The module's own dispose scope frees its output when its caller's forward returns, so keep an alias outside every
        // scope. An alias is a view: it keeps the autograd history for Forward's gradients.
        var alias = output.alias();
        alias.DetachFromDisposeScope();
        _captured[slot] = alias;
    }

    private void ReleaseCaptured()
    {
        for (var i = 0; i < _captured.Length; i++)
        {
            _captured[i]?.Dispose();
            _captured[i] = null;
        }
    }
}
