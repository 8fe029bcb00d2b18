using System.Text.RegularExpressions;
using ScalableCache.Core.Evaluation;
using ScalableCache.Core.Features;

namespace ScalableCache.Host.Experiments;

/// <summary>Which layers an experiment keys on: block outputs, candidates for the combination search.</summary>
internal static partial class LayerChoice
{
    [GeneratedRegex(@"^layer(\d+)\.(\d+)$")]
    private static partial Regex BlockName();

    /// <summary>Every block output (<c>layerS.i</c>) in forward order.</summary>
    public static IReadOnlyList<LayerInfo> Blocks(IReadOnlyList<LayerInfo> layers) =>
        [.. layers.Where(l => BlockName().IsMatch(l.Name))];

    /// <summary>
    /// Default candidates for the combination search: the last (up to <paramref name="lastBlocks"/>) blocks of the last stage and
    /// the pooled features — the region near the output where the paper found the useful keys. Bounded so the float32 keys of
    /// every candidate fit in memory at once (ResNet-56: 4 × 4096 + 64 dimensions × 60,000 images ≈ 4 GB).
    /// </summary>
    public static IReadOnlyList<string> DefaultCandidates(LoadedModel model, int lastBlocks = 4)
    {
        ArgumentNullException.ThrowIfNull(model);
        var layers = LayerInspector.ListLayers(model.Model, model.Spec.Input);
        var blocks = Blocks(layers);
        var candidates = new List<string>();
        if (blocks.Count > 0)
        {
            var lastStage = blocks.Max(b => int.Parse(BlockName().Match(b.Name).Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture));
            candidates.AddRange(blocks.Where(b => BlockName().Match(b.Name).Groups[1].Value == lastStage.ToString(System.Globalization.CultureInfo.InvariantCulture))
                .Select(b => b.Name).TakeLast(lastBlocks));
        }

        candidates.Add(model.Model.PooledFeaturesLayer);
        return candidates;
    }

    /// <summary>
    /// The layer sweep's layers (Figure 2): the stem, every block output, the pooled features and the logits, in forward order.
    /// </summary>
    public static IReadOnlyList<LayerInfo> SweepLayers(LoadedModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var layers = LayerInspector.ListLayers(model.Model, model.Spec.Input);
        var pooled = model.Model.PooledFeaturesLayer;
        // The stem's last module output (bn1 in the CIFAR ResNets; the stem's ReLU is functional, so this is pre-ReLU).
        var stem = layers.FirstOrDefault(l => l.Name == "bn1") ?? layers[0];
        var result = new List<LayerInfo> { stem };
        result.AddRange(Blocks(layers));
        result.AddRange(layers.Where(l => l.Name == pooled));
        result.AddRange(layers.Where(l => l.Name == "linear" || l.Name == "fc").Take(1));
        return result;
    }
}
