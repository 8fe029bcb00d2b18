using System.Globalization;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ScalableCache.Core.Models;

/// <summary>
/// DenseNet for CIFAR (Huang et al. 2017) as in the ODIN / Mahalanobis-detector checkpoints (<c>densenet.DenseNet3</c>):
/// <c>conv1</c> 3×3 (3 → 2k) → three dense blocks <c>block{1,2,3}.layer.{i}</c> with transitions <c>trans{1,2}</c> between them →
/// <c>bn1</c> → <c>relu</c> → average over the whole final map (<c>avgpool</c>, 8×8 for 32×32 inputs) → <c>fc</c>.
/// </summary>
/// <remarks>
/// A block has <c>(depth − 4) / 3</c> layers, halved with bottlenecks. A bottleneck layer is <c>bn1</c> → ReLU → <c>conv1</c> 1×1 → 4k →
/// <c>bn2</c> → ReLU → <c>conv2</c> 3×3 → k; a basic layer is <c>bn1</c> → ReLU → <c>conv1</c> 3×3 → k; either output is concatenated to
/// its input. A transition is <c>bn1</c> → ReLU → <c>conv1</c> 1×1 (⌊c·compression⌋ channels) → 2×2 average pooling. All convolutions
/// are bias-free; BatchNorm ε = 1e-5. DenseNet-BC-100 (k = 12): <c>new DenseNetBc(100, 12, bottleneck: true, compression: 0.5)</c>.
/// </remarks>
public sealed class DenseNetBc : ImageClassifier
{
#pragma warning disable IDE1006 // Naming rule violation: names must match the checkpoint tensor names.
    private readonly Conv2d conv1;
    private readonly DenseBlock block1;
    private readonly DenseTransition trans1;
    private readonly DenseBlock block2;
    private readonly DenseTransition trans2;
    private readonly DenseBlock block3;
    private readonly BatchNorm2d bn1;
    private readonly ReLU relu;
    private readonly AdaptiveAvgPool2d avgpool;
    private readonly Linear fc;
#pragma warning restore IDE1006
    private readonly List<string> _blocks = [];

    /// <summary>Builds an untrained DenseNet.</summary>
    /// <param name="depth">Depth; <c>depth − 4</c> must be divisible by 3 (by 6 with bottlenecks), e.g. 100.</param>
    /// <param name="growthRate">Growth rate k (channels each layer adds), e.g. 12.</param>
    /// <param name="bottleneck">Bottleneck layers (the "B" of DenseNet-BC).</param>
    /// <param name="compression">Channel fraction a transition keeps, in (0, 1] (the "C": 0.5).</param>
    /// <param name="classCount">Output classes.</param>
    public DenseNetBc(int depth = 100, int growthRate = 12, bool bottleneck = true, double compression = 0.5, int classCount = 10)
        : base(string.Create(CultureInfo.InvariantCulture, $"DenseNet{(bottleneck ? "-BC" : string.Empty)}-{depth}-k{growthRate}"))
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(growthRate);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(classCount);
        if (!(compression > 0 && compression <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(compression), compression, "The compression must lie in (0, 1].");
        }

        var perBlock = (depth - 4) / 3;
        if (depth < 4 || (depth - 4) % (bottleneck ? 6 : 3) != 0 || perBlock < 1)
        {
            throw new ArgumentException($"Depth {depth} does not give whole dense blocks: depth − 4 must be a positive multiple of {(bottleneck ? 6 : 3)}.", nameof(depth));
        }

        var layers = bottleneck ? perBlock / 2 : perBlock;
        ClassCount = classCount;
        var planes = 2 * growthRate;
        conv1 = Conv2d(3, planes, 3, stride: 1, padding: 1, bias: false);
        block1 = new DenseBlock(layers, planes, growthRate, bottleneck);
        planes += layers * growthRate;
        var reduced = (int)Math.Floor(planes * compression);
        trans1 = new DenseTransition(planes, reduced);
        planes = reduced;
        block2 = new DenseBlock(layers, planes, growthRate, bottleneck);
        planes += layers * growthRate;
        reduced = (int)Math.Floor(planes * compression);
        trans2 = new DenseTransition(planes, reduced);
        planes = reduced;
        block3 = new DenseBlock(layers, planes, growthRate, bottleneck);
        planes += layers * growthRate;
        bn1 = BatchNorm2d(planes);
        relu = ReLU();
        avgpool = AdaptiveAvgPool2d(1);
        fc = Linear(planes, classCount);
        Features = planes;
        for (var b = 1; b <= 3; b++)
        {
            _blocks.AddRange(Enumerable.Range(0, layers).Select(i => string.Create(CultureInfo.InvariantCulture, $"block{b}.layer.{i}")));
        }

        RegisterComponents();
    }

    /// <summary>Channels of the final map (342 for DenseNet-BC-100, k = 12).</summary>
    public int Features { get; }

    /// <inheritdoc />
    public override int ClassCount { get; }

    /// <inheritdoc />
    public override string PooledFeaturesLayer => "avgpool";

    /// <inheritdoc />
    public override IReadOnlyList<string>? BlockOutputs => _blocks;

    /// <inheritdoc />
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var x = conv1.call(input);
        x = trans1.call(block1.call(x));
        x = trans2.call(block2.call(x));
        x = block3.call(x);
        x = relu.call(bn1.call(x));
        x = avgpool.call(x);
        return fc.call(x.flatten(1)).MoveToOuterDisposeScope();
    }
}

/// <summary>A dense block: its layers in <c>layer</c>, each concatenating its new channels to its input.</summary>
internal sealed class DenseBlock : Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // Naming rule violation: names must match the checkpoint tensor names.
    private readonly Sequential layer;
#pragma warning restore IDE1006

    public DenseBlock(int layers, int inPlanes, int growthRate, bool bottleneck)
        : base(nameof(DenseBlock))
    {
        var modules = new List<(string, Module<Tensor, Tensor>)>(layers);
        for (var i = 0; i < layers; i++)
        {
            modules.Add((i.ToString(CultureInfo.InvariantCulture), new DenseLayer(inPlanes + (i * growthRate), growthRate, bottleneck)));
        }

        layer = Sequential(modules);
        RegisterComponents();
    }

    public override Tensor forward(Tensor input) => layer.call(input);
}

/// <summary>One dense layer (bottleneck: <c>bn1</c>, <c>conv1</c> 1×1, <c>bn2</c>, <c>conv2</c> 3×3; basic: <c>bn1</c>, <c>conv1</c> 3×3), output concatenated to its input.</summary>
internal sealed class DenseLayer : Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // Naming rule violation: names must match the checkpoint tensor names.
    private readonly BatchNorm2d bn1;
    private readonly ReLU relu;
    private readonly Conv2d conv1;
    private readonly BatchNorm2d? bn2;
    private readonly Conv2d? conv2;
#pragma warning restore IDE1006

    public DenseLayer(int inPlanes, int growthRate, bool bottleneck)
        : base(bottleneck ? "BottleneckBlock" : "BasicBlock")
    {
        bn1 = BatchNorm2d(inPlanes);
        relu = ReLU(); // shared by both activations, as in the checkpoint's module tree
        if (bottleneck)
        {
            conv1 = Conv2d(inPlanes, 4 * growthRate, 1, bias: false);
            bn2 = BatchNorm2d(4 * growthRate);
            conv2 = Conv2d(4 * growthRate, growthRate, 3, padding: 1, bias: false);
        }
        else
        {
            conv1 = Conv2d(inPlanes, growthRate, 3, padding: 1, bias: false);
        }

        RegisterComponents();
    }

    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var x = conv1.call(relu.call(bn1.call(input)));
        if (conv2 is not null)
        {
            x = conv2.call(relu.call(bn2!.call(x)));
        }

        return cat([input, x], 1).MoveToOuterDisposeScope();
    }
}

/// <summary>A transition: <c>bn1</c> → ReLU → <c>conv1</c> 1×1 → 2×2 average pooling.</summary>
internal sealed class DenseTransition : Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // Naming rule violation: names must match the checkpoint tensor names.
    private readonly BatchNorm2d bn1;
    private readonly ReLU relu;
    private readonly Conv2d conv1;
#pragma warning restore IDE1006

    public DenseTransition(int inPlanes, int outPlanes)
        : base("TransitionBlock")
    {
        bn1 = BatchNorm2d(inPlanes);
        relu = ReLU();
        conv1 = Conv2d(inPlanes, outPlanes, 1, bias: false);
        RegisterComponents();
    }

    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var x = conv1.call(relu.call(bn1.call(input)));
        return functional.avg_pool2d(x, 2).MoveToOuterDisposeScope();
    }
}
