using ScalableCache.Core;
using ScalableCache.Core.Checkpoints;
using ScalableCache.Core.Data;
using ScalableCache.Core.Evaluation;
using ScalableCache.Core.Models;
using ScalableCache.Core.Models.Keras;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>The author's Keras .h5 models: reading, the rebuilt graph, TensorFlow padding, layer addressing, per-pixel inputs.</summary>
public sealed class KerasModelTests
{
    private static readonly Lazy<InputNormalization> Cifar10Statistics = new(() =>
        PixelStatistics.FromImages(Cifar10.LoadTrain(SharedData.Cifar10), ModelTestSupport.Cifar10Test));

    private static string ResNet20File => Path.Combine(SharedData.KerasModels, "cifar10_ResNet20v1_model.178.h5");

    [Theory]
    [InlineData(32, 3, 2, 0, 1)] // stride 2 on an even map: TensorFlow pads only bottom/right
    [InlineData(32, 3, 1, 1, 1)]
    [InlineData(32, 1, 2, 0, 0)]
    [InlineData(5, 3, 2, 1, 1)]
    [InlineData(4, 3, 2, 0, 1)]
    [InlineData(8, 5, 3, 1, 2)]
    public void SamePaddingFollowsTensorFlow(long size, long kernel, long stride, long before, long after)
    {
        Assert.Equal((before, after), KerasPadding.Same(size, kernel, stride));
        Assert.Equal((size + stride - 1) / stride, KerasPadding.OutputSize(size, kernel, stride, same: true));
    }

    private const string TinyConfig = """
        {"class_name": "Model", "config": {"name": "tiny", "layers": [
          {"name": "input_1", "class_name": "InputLayer", "config": {"batch_input_shape": [null, 6, 6, 2]}, "inbound_nodes": []},
          {"name": "conv", "class_name": "Conv2D", "config": {"filters": 3, "kernel_size": [3, 3], "strides": [2, 2], "padding": "same",
            "data_format": "channels_last", "use_bias": true, "activation": "relu"}, "inbound_nodes": [[["input_1", 0, 0, {}]]]},
          {"name": "bn", "class_name": "BatchNormalization", "config": {"axis": -1, "epsilon": 0.25}, "inbound_nodes": [[["conv", 0, 0, {}]]]},
          {"name": "add", "class_name": "Add", "config": {}, "inbound_nodes": [[["conv", 0, 0, {}], ["bn", 0, 0, {}]]]},
          {"name": "flat", "class_name": "Flatten", "config": {}, "inbound_nodes": [[["add", 0, 0, {}]]]},
          {"name": "out", "class_name": "Dense", "config": {"units": 4, "activation": "softmax"}, "inbound_nodes": [[["flat", 0, 0, {}]]]}],
          "input_layers": [["input_1", 0, 0]], "output_layers": [["out", 0, 0]]}}
        """;

    [Fact]
    public void RebuildsASmallGraphWithTensorFlowPaddingEpsilonAndChannelsLastFlatten()
    {
        using var model = KerasModel.FromConfig(TinyConfig);
        Assert.Equal(4, model.ClassCount);
        Assert.Equal(new InputShape(2, 6, 6), model.Input);
        Assert.Equal("bn", model.ResolveLayer("2"));
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var state = model.state_dict();
        foreach (var (name, t) in state)
        {
            t.copy_(name.EndsWith("running_var", StringComparison.Ordinal) ? rand(t.shape) + 0.5 : randn(t.shape));
        }

        var x = randn(2, 2, 6, 6);
        var expected = Reference(x, state);
        var actual = nn.functional.softmax(model.Logits(x), 1);
        Assert.True(actual.allclose(expected, rtol: 1e-4, atol: 1e-6), "the graph equals a hand-written forward pass");

        var unsupported = TinyConfig.Replace("\"Flatten\"", "\"Reshape\"", StringComparison.Ordinal);
        Assert.Contains("'flat' is a Reshape", Assert.Throws<KerasModelException>(() => KerasModel.FromConfig(unsupported)).Message, StringComparison.Ordinal);
    }

    /// <summary>The tiny graph by hand: pad bottom/right only (6 → 3 with stride 2), BN with ε = 0.25, Flatten in H, W, C order.</summary>
    private static Tensor Reference(Tensor x, IReadOnlyDictionary<string, Tensor> state)
    {
        var padded = nn.functional.pad(x, [0, 1, 0, 1]);
        var conv = nn.functional.relu(nn.functional.conv2d(padded, state["conv.weight"], state["conv.bias"], strides: [2, 2]));
        var scale = state["bn.weight"] / (state["bn.running_var"] + 0.25).sqrt();
        var bn = ((conv - state["bn.running_mean"].view(1, 3, 1, 1)) * scale.view(1, 3, 1, 1)) + state["bn.bias"].view(1, 3, 1, 1);
        var flat = (conv + bn).permute(0, 2, 3, 1).reshape(2, -1);
        return nn.functional.softmax(nn.functional.linear(flat, state["out.weight"], state["out.bias"]), 1);
    }

    [Fact]
    public void ReadsTheAuthorsResNet20AndAddressesLayersByIndex()
    {
        Assert.Equal(CheckpointFormat.KerasHdf5, CheckpointFormats.Detect(ResNet20File));
        using var loaded = ModelTestSupport.Registry.Load("orhan-c10-resnet20", ResNet20File);
        var model = Assert.IsType<KerasModel>(loaded.Model);
        Assert.Equal(10, model.ClassCount);
        Assert.Equal(72, model.LayerNames.Count);
        Assert.Equal(["activation_14", "activation_16", "activation_18"], new[] { "49", "57", "64" }.Select(model.ResolveLayer));
        Assert.Equal("conv2d_1", model.ResolveLayer("conv2d_1"));
        Assert.Throws<ArgumentException>(() => model.ResolveLayer("72"));
        Assert.Equal("average_pooling2d_1", model.PooledFeaturesLayer);
        Assert.Equal(new InputShape(3, 32, 32), model.Input);

        // 21 convolutions (weight + bias), 19 batch normalisations (4 each), one dense layer (2).
        Assert.Equal((21 * 2) + (19 * 4) + 2, loaded.Checkpoint.TensorCount);
    }

    [Fact]
    public void MatchesAnIndependentReferenceOnTheFirstTestImages()
    {
        using var loaded = ModelTestSupport.Registry.Load("orhan-c10-resnet20", ResNet20File);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var images = tensor(ModelTestSupport.Cifar10Test.Pixels[..(3 * 3072)].ToArray(), [3, 3, 32, 32]);
        var log = nn.functional.log_softmax(loaded.Model.Logits(Cifar10Statistics.Value.Normalize(images)), 1);

        // log p from a torch reimplementation of the Keras graph (h5py weights, numpy per-pixel statistics over 60,000 images).
        float[,] expected =
        {
            { -29.153837f, -17.813456f, -25.537075f, 0f, -24.745525f, -17.703436f, -20.945770f, -24.879213f, -23.936651f, -27.778999f },
            { -18.319767f, -13.913527f, -28.174351f, -25.608303f, -33.150414f, -30.498049f, -27.988611f, -29.742338f, -9.5367477e-07f, -21.778297f },
            { -13.413896f, -4.9307227f, -18.725046f, -21.549917f, -19.762850f, -18.994104f, -18.355682f, -18.243521f, -7.2491025e-03f, -16.870447f },
        };
        for (var b = 0; b < 3; b++)
        {
            for (var c = 0; c < 10; c++)
            {
                Assert.InRange(log[b, c].item<float>(), expected[b, c] - 2e-3f, expected[b, c] + 2e-3f);
            }
        }
    }
}
