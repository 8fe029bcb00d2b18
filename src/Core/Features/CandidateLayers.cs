using System.Text.RegularExpressions;
using ScalableCache.Core.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Features;

/// <summary>Which layers a cache keys on by default: block outputs near the output, and the layers of the layer sweep.</summary>
public static partial class CandidateLayers
{
    [GeneratedRegex(@"^layer(\d+)\.(\d+)$")]
    private static partial Regex BlockName();

    /// <summary>Every block output (<c>layerS.i</c>, ResNet naming) in forward order.</summary>
    public static IReadOnlyList<LayerInfo> Blocks(IReadOnlyList<LayerInfo> layers)
    {
        ArgumentNullException.ThrowIfNull(layers);
        return [.. layers.Where(l => BlockName().IsMatch(l.Name))];
    }

    /// <summary>
    /// Every block output of <paramref name="model"/> in forward order: an <see cref="ImageClassifier"/>'s own
    /// <see cref="ImageClassifier.BlockOutputs"/> when it names them, else the modules named <c>layerS.i</c>.
    /// </summary>
    public static IReadOnlyList<LayerInfo> Blocks(nn.Module<Tensor, Tensor> model, IReadOnlyList<LayerInfo> layers)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(layers);
        if (model is ImageClassifier { BlockOutputs: { } named })
        {
            var set = named.ToHashSet(StringComparer.Ordinal);
            return [.. layers.Where(l => set.Contains(l.Name))];
        }

        return Blocks(layers);
    }

    /// <summary>
    /// Default candidates for the combination search: the last (up to <paramref name="lastBlocks"/>) blocks of the last stage
    /// (the trailing blocks whose outputs have the last block's spatial size; see <see cref="Blocks(nn.Module{Tensor, Tensor}, IReadOnlyList{LayerInfo})"/>)
    /// and the pooled features (an <see cref="ImageClassifier"/>'s <see cref="ImageClassifier.PooledFeaturesLayer"/>,
    /// else a module named <c>avgpool</c>) — the region near the output where the paper found the useful keys.
    /// </summary>
    /// <exception cref="ArgumentException">The module has neither ResNet-style blocks nor pooled features: name the candidates.</exception>
    public static IReadOnlyList<string> Default(nn.Module<Tensor, Tensor> model, InputShape input, int lastBlocks = 4)
    {
        ArgumentNullException.ThrowIfNull(model);
        var layers = LayerInspector.ListLayers(model, input);
        var blocks = Blocks(model, layers);
        var candidates = new List<string>();
        if (blocks.Count > 0)
        {
            var lastStage = blocks.Reverse().TakeWhile(b => SameSpatialSize(b, blocks[^1])).Reverse();
            candidates.AddRange(lastStage.Select(b => b.Name).TakeLast(lastBlocks));
        }

        var pooled = Pooled(model, layers);
        if (pooled is not null)
        {
            candidates.Add(pooled);
        }

        return candidates.Count > 0
            ? candidates
            : throw new ArgumentException(
                $"Model {model.GetName()} has no ResNet-style blocks (layerS.i) or pooled features to key on by default; name the candidate " +
                $"layers. Its modules: {string.Join(", ", layers.Select(l => l.Name))}.", nameof(model));
    }

    /// <summary>
    /// The layer sweep's layers (Figure 2): the stem, every block output, the pooled features and the logits, in forward order.
    /// </summary>
    public static IReadOnlyList<LayerInfo> Sweep(nn.Module<Tensor, Tensor> model, InputShape input)
    {
        ArgumentNullException.ThrowIfNull(model);
        var layers = LayerInspector.ListLayers(model, input);
        var pooled = Pooled(model, layers);

        // The stem's last module output (bn1 in the CIFAR ResNets; the stem's ReLU is functional, so this is pre-ReLU).
        var stem = layers.FirstOrDefault(l => l.Name == "bn1") ?? layers[0];
        var result = new List<LayerInfo> { stem };
        result.AddRange(Blocks(model, layers));
        result.AddRange(layers.Where(l => l.Name == pooled));
        result.AddRange(layers.Where(l => l.Name == "linear" || l.Name == "fc").Take(1));
        return result;
    }

    private static bool SameSpatialSize(LayerInfo a, LayerInfo b) =>
        a.OutputShape.Count == b.OutputShape.Count && a.OutputShape.Skip(1).SequenceEqual(b.OutputShape.Skip(1));

    private static string? Pooled(nn.Module<Tensor, Tensor> model, IReadOnlyList<LayerInfo> layers) =>
        model is ImageClassifier classifier ? classifier.PooledFeaturesLayer : layers.FirstOrDefault(l => l.Name == "avgpool")?.Name;
}
