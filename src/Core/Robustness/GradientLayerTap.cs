using ScalableCache.Core.Features;
using ScalableCache.Core.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Robustness;

/// <summary>
/// The gradient-carrying counterpart of <see cref="LayerTapExtractor"/>: forward hooks on named modules capture their outputs
/// during <see cref="Run"/> WITHOUT <c>no_grad</c>, so the returned activations stay in the autograd graph of the input.
/// </summary>
/// <remarks>
/// Hooks are registered at construction and removed by <see cref="Dispose"/>; outside <see cref="Run"/> they capture nothing.
/// Not thread-safe: one pass at a time (the model allows no concurrent passes either). Inputs are never disposed.
/// </remarks>
internal sealed class GradientLayerTap : IDisposable
{
    private readonly ImageClassifier _model;
    private readonly string[] _layers;
    private readonly Tensor?[] _captured;
    private readonly int[] _fired;
    private readonly List<Action> _removers = [];
    private bool _active;
    private bool _disposed;

    public GradientLayerTap(ImageClassifier model, IReadOnlyList<string> layers)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(layers);
        _model = model;
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
        var unknown = _layers.Where(l => !modules.ContainsKey(l)).ToList();
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
            var hook = modules[_layers[i]].register_forward_hook((_, _, output) =>
            {
                Capture(slot, output);
                return output;
            });
            _removers.Add(hook.remove);
        }
    }

    public IReadOnlyList<string> Layers => _layers;

    /// <summary>
    /// One forward pass on normalised images: the logits and the unit cache keys <c>[b, D]</c> built exactly as
    /// <see cref="LayerTapExtractor"/> builds them (per-layer flatten + L2 normalise, concatenate, L2 normalise), both in the
    /// autograd graph of <paramref name="images"/> when gradients are enabled. Both join the caller's dispose scope.
    /// </summary>
    public (Tensor Logits, Tensor Keys) Run(Tensor images)
    {
        ArgumentNullException.ThrowIfNull(images);
        ObjectDisposedException.ThrowIf(_disposed, this);
        Array.Clear(_fired);
        _active = true;
        try
        {
            using var scope = NewDisposeScope();
            var logits = _model.Logits(images);
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
                parts[i] = nn.functional.normalize(activation.reshape(activation.shape[0], -1), 2, 1, LayerTapExtractor.NormEpsilon);
            }

            var keys = parts.Length == 1 ? parts[0] : cat(parts, 1);
            keys = nn.functional.normalize(keys, 2, 1, LayerTapExtractor.NormEpsilon);
            return (logits.MoveToOuterDisposeScope(), keys.MoveToOuterDisposeScope());
        }
        finally
        {
            _active = false;
            Release();
        }
    }

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

        Release();
    }

    private void Capture(int slot, Tensor output)
    {
        if (!_active)
        {
            return;
        }

        _fired[slot]++;
        _captured[slot]?.Dispose();

        // An alias is a view: it keeps the autograd history, and outlives the module's own dispose scope.
        var alias = output.alias();
        alias.DetachFromDisposeScope();
        _captured[slot] = alias;
    }

    private void Release()
    {
        for (var i = 0; i < _captured.Length; i++)
        {
            _captured[i]?.Dispose();
            _captured[i] = null;
        }
    }
}
