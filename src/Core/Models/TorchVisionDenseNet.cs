using System.Globalization;
using System.Text.RegularExpressions;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ScalableCache.Core.Models;

/// <summary>
/// torchvision's ImageNet DenseNet (<c>torchvision.models.densenet121/161/169/201</c>, Huang et al. 2017), module for module and with
/// the same state-dict names: <c>features</c> = <c>conv0</c> (7×7/2) → <c>norm0</c> → <c>relu0</c> → <c>pool0</c> (max 3×3/2) → four
/// <c>denseblockK</c> (layers <c>denselayerJ</c>: BN → ReLU → conv1×1 to <c>bnSize · growth</c> → BN → ReLU → conv3×3 to <c>growth</c>,
/// concatenated) with a <c>transitionK</c> (BN → ReLU → conv1×1 halving the channels → avg-pool 2×2) between them → <c>norm5</c>;
/// then <c>relu</c> → <c>avgpool</c> → <c>classifier</c>.
/// </summary>
/// <remarks>
/// torchvision applies the final ReLU and pooling functionally; here they are the parameter-free modules <c>relu</c> and
/// <c>avgpool</c> (<c>[b, features, 1, 1]</c>) so they can be tapped; the state dict is unchanged. Checkpoints saved before
/// torchvision 0.3 name the dense layers' tensors <c>norm.1</c>, <c>conv.2</c> …; <see cref="CheckpointName"/> maps them as
/// torchvision's own loader does.
/// </remarks>
public sealed partial class TorchVisionDenseNet : ImageClassifier
{
#pragma warning disable IDE1006 // Naming rule violation: names must match the checkpoint tensor names.
    private readonly Sequential features;
    private readonly ReLU relu;
    private readonly AdaptiveAvgPool2d avgpool;
    private readonly Linear classifier;
#pragma warning restore IDE1006
    private readonly List<string> _blockOutputs = [];

    /// <summary>Builds an untrained DenseNet.</summary>
    /// <param name="growthRate">Channels each dense layer adds (32; 48 for DenseNet-161).</param>
    /// <param name="blocks">Dense layers in each of the four blocks, e.g. <c>[6, 12, 24, 16]</c> for DenseNet-121.</param>
    /// <param name="initialFeatures">Channels of <c>conv0</c> (64; 96 for DenseNet-161).</param>
    /// <param name="classCount">Output classes (1,000 for ImageNet).</param>
    /// <param name="bottleneckSize">Multiplier of the growth rate for the 1×1 convolution's width (4).</param>
    public TorchVisionDenseNet(int growthRate, IReadOnlyList<int> blocks, int initialFeatures, int classCount = 1000, int bottleneckSize = 4)
        : base("DenseNet")
    {
        ArgumentNullException.ThrowIfNull(blocks);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(growthRate);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(initialFeatures);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bottleneckSize);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(classCount);
        if (blocks.Count == 0 || blocks.Any(b => b < 1))
        {
            throw new ArgumentException($"A DenseNet needs dense blocks of at least one layer each; got [{string.Join(", ", blocks)}].", nameof(blocks));
        }

        ClassCount = classCount;
        Blocks = [.. blocks];
        GrowthRate = growthRate;
        var modules = new List<(string, Module<Tensor, Tensor>)>
        {
            ("conv0", Conv2d(3, initialFeatures, 7, stride: 2, padding: 3, bias: false)),
            ("norm0", BatchNorm2d(initialFeatures)),
            ("relu0", ReLU()),
            ("pool0", MaxPool2d(3, stride: 2, padding: 1)),
        };
        var channels = initialFeatures;
        for (var b = 0; b < blocks.Count; b++)
        {
            var k = (b + 1).ToString(CultureInfo.InvariantCulture);
            modules.Add(("denseblock" + k, new TorchVisionDenseBlock(blocks[b], channels, growthRate, bottleneckSize)));
            _blockOutputs.Add("features.denseblock" + k);
            channels += blocks[b] * growthRate;
            if (b != blocks.Count - 1)
            {
                modules.Add(("transition" + k, Sequential(
                    ("norm", BatchNorm2d(channels)),
                    ("relu", ReLU()),
                    ("conv", Conv2d(channels, channels / 2, 1, bias: false)),
                    ("pool", AvgPool2d(2, stride: 2)))));
                _blockOutputs.Add("features.transition" + k);
                channels /= 2;
            }
        }

        modules.Add(("norm5", BatchNorm2d(channels)));
        FeatureCount = channels;
        features = Sequential(modules);
        relu = ReLU();
        avgpool = AdaptiveAvgPool2d(1);
        classifier = Linear(channels, classCount);
        RegisterComponents();
    }

    /// <summary>Dense layers per block.</summary>
    public IReadOnlyList<int> Blocks { get; }

    /// <summary>Channels each dense layer adds.</summary>
    public int GrowthRate { get; }

    /// <summary>Channels of the pooled features (1,024 for DenseNet-121).</summary>
    public int FeatureCount { get; }

    /// <inheritdoc />
    public override int ClassCount { get; }

    /// <inheritdoc />
    public override string PooledFeaturesLayer => "avgpool";

    /// <summary>The dense blocks and transitions in forward order (<c>features.denseblock1</c>, <c>features.transition1</c>, …, <c>features.denseblock4</c>).</summary>
    public override IReadOnlyList<string>? BlockOutputs => _blockOutputs;

    /// <summary>
    /// The current torchvision name of a checkpoint tensor: <c>…denselayerJ.norm.1.weight</c> → <c>…denselayerJ.norm1.weight</c> (likewise
    /// <c>relu</c>, <c>conv</c> and <c>.2</c>; <c>weight</c>, <c>bias</c>, <c>running_mean</c>, <c>running_var</c>), the rename torchvision's
    /// <c>_load_state_dict</c> applies; any other name is returned unchanged.
    /// </summary>
    public static string CheckpointName(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        var match = OldDenseLayerName().Match(name);
        return match.Success ? match.Groups[1].Value + match.Groups[2].Value : name;
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var x = avgpool.call(relu.call(features.call(input)));
        return classifier.call(x.flatten(1)).MoveToOuterDisposeScope();
    }

    [GeneratedRegex(@"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$", RegexOptions.CultureInvariant)]
    private static partial Regex OldDenseLayerName();
}

/// <summary>torchvision's <c>_DenseBlock</c>: each <c>denselayerJ</c> sees the concatenation of the input and every earlier layer's output.</summary>
internal sealed class TorchVisionDenseBlock : Module<Tensor, Tensor>
{
    private readonly TorchVisionDenseLayer[] _layers;

    public TorchVisionDenseBlock(int count, int inputChannels, int growthRate, int bottleneckSize)
        : base("DenseBlock")
    {
        _layers = new TorchVisionDenseLayer[count];
        for (var j = 0; j < count; j++)
        {
            _layers[j] = new TorchVisionDenseLayer(inputChannels + (j * growthRate), growthRate, bottleneckSize);
            register_module("denselayer" + (j + 1).ToString(CultureInfo.InvariantCulture), _layers[j]);
        }
    }

    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var parts = new List<Tensor>(_layers.Length + 1) { input };
        foreach (var layer in _layers)
        {
            parts.Add(layer.call(cat(parts, 1)));
        }

        return cat(parts, 1).MoveToOuterDisposeScope();
    }
}

/// <summary>torchvision's <c>_DenseLayer</c> (dropout 0): BN → ReLU → conv1×1 → BN → ReLU → conv3×3.</summary>
internal sealed class TorchVisionDenseLayer : Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // Naming rule violation: names must match the checkpoint tensor names.
    private readonly BatchNorm2d norm1;
    private readonly ReLU relu1;
    private readonly Conv2d conv1;
    private readonly BatchNorm2d norm2;
    private readonly ReLU relu2;
    private readonly Conv2d conv2;
#pragma warning restore IDE1006

    public TorchVisionDenseLayer(int inputChannels, int growthRate, int bottleneckSize)
        : base("DenseLayer")
    {
        norm1 = BatchNorm2d(inputChannels);
        relu1 = ReLU();
        conv1 = Conv2d(inputChannels, bottleneckSize * growthRate, 1, bias: false);
        norm2 = BatchNorm2d(bottleneckSize * growthRate);
        relu2 = ReLU();
        conv2 = Conv2d(bottleneckSize * growthRate, growthRate, 3, padding: 1, bias: false);
        RegisterComponents();
    }

    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var x = conv1.call(relu1.call(norm1.call(input)));
        return conv2.call(relu2.call(norm2.call(x))).MoveToOuterDisposeScope();
    }
}
