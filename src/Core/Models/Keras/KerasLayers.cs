using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace ScalableCache.Core.Models.Keras;

/// <summary>TensorFlow's convolution and pooling geometry (<c>padding='same'</c> and <c>'valid'</c>).</summary>
public static class KerasPadding
{
    /// <summary>
    /// The padding of one axis under <c>same</c>: the total <c>max((⌈n/s⌉ − 1)·s + k − n, 0)</c> split with the smaller half
    /// before (top/left) and the larger after (bottom/right).
    /// </summary>
    public static (long Before, long After) Same(long size, long kernel, long stride)
    {
        var total = Math.Max(((OutputSize(size, kernel, stride, same: true) - 1) * stride) + kernel - size, 0);
        return (total / 2, total - (total / 2));
    }

    /// <summary>Output size of one axis: <c>⌈n/s⌉</c> under <c>same</c>, <c>⌊(n − k)/s⌋ + 1</c> under <c>valid</c>.</summary>
    public static long OutputSize(long size, long kernel, long stride, bool same) =>
        same ? (size + stride - 1) / stride : ((size - kernel) / stride) + 1;
}

/// <summary>A Keras activation by name: <c>linear</c>, <c>relu</c>, <c>softmax</c> (over the channel axis), <c>sigmoid</c>, <c>tanh</c>.</summary>
internal static class KerasActivations
{
    public static readonly IReadOnlyList<string> Supported = ["linear", "relu", "softmax", "sigmoid", "tanh"];

    public static Tensor Apply(string activation, Tensor x) => activation switch
    {
        "linear" => x,
        "relu" => nn.functional.relu(x),
        "softmax" => nn.functional.softmax(x, 1),
        "sigmoid" => x.sigmoid(),
        "tanh" => x.tanh(),
        _ => throw new NotSupportedException($"Keras activation '{activation}' is not supported."),
    };
}

/// <summary><c>InputLayer</c> (the normalised images) and <c>Dropout</c> at inference: the identity.</summary>
internal sealed class KerasIdentity(string name) : nn.Module<Tensor, Tensor>(name)
{
    public override Tensor forward(Tensor input) => input.alias();
}

/// <summary>
/// <c>Conv2D</c> in NCHW with a PyTorch-layout kernel <c>weight</c> <c>[out, in, kh, kw]</c> and <c>bias</c>. <c>same</c> padding
/// follows TensorFlow: the total padding <c>max((⌈n/s⌉ − 1)·s + k − n, 0)</c> per axis is split with the smaller half before
/// (top/left) and the larger after (bottom/right), so a stride-2 3×3 convolution of an even-sized map pads only bottom and right.
/// </summary>
internal sealed class KerasConv2D : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // Naming rule violation: names must match the state-dict names.
    private readonly Parameter weight;
    private readonly Parameter? bias;
#pragma warning restore IDE1006
    private readonly long[] _kernel;
    private readonly long[] _strides;
    private readonly bool _same;
    private readonly string _activation;

    public KerasConv2D(string name, long inChannels, long filters, long[] kernel, long[] strides, bool same, bool useBias, string activation)
        : base(name)
    {
        weight = new Parameter(zeros(filters, inChannels, kernel[0], kernel[1]), requires_grad: false);
        bias = useBias ? new Parameter(zeros(filters), requires_grad: false) : null;
        _kernel = kernel;
        _strides = strides;
        _same = same;
        _activation = activation;
        RegisterComponents();
    }

    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var x = input;
        if (_same)
        {
            var (top, bottom) = KerasPadding.Same(input.shape[2], _kernel[0], _strides[0]);
            var (left, right) = KerasPadding.Same(input.shape[3], _kernel[1], _strides[1]);
            if (top != 0 || bottom != 0 || left != 0 || right != 0)
            {
                x = nn.functional.pad(x, [left, right, top, bottom], PaddingModes.Constant, 0);
            }
        }

        var y = nn.functional.conv2d(x, weight, bias, strides: _strides);
        return KerasActivations.Apply(_activation, y).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// <c>BatchNormalization</c> over the channel axis (axis 1 in NCHW, Keras' −1 in NHWC) at inference:
/// <c>(x − running_mean) / √(running_var + ε) · weight + bias</c>, with the layer's own ε.
/// </summary>
internal sealed class KerasBatchNormalization : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // Naming rule violation: names must match the state-dict names.
    private readonly Parameter weight;
    private readonly Parameter bias;
    private readonly Tensor running_mean;
    private readonly Tensor running_var;
#pragma warning restore IDE1006
    private readonly double _epsilon;

    public KerasBatchNormalization(string name, long channels, double epsilon)
        : base(name)
    {
        weight = new Parameter(ones(channels), requires_grad: false);
        bias = new Parameter(zeros(channels), requires_grad: false);
        running_mean = zeros(channels);
        running_var = ones(channels);
        _epsilon = epsilon;
        RegisterComponents();
    }

    public double Epsilon => _epsilon;

    public override Tensor forward(Tensor input) =>
        nn.functional.batch_norm(input, running_mean, running_var, weight, bias, training: false, eps: _epsilon);
}

/// <summary><c>Activation</c>.</summary>
internal sealed class KerasActivation(string name, string activation) : nn.Module<Tensor, Tensor>(name)
{
    public string Kind => activation;

    public override Tensor forward(Tensor input) => KerasActivations.Apply(activation, input);
}

/// <summary><c>Add</c>: its inputs arrive stacked on a new leading axis (<c>[k, b, …]</c>) and are summed.</summary>
internal sealed class KerasAdd(string name) : nn.Module<Tensor, Tensor>(name)
{
    // A literal 0 would bind to sum(ScalarType?) and add every element: name the dimension.
    public override Tensor forward(Tensor input) => input.sum(dim: 0L);
}

/// <summary><c>AveragePooling2D</c> and <c>MaxPooling2D</c> with <c>valid</c> padding.</summary>
internal sealed class KerasPooling2D(string name, bool average, long[] pool, long[] strides) : nn.Module<Tensor, Tensor>(name)
{
    public override Tensor forward(Tensor input) => average
        ? nn.functional.avg_pool2d(input, pool, strides)
        : nn.functional.max_pool2d(input, pool, strides);
}

/// <summary><c>GlobalAveragePooling2D</c>: the mean over rows and columns, <c>[b, C]</c>.</summary>
internal sealed class KerasGlobalAveragePooling2D(string name) : nn.Module<Tensor, Tensor>(name)
{
    public override Tensor forward(Tensor input) => input.mean([2L, 3L]);
}

/// <summary><c>Flatten</c> in Keras' channels-last element order (rows, columns, channels), so a following Dense kernel applies unchanged.</summary>
internal sealed class KerasFlatten(string name) : nn.Module<Tensor, Tensor>(name)
{
    public override Tensor forward(Tensor input) => input.dim() == 4 ? input.permute(0, 2, 3, 1).flatten(1) : input.flatten(1);
}

/// <summary><c>Dense</c> with a PyTorch-layout <c>weight</c> <c>[out, in]</c>, <c>bias</c> and the layer's activation.</summary>
internal sealed class KerasDense : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // Naming rule violation: names must match the state-dict names.
    private readonly Parameter weight;
    private readonly Parameter? bias;
#pragma warning restore IDE1006
    private readonly string _activation;

    public KerasDense(string name, long inFeatures, long units, bool useBias, string activation)
        : base(name)
    {
        weight = new Parameter(zeros(units, inFeatures), requires_grad: false);
        bias = useBias ? new Parameter(zeros(units), requires_grad: false) : null;
        _activation = activation;
        RegisterComponents();
    }

    public string Activation => _activation;

    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var y = nn.functional.linear(input, weight, bias);
        return KerasActivations.Apply(_activation, y).MoveToOuterDisposeScope();
    }
}
