using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Evaluation;

/// <summary>
/// Per-layer unit keys of a data set (each tapped layer's activation flattened and L2-normalised, with its norm), stored compactly
/// for layer searches, with the network outputs and the labels. Any layer set's cache keys are composed from them by
/// <see cref="Compose"/> without another forward pass. Owns its tensors (on the CPU).
/// </summary>
public sealed class PerLayerKeys : IDisposable
{
    internal PerLayerKeys(
        IReadOnlyDictionary<string, Tensor> keys, IReadOnlyDictionary<string, Tensor> norms, Tensor probabilities, Tensor labels)
    {
        Keys = keys;
        Norms = norms;
        Probabilities = probabilities;
        Labels = labels;
    }

    /// <summary>Layer name → unit keys <c>[n, D_layer]</c> (float32 or float16).</summary>
    public IReadOnlyDictionary<string, Tensor> Keys { get; }

    /// <summary>Layer name → L2 norms <c>[n]</c> (float32) of the flattened activations the unit keys were made from.</summary>
    public IReadOnlyDictionary<string, Tensor> Norms { get; }

    /// <summary><c>p_net</c> <c>[n, C]</c> (float32).</summary>
    public Tensor Probabilities { get; }

    /// <summary>Labels <c>[n]</c> (int64).</summary>
    public Tensor Labels { get; }

    /// <summary>How fast the extraction that made these keys ran; <see langword="null"/> for keys made otherwise (e.g. <see cref="Rows"/>).</summary>
    public Features.ExtractionThroughput? Throughput { get; internal set; }

    /// <summary>Number of rows.</summary>
    public long Count => Labels.shape[0];

    /// <summary>Number of classes C (the width of <see cref="Probabilities"/>).</summary>
    public int ClassCount => (int)Probabilities.shape[1];

    /// <summary>
    /// The cache keys of a layer set, exactly as <see cref="KeyRecipe.Compose(IReadOnlyList{Tensor})"/> makes them from the
    /// activations (float32), with the probabilities and labels, restricted to <paramref name="rows"/> when given.
    /// </summary>
    public FeatureTable Compose(IReadOnlyList<string> layers, IReadOnlyList<int>? rows = null, KeyNormalization normalization = KeyNormalization.PerLayer)
    {
        ArgumentNullException.ThrowIfNull(layers);
        using var scope = NewDisposeScope();
        var index = rows is null ? null : tensor(rows.Select(r => (long)r).ToArray());
        Tensor Select(Tensor t) => index is null ? t : t.index_select(0, index);
        return ComposeTable(
            layers, [.. layers.Select(l => Select(Layer(l)))], [.. layers.Select(l => Select(Norms[l]))], Select(Probabilities), Select(Labels), normalization);
    }

    /// <summary>A table of the keys composed from unit parts and norms (one per layer), detached from the caller's scope.</summary>
    internal static FeatureTable ComposeTable(
        IReadOnlyList<string> layers, Tensor[] parts, Tensor[] norms, Tensor probabilities, Tensor labels, KeyNormalization normalization)
    {
        using var scope = NewDisposeScope();
        var keys = KeyRecipe.ComposeUnitParts(parts, norms, normalization);
        var table = new FeatureTable(keys, probabilities, labels, layers);
        table.Keys.DetachFromDisposeScope();
        table.Probabilities.DetachFromDisposeScope();
        table.Labels.DetachFromDisposeScope();
        return table;
    }

    /// <summary>The rows at <paramref name="rows"/> of every layer (or of <paramref name="layers"/> only) as a new set (copies).</summary>
    public PerLayerKeys Rows(IReadOnlyList<int> rows, IReadOnlyList<string>? layers = null)
    {
        ArgumentNullException.ThrowIfNull(rows);
        using var scope = NewDisposeScope();
        var index = tensor(rows.Select(r => (long)r).ToArray());
        var names = layers ?? [.. Keys.Keys];
        Tensor Take(Tensor t) => t.index_select(0, index).DetachFromDisposeScope();
        return new PerLayerKeys(
            names.ToDictionary(l => l, l => Take(Layer(l)), StringComparer.Ordinal),
            names.ToDictionary(l => l, l => Take(Norms[l]), StringComparer.Ordinal),
            Take(Probabilities),
            Take(Labels));
    }

    /// <summary>The unit keys of one layer.</summary>
    /// <exception cref="ArgumentException">The layer was not extracted; the message lists those that were.</exception>
    public Tensor Layer(string layer) =>
        Keys.TryGetValue(layer, out var k)
            ? k
            : throw new ArgumentException($"Layer '{layer}' was not extracted; have {string.Join(", ", Keys.Keys)}.", nameof(layer));

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var t in Keys.Values.Concat(Norms.Values))
        {
            t.Dispose();
        }

        Probabilities.Dispose();
        Labels.Dispose();
    }
}
