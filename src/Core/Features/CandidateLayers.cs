using System.Globalization;
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
    /// Default candidates for the combination search: the last (up to <paramref name="lastBlocks"/>) blocks of the last stage
    /// (<c>layerS.i</c>) and the pooled features (an <see cref="ImageClassifier"/>'s <see cref="ImageClassifier.PooledFeaturesLayer"/>,
    /// else a module named <c>avgpool</c>) — the region near the output where the paper found the useful keys.
    /// </summary>
    /// <exception cref="ArgumentException">The module has neither ResNet-style blocks nor pooled features: name the candidates.</exception>
    public static IReadOnlyList<string> Default(nn.Module<Tensor, Tensor> model, InputShape input, int lastBlocks = 4)
    {
        ArgumentNullException.ThrowIfNull(model);
        var layers = LayerInspector.ListLayers(model, input);
        var blocks = Blocks(layers);
        var candidates = new List<string>();
        if (blocks.Count > 0)
        {
            var lastStage = blocks.Max(b => Stage(b.Name));
            candidates.AddRange(blocks.Where(b => Stage(b.Name) == lastStage).Select(b => b.Name).TakeLast(lastBlocks));
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
        result.AddRange(Blocks(layers));
        result.AddRange(layers.Where(l => l.Name == pooled));
        result.AddRange(layers.Where(l => l.Name == "linear" || l.Name == "fc").Take(1));
        return result;
    }

    private static int Stage(string block) => int.Parse(BlockName().Match(block).Groups[1].Value, CultureInfo.InvariantCulture);

    private static string? Pooled(nn.Module<Tensor, Tensor> model, IReadOnlyList<LayerInfo> layers) =>
        model is ImageClassifier classifier ? classifier.PooledFeaturesLayer : layers.FirstOrDefault(l => l.Name == "avgpool")?.Name;
}
