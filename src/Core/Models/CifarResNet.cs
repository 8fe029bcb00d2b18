using System.Globalization;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ScalableCache.Core.Models;

/// <summary>Shortcuts where a CIFAR ResNet block changes shape, and the naming of the checkpoints that use them.</summary>
public enum CifarShortcut
{
    /// <summary>Parameter-free zero-padded subsampling (Idelbayev's checkpoints; classifier <c>linear</c>).</summary>
    OptionA,

    /// <summary>A 1×1 projection and BatchNorm (<c>downsample.0</c>, <c>downsample.1</c>; chenyaofo's checkpoints: <c>relu</c> module, classifier <c>fc</c>).</summary>
    OptionB,
}

/// <summary>
/// The CIFAR ResNet of He et al. (2016), depth 6n+2, with parameter-free "option A" shortcuts, as in the public checkpoints
/// of Idelbayev (or, with <see cref="CifarShortcut.OptionB"/>, projection shortcuts named as in chenyaofo/pytorch-cifar-models): conv3×3(3→16) → BN → ReLU → three stages of n <see cref="CifarBasicBlock"/>s (16, 32, 64 channels; the first
/// block of stages 2 and 3 has stride 2) → global average pooling (<c>avgpool</c>) → <c>linear</c>.
/// </summary>
/// <remarks>
/// State-dict names: <c>conv1.weight</c>, <c>bn1.*</c>, <c>layer{1,2,3}.{i}.conv{1,2}.weight</c>,
/// <c>layer{1,2,3}.{i}.bn{1,2}.{weight,bias,running_mean,running_var,num_batches_tracked}</c>, <c>linear.{weight,bias}</c>.
/// Tappable modules include <c>conv1</c>, <c>bn1</c>, <c>layerS</c>, <c>layerS.i</c> (a block's output, after its ReLU),
/// <c>layerS.i.conv1</c> …, <c>avgpool</c> (<c>[b, 64, 1, 1]</c>) and <c>linear</c>.
/// </remarks>
public sealed class CifarResNet : ImageClassifier
{
    // Field names are the state-dict names (TorchSharp registers fields by name); keep them in call order.
#pragma warning disable IDE1006 // Naming rule violation: names must match the checkpoint tensor names.
    private readonly Conv2d conv1;
    private readonly BatchNorm2d bn1;
    private readonly ReLU? relu;
    private readonly Sequential layer1;
    private readonly Sequential layer2;
    private readonly Sequential layer3;
    private readonly AdaptiveAvgPool2d avgpool;
    private readonly Linear? linear;
    private readonly Linear? fc;
#pragma warning restore IDE1006

    /// <summary>Builds an untrained CIFAR ResNet with <paramref name="blocksPerStage"/> blocks per stage.</summary>
    /// <param name="blocksPerStage">n ≥ 1; depth is 6n+2 (3 → ResNet-20, 5 → 32, 9 → 56, 18 → 110).</param>
    /// <param name="classCount">Output classes (10 for CIFAR-10, 100 for CIFAR-100).</param>
    /// <param name="shortcut">Option A (Idelbayev's names) or option B (chenyaofo's names).</param>
    public CifarResNet(int blocksPerStage, int classCount = 10, CifarShortcut shortcut = CifarShortcut.OptionA)
        : base(string.Create(CultureInfo.InvariantCulture, $"CifarResNet{(6 * blocksPerStage) + 2}{(shortcut == CifarShortcut.OptionB ? "B" : string.Empty)}"))
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(blocksPerStage);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(classCount);
        BlocksPerStage = blocksPerStage;
        ClassCount = classCount;
        var projection = shortcut == CifarShortcut.OptionB;

        conv1 = Conv2d(3, 16, 3, stride: 1, padding: 1, bias: false);
        bn1 = BatchNorm2d(16);
        relu = projection ? ReLU() : null;
        var inPlanes = 16;
        layer1 = Stage(ref inPlanes, 16, blocksPerStage, 1, projection);
        layer2 = Stage(ref inPlanes, 32, blocksPerStage, 2, projection);
        layer3 = Stage(ref inPlanes, 64, blocksPerStage, 2, projection);
        avgpool = AdaptiveAvgPool2d(1);
        (linear, fc) = projection ? ((Linear?)null, Linear(64, classCount)) : (Linear(64, classCount), null);
        RegisterComponents();
    }

    /// <summary>Blocks per stage, n.</summary>
    public int BlocksPerStage { get; }

    /// <summary>Depth 6n+2 (weighted layers).</summary>
    public int Depth => (6 * BlocksPerStage) + 2;

    /// <inheritdoc />
    public override int ClassCount { get; }

    /// <inheritdoc />
    public override string PooledFeaturesLayer => "avgpool";

    /// <inheritdoc />
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var x = bn1.call(conv1.call(input));
        x = relu is null ? functional.relu(x) : relu.call(x);
        x = layer1.call(x);
        x = layer2.call(x);
        x = layer3.call(x);
        x = avgpool.call(x);
        return (linear ?? fc!).call(x.flatten(1)).MoveToOuterDisposeScope();
    }

    /// <summary>One stage of <paramref name="blocks"/> basic blocks named <c>0</c>, <c>1</c>, …; the first has <paramref name="stride"/>.</summary>
    private static Sequential Stage(ref int inPlanes, int planes, int blocks, int stride, bool projection = false)
    {
        var modules = new List<(string, Module<Tensor, Tensor>)>(blocks);
        for (var i = 0; i < blocks; i++)
        {
            modules.Add((i.ToString(CultureInfo.InvariantCulture), new CifarBasicBlock(inPlanes, planes, i == 0 ? stride : 1, projection)));
            inPlanes = planes;
        }

        return Sequential(modules);
    }
}

/// <summary>
/// conv3×3 → BN → ReLU → conv3×3 → BN, plus the shortcut, then ReLU. Where the block changes shape the shortcut is
/// "option A": <c>x[:, :, ::2, ::2]</c> zero-padded with <c>planes / 4</c> channels on each side (no parameters), or with
/// <c>projection</c> "option B": <c>downsample.0</c> (1×1 convolution with the block's stride, no bias) → <c>downsample.1</c> (BatchNorm).
/// </summary>
internal sealed class CifarBasicBlock : Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // Naming rule violation: names must match the checkpoint tensor names.
    private readonly Conv2d conv1;
    private readonly BatchNorm2d bn1;
    private readonly Conv2d conv2;
    private readonly BatchNorm2d bn2;
    private readonly Sequential? downsample;
#pragma warning restore IDE1006
    private readonly long _padChannels;
    private readonly bool _reshape;

    /// <param name="inPlanes">Input channels.</param>
    /// <param name="planes">Output channels.</param>
    /// <param name="stride">Stride of the first convolution (and of the projection).</param>
    /// <param name="projection">Option B: a 1×1 convolution and BatchNorm (<c>downsample.0/.1</c>) where the shape changes; else option A.</param>
    /// <param name="kind">The module's type name (<c>scache layers</c> lists it): torchvision's ResNet-18/34 use this block as <c>BasicBlock</c>.</param>
    public CifarBasicBlock(int inPlanes, int planes, int stride, bool projection = false, string kind = nameof(CifarBasicBlock))
        : base(kind)
    {
        conv1 = Conv2d(inPlanes, planes, 3, stride: stride, padding: 1, bias: false);
        bn1 = BatchNorm2d(planes);
        conv2 = Conv2d(planes, planes, 3, stride: 1, padding: 1, bias: false);
        bn2 = BatchNorm2d(planes);
        _reshape = stride != 1 || inPlanes != planes;
        _padChannels = planes / 4;
        if (_reshape && projection)
        {
            downsample = Sequential(Conv2d(inPlanes, planes, 1, stride: stride, bias: false), BatchNorm2d(planes));
        }
        else if (_reshape && inPlanes + (2 * _padChannels) != planes)
        {
            throw new ArgumentException(
                $"An option-A shortcut pads {inPlanes} channels by {planes / 4} on each side, which does not give {planes}.", nameof(planes));
        }

        RegisterComponents();
    }

    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var x = functional.relu(bn1.call(conv1.call(input)));
        x = bn2.call(conv2.call(x));
        var shortcut = downsample is not null ? downsample.call(input) : _reshape ? Shortcut(input) : input;

        // Out of place: the outputs of bn2 (or of earlier modules) may be held by forward hooks.
        return functional.relu(x + shortcut).MoveToOuterDisposeScope();
    }

    private Tensor Shortcut(Tensor input)
    {
        var sub = input.slice(2, 0, input.shape[2], 2).slice(3, 0, input.shape[3], 2);
        return functional.pad(sub, [0, 0, 0, 0, _padChannels, _padChannels], PaddingModes.Constant, 0);
    }
}
