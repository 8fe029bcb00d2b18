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
    /// <remarks>
    /// A block whose flattened output is wider than <see cref="MaxUnpooledWidth"/> (the last stage of an ImageNet network at 224×224:
    /// 2,048 × 7 × 7 for ResNet-50) is a candidate globally average-pooled (<c>layer4.1:avg</c>, see
    /// <see cref="LayerTapExtractor.PooledSuffix"/>), as in Orhan's ImageNet caches; the last block is then left out when the
    /// pooled-features layer directly follows it (it would be the same key). The CIFAR networks' blocks are narrower and stay whole.
    /// </remarks>
    /// <exception cref="ArgumentException">The module has neither ResNet-style blocks nor pooled features: name the candidates.</exception>
    public static IReadOnlyList<string> Default(nn.Module<Tensor, Tensor> model, InputShape input, int lastBlocks = 4)
    {
        ArgumentNullException.ThrowIfNull(model);
        var layers = LayerInspector.ListLayers(model, input);
        var blocks = Blocks(model, layers);
        var candidates = new List<string>();
        var pooled = Pooled(model, layers);
        if (blocks.Count > 0)
        {
            var lastStage = blocks.Reverse().TakeWhile(b => SameSpatialSize(b, blocks[^1])).Reverse().TakeLast(lastBlocks).ToList();
            foreach (var block in lastStage)
            {
                if (block.FeatureCount <= MaxUnpooledWidth || block.OutputShape.Count < 2)
                {
                    candidates.Add(block.Name);
                }
                else if (!(block.Name == blocks[^1].Name && pooled is not null && NextOutside(layers, block.Name) == pooled))
                {
                    // Too wide to key on whole (ImageNet's 2,048 × 7 × 7): its channels averaged over space, unless that is what the
                    // pooled-features layer right after it computes anyway.
                    candidates.Add(block.Name + LayerTapExtractor.PooledSuffix);
                }
            }
        }

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

    /// <summary>
    /// Widest block output (flattened elements per image) a default candidate keys on whole; wider ones are pooled. Above CIFAR
    /// DenseNet-BC-100's last blocks (342 × 8 × 8 = 21,888), below the last stage of the torchvision ImageNet models (ResNet-18:
    /// 512 × 7 × 7 = 25,088; ResNet-50: 100,352).
    /// </summary>
    public const long MaxUnpooledWidth = 24_576;

    /// <summary>The first module that starts after <paramref name="name"/> and is not inside it.</summary>
    private static string? NextOutside(IReadOnlyList<LayerInfo> layers, string name)
    {
        var index = layers.ToList().FindIndex(l => l.Name == name);
        return layers.Skip(index + 1).FirstOrDefault(l => !l.Name.StartsWith(name + ".", StringComparison.Ordinal))?.Name;
    }

    private static bool SameSpatialSize(LayerInfo a, LayerInfo b) =>
        a.OutputShape.Count == b.OutputShape.Count && a.OutputShape.Skip(1).SequenceEqual(b.OutputShape.Skip(1));

    private static string? Pooled(nn.Module<Tensor, Tensor> model, IReadOnlyList<LayerInfo> layers) =>
        model is ImageClassifier classifier ? classifier.PooledFeaturesLayer : layers.FirstOrDefault(l => l.Name == "avgpool")?.Name;
}
