using System.Globalization;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ScalableCache.Core.Models;

/// <summary>
/// torchvision's ImageNet ResNet (<c>torchvision.models.resnet18 … resnet152</c>, the "v1.5" variant with the stride on the 3×3
/// convolution of a bottleneck), module for module and with the same state-dict names, so the published torchvision checkpoints
/// (<c>resnet50-0676ba61.pth</c>, <c>resnet50-19c8e357.pth</c>, …) load by name: conv7×7/2 (<c>conv1</c>) → <c>bn1</c> → <c>relu</c> →
/// max-pool 3×3/2 (<c>maxpool</c>) → four stages <c>layer1 … layer4</c> of basic or bottleneck blocks (64, 128, 256, 512 planes; the
/// first block of stages 2–4 has stride 2 and a <c>downsample</c> of conv1×1 + BN) → <c>avgpool</c> (<c>[b, 512·e, 1, 1]</c>) →
/// <c>fc</c>.
/// </summary>
/// <remarks>
/// Tappable modules include <c>layerS</c>, <c>layerS.i</c> (a block's output after its ReLU), <c>layerS.i.conv1</c> …, <c>avgpool</c>
/// and <c>fc</c>. A block's addition is out of place, so activations held by forward hooks are never overwritten.
/// </remarks>
public sealed class TorchVisionResNet : ImageClassifier
{
#pragma warning disable IDE1006 // Naming rule violation: names must match the checkpoint tensor names.
    private readonly Conv2d conv1;
    private readonly BatchNorm2d bn1;
    private readonly ReLU relu;
    private readonly MaxPool2d maxpool;
    private readonly Sequential layer1;
    private readonly Sequential layer2;
    private readonly Sequential layer3;
    private readonly Sequential layer4;
    private readonly AdaptiveAvgPool2d avgpool;
    private readonly Linear fc;
#pragma warning restore IDE1006

    /// <summary>Builds an untrained ResNet with the given blocks per stage.</summary>
    /// <param name="blocks">Blocks in each of the four stages, e.g. <c>[3, 4, 6, 3]</c> for ResNet-50.</param>
    /// <param name="bottleneck"><see langword="true"/> for bottleneck blocks (expansion 4, ResNet-50 and deeper), else basic blocks.</param>
    /// <param name="classCount">Output classes (1,000 for ImageNet).</param>
    public TorchVisionResNet(IReadOnlyList<int> blocks, bool bottleneck, int classCount = 1000)
        : base("ResNet")
    {
        ArgumentNullException.ThrowIfNull(blocks);
        if (blocks.Count != 4 || blocks.Any(b => b < 1))
        {
            throw new ArgumentException($"A ResNet has four stages of at least one block each; got [{string.Join(", ", blocks)}].", nameof(blocks));
        }

        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(classCount);
        ClassCount = classCount;
        Blocks = [.. blocks];
        Bottleneck = bottleneck;
        var expansion = bottleneck ? 4 : 1;

        conv1 = Conv2d(3, 64, 7, stride: 2, padding: 3, bias: false);
        bn1 = BatchNorm2d(64);
        relu = ReLU();
        maxpool = MaxPool2d(3, stride: 2, padding: 1);
        var inPlanes = 64;
        layer1 = Stage(ref inPlanes, 64, blocks[0], 1, bottleneck);
        layer2 = Stage(ref inPlanes, 128, blocks[1], 2, bottleneck);
        layer3 = Stage(ref inPlanes, 256, blocks[2], 2, bottleneck);
        layer4 = Stage(ref inPlanes, 512, blocks[3], 2, bottleneck);
        avgpool = AdaptiveAvgPool2d(1);
        fc = Linear(512 * expansion, classCount);
        RegisterComponents();
    }

    /// <summary>Blocks per stage.</summary>
    public IReadOnlyList<int> Blocks { get; }

    /// <summary>Whether the blocks are bottlenecks (expansion 4).</summary>
    public bool Bottleneck { get; }

    /// <summary>Depth counted as torchvision names the models: weighted layers along the main path (18, 34, 50, 101, 152).</summary>
    public int Depth => (Blocks.Sum() * (Bottleneck ? 3 : 2)) + 2;

    /// <inheritdoc />
    public override int ClassCount { get; }

    /// <inheritdoc />
    public override string PooledFeaturesLayer => "avgpool";

    /// <inheritdoc />
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var x = maxpool.call(relu.call(bn1.call(conv1.call(input))));
        x = layer4.call(layer3.call(layer2.call(layer1.call(x))));
        return fc.call(avgpool.call(x).flatten(1)).MoveToOuterDisposeScope();
    }

    private static Sequential Stage(ref int inPlanes, int planes, int count, int stride, bool bottleneck)
    {
        var expansion = bottleneck ? 4 : 1;
        var modules = new List<(string, Module<Tensor, Tensor>)>(count);
        for (var i = 0; i < count; i++)
        {
            var s = i == 0 ? stride : 1;
            // A basic block is the CIFAR ResNets' option-B block (downsample.0/.1 where the shape changes), named as torchvision's.
            Module<Tensor, Tensor> block = bottleneck
                ? new TorchVisionBottleneck(inPlanes, planes, s, i == 0 && (stride != 1 || inPlanes != planes * expansion)
                    ? Sequential(("0", Conv2d(inPlanes, planes * expansion, 1, stride: stride, bias: false)), ("1", BatchNorm2d(planes * expansion)))
                    : null)
                : new CifarBasicBlock(inPlanes, planes, s, projection: true, kind: "BasicBlock");
            modules.Add((i.ToString(CultureInfo.InvariantCulture), block));
            inPlanes = planes * expansion;
        }

        return Sequential(modules);
    }
}

/// <summary>
/// torchvision's <c>Bottleneck</c> (v1.5): conv1×1 → BN → ReLU → conv3×3 (stride here) → BN → ReLU → conv1×1 (4× planes) → BN, plus the
/// identity or <c>downsample</c>, then ReLU.
/// </summary>
internal sealed class TorchVisionBottleneck : Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // Naming rule violation: names must match the checkpoint tensor names.
    private readonly Conv2d conv1;
    private readonly BatchNorm2d bn1;
    private readonly Conv2d conv2;
    private readonly BatchNorm2d bn2;
    private readonly Conv2d conv3;
    private readonly BatchNorm2d bn3;
    private readonly Sequential? downsample;
#pragma warning restore IDE1006

    public TorchVisionBottleneck(int inPlanes, int planes, int stride, Sequential? downsample)
        : base("Bottleneck")
    {
        conv1 = Conv2d(inPlanes, planes, 1, bias: false);
        bn1 = BatchNorm2d(planes);
        conv2 = Conv2d(planes, planes, 3, stride: stride, padding: 1, bias: false);
        bn2 = BatchNorm2d(planes);
        conv3 = Conv2d(planes, planes * 4, 1, bias: false);
        bn3 = BatchNorm2d(planes * 4);
        this.downsample = downsample;
        RegisterComponents();
    }

    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var x = functional.relu(bn1.call(conv1.call(input)));
        x = functional.relu(bn2.call(conv2.call(x)));
        x = bn3.call(conv3.call(x));
        var identity = downsample is null ? input : downsample.call(input);
        return functional.relu(x + identity).MoveToOuterDisposeScope();
    }
}
