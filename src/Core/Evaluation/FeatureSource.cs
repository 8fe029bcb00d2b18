using ScalableCache.Core.Data;
using ScalableCache.Core.Features;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Evaluation;

/// <summary>Per-layer unit keys of a data set, stored compactly for layer searches, with the network outputs.</summary>
public sealed class PerLayerKeys : IDisposable
{
    internal PerLayerKeys(IReadOnlyDictionary<string, Tensor> keys, Tensor probabilities, Tensor labels)
    {
        Keys = keys;
        Probabilities = probabilities;
        Labels = labels;
    }

    /// <summary>Layer name → unit keys <c>[n, D_layer]</c>.</summary>
    public IReadOnlyDictionary<string, Tensor> Keys { get; }

    /// <summary><c>p_net</c> <c>[n, C]</c> (float32).</summary>
    public Tensor Probabilities { get; }

    /// <summary>Labels <c>[n]</c> (int64).</summary>
    public Tensor Labels { get; }

    /// <summary>Number of rows.</summary>
    public long Count => Labels.shape[0];

    /// <summary>
    /// The cache keys of a layer set, exactly as <see cref="LayerTapExtractor"/> makes them: the per-layer unit keys concatenated
    /// and re-normalised (float32), with the probabilities and labels, restricted to <paramref name="rows"/> when given.
    /// </summary>
    public FeatureTable Compose(IReadOnlyList<string> layers, IReadOnlyList<int>? rows = null)
    {
        ArgumentNullException.ThrowIfNull(layers);
        using var scope = NewDisposeScope();
        var index = rows is null ? null : tensor(rows.Select(r => (long)r).ToArray());
        Tensor Select(Tensor t) => index is null ? t : t.index_select(0, index);
        var parts = layers.Select(l => Keys.TryGetValue(l, out var k)
            ? Select(k).to_type(ScalarType.Float32)
            : throw new ArgumentException($"Layer '{l}' was not extracted; have {string.Join(", ", Keys.Keys)}.", nameof(layers))).ToArray();
        var keys = nn.functional.normalize(parts.Length == 1 ? parts[0] : cat(parts, 1), 2, 1, LayerTapExtractor.NormEpsilon);
        var table = new FeatureTable(keys, Select(Probabilities), Select(Labels), layers);
        table.Keys.DetachFromDisposeScope();
        table.Probabilities.DetachFromDisposeScope();
        table.Labels.DetachFromDisposeScope();
        return table;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var t in Keys.Values)
        {
            t.Dispose();
        }

        Probabilities.Dispose();
        Labels.Dispose();
    }
}

/// <summary>Runs a loaded model over image data sets and returns cache keys (<see cref="FeatureTable"/>).</summary>
public sealed class FeatureSource(LoadedModel model, int batchSize)
{
    /// <summary>The model.</summary>
    public LoadedModel Model { get; } = model;

    /// <summary>Keys of <paramref name="layers"/> (concatenated, unit norm), probabilities and labels for every image.</summary>
    public FeatureTable Extract(
        ImageDataset data, IReadOnlyList<string> layers, IProgress<ExtractionProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(data);
        using var extractor = new LayerTapExtractor(Model.Model, layers);
        using var features = DatasetFeatureExtractor.Extract(
            extractor, data.Pixels, data.Labels, Model.Spec.Input, Model.Spec.Normalization,
            new FeatureExtractionOptions { BatchSize = batchSize, Device = Model.Device }, progress, cancellationToken);
        return new FeatureTable(features.Keys, features.Probabilities, features.Labels!, features.Layers);
    }

    /// <summary>
    /// Each layer's own unit keys (stored as <paramref name="storage"/>: float16 halves memory), from one forward pass per
    /// chunk of images tapping all layers.
    /// </summary>
    public PerLayerKeys ExtractPerLayer(
        ImageDataset data, IReadOnlyList<string> layers, IProgress<ExtractionProgress>? progress = null,
        CancellationToken cancellationToken = default, int chunk = 4096, ScalarType storage = ScalarType.Float32)
    {
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(layers);
        var dims = LayerInspector.ListLayers(Model.Model, Model.Spec.Input).ToDictionary(l => l.Name, l => l.FeatureCount);
        var keys = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        Tensor? probabilities = null;
        var scale = Math.Sqrt(layers.Count); // the extractor re-normalises the concatenation: each part has norm 1/√k
        using var extractor = new LayerTapExtractor(Model.Model, layers);
        try
        {
            for (var start = 0; start < data.Count; start += chunk)
            {
                var count = Math.Min(chunk, data.Count - start);
                var part = data.Slice(start, count);
                using var scope = NewDisposeScope();
                using var features = DatasetFeatureExtractor.Extract(
                    extractor, part.Pixels, part.Labels, Model.Spec.Input, Model.Spec.Normalization,
                    new FeatureExtractionOptions { BatchSize = batchSize, Device = Model.Device }, null, cancellationToken);
                probabilities ??= empty(data.Count, features.Probabilities.shape[1]).DetachFromDisposeScope();
                probabilities.narrow(0, start, count).copy_(features.Probabilities);
                long offset = 0;
                foreach (var layer in layers)
                {
                    var dim = dims[layer];
                    if (!keys.TryGetValue(layer, out var store))
                    {
                        store = empty(data.Count, dim, dtype: storage).DetachFromDisposeScope();
                        keys[layer] = store;
                    }

                    store.narrow(0, start, count).copy_(features.Keys.narrow(1, offset, dim) * scale);
                    offset += dim;
                }

                progress?.Report(new ExtractionProgress(start + count, data.Count));
            }

            var labels = tensor(data.Labels.ToArray().Select(l => (long)l).ToArray());
            return new PerLayerKeys(keys, probabilities!, labels);
        }
        catch
        {
            foreach (var t in keys.Values)
            {
                t.Dispose();
            }

            probabilities?.Dispose();
            throw;
        }
    }
}
