using System.Text.Json;
using ScalableCache.Core.Checkpoints;
using ScalableCache.Core.Features;
using ScalableCache.Core.Models;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>
/// The torchvision ImageNet families: parameter counts as torchvision reports them, and the golden fixtures — torchvision's logits
/// and pooled features for closed-form weights — matched after the weights travel through a checkpoint file and the loader.
/// </summary>
public sealed class TorchVisionModelTests
{
    /// <summary>Largest absolute difference allowed against torchvision's float32 outputs: seen 1.1e-5 (ResNet-50 logits), 9e-7 (DenseNet-121), 5e-7 (pooled features, which the fixture rounds to 6 decimals).</summary>
    private const double Tolerance = 5e-5;

    /// <summary>torchvision's published parameter counts (<c>sum(p.numel() for p in model.parameters())</c>, 1,000 classes).</summary>
    [Theory]
    [InlineData("torchvision:resnet18", 11_689_512)]
    [InlineData("torchvision:resnet34", 21_797_672)]
    [InlineData("torchvision:resnet50", 25_557_032)]
    [InlineData("torchvision:resnet101", 44_549_160)]
    [InlineData("torchvision:resnet152", 60_192_808)]
    [InlineData("torchvision:densenet121", 7_978_856)]
    [InlineData("torchvision:densenet161", 28_681_000)]
    [InlineData("torchvision:densenet169", 14_149_480)]
    [InlineData("torchvision:densenet201", 20_013_928)]
    public void EveryFamilyMemberHasTorchVisionsParameterCount(string name, long parameters)
    {
        var registry = new ModelRegistry();
        var spec = registry.Resolve(name);
        Assert.Equal(InputShape.ImageNet, spec.Input);
        Assert.Equal(InputNormalization.ImageNet, spec.Normalization);
        using var model = registry.Create(name);
        Assert.Equal(1000, model.ClassCount);
        Assert.Equal(parameters, model.parameters().Sum(p => p.numel()));
    }

    [Fact]
    public void SmallResNetRunsAndListsItsStages()
    {
        using var model = new ModelRegistry().Create("torchvision:resnet18", classCount: 7);
        var layers = LayerInspector.ListLayers(model, new InputShape(3, 64, 64));
        Assert.Equal([512L, 1, 1], layers.Single(l => l.Name == "avgpool").OutputShape);
        Assert.Equal([256L, 4, 4], layers.Single(l => l.Name == "layer3.1").OutputShape);
        Assert.Equal([7L], layers.Single(l => l.Name == "fc").OutputShape);
    }

    [Fact]
    public void OldDenseNetNamesMapAsTorchVisionDoes()
    {
        Assert.Equal("features.denseblock1.denselayer1.norm1.weight", TorchVisionDenseNet.CheckpointName("features.denseblock1.denselayer1.norm.1.weight"));
        Assert.Equal("features.denseblock4.denselayer16.conv2.weight", TorchVisionDenseNet.CheckpointName("features.denseblock4.denselayer16.conv.2.weight"));
        Assert.Equal("features.denseblock2.denselayer3.norm2.running_var", TorchVisionDenseNet.CheckpointName("features.denseblock2.denselayer3.norm.2.running_var"));
        Assert.Equal("features.transition1.norm.weight", TorchVisionDenseNet.CheckpointName("features.transition1.norm.weight"));
        Assert.Equal("features.norm5.bias", TorchVisionDenseNet.CheckpointName("features.norm5.bias"));
    }

    [Theory]
    [InlineData("resnet50", "torchvision:resnet50", CheckpointFormat.TorchZip, false)]
    [InlineData("resnet50", "torchvision:resnet50", CheckpointFormat.Safetensors, false)]
    [InlineData("densenet121", "torchvision:densenet121", CheckpointFormat.TorchZip, true)]
    [InlineData("densenet121", "torchvision:densenet121", CheckpointFormat.Safetensors, false)]
    public void GoldenFixtureMatchesTorchVisionThroughACheckpointFile(string fixture, string model, CheckpointFormat format, bool oldNames)
    {
        var golden = Golden.Read(Path.Combine(SharedData.TorchVisionFixtures, fixture + ".golden.json"));
        var registry = new ModelRegistry();

        // The model's state dict is exactly the fixture's, name for name and shape for shape (TorchSharp lists every parameter
        // before every buffer, PyTorch goes module by module, so the order differs; k is the fixture's PyTorch order).
        using (var fresh = registry.Create(model))
        {
            var ours = fresh.state_dict().Select(kv => (kv.Key, string.Join(",", kv.Value.shape))).Order().ToList();
            Assert.Equal(golden.StateDict.Select(t => (t.Name, string.Join(",", t.Shape))).Order().ToList(), ours);
        }

        using var temp = new CheckpointTempFolder();
        var file = temp.Combine(fixture + (format == CheckpointFormat.Safetensors ? ".safetensors" : ".pth"));
        using (var scope = NewDisposeScope())
        {
            var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            for (var k = 0; k < golden.StateDict.Count; k++)
            {
                var (name, shape, dtype) = golden.StateDict[k];
                tensors[oldNames ? OldDenseNetName(name) : name] = Golden.Weight(name, shape, dtype, k);
            }

            if (oldNames)
            {
                Assert.Contains("features.denseblock1.denselayer1.norm.1.weight", tensors.Keys);
            }

            CheckpointWriter.Save(tensors, file, format);
        }

        using var loaded = registry.Load(model, file);
        Assert.Equal(format, loaded.Checkpoint.Format);
        using var extractor = new LayerTapExtractor(loaded.Model, [loaded.Model.PooledFeaturesLayer]);
        using var noGrad = no_grad();
        using var outer = NewDisposeScope();
        var (logits, activations) = extractor.ForwardActivations(Golden.Input(3));
        var logitError = MaxAbs(logits, golden.Logits);
        var featureError = MaxAbs(activations[0].flatten(1), golden.PooledFeatures);
        TestContext.Current.TestOutputHelper?.WriteLine(
            $"{fixture} via {format}: max |Δ logits| = {logitError:E2} (|logits| ≤ {golden.LogitAbsMax:F3}), max |Δ pooled| = {featureError:E2}");
        Assert.True(logitError < Tolerance, $"max |Δ logits| = {logitError:E3}");
        Assert.True(featureError < Tolerance, $"max |Δ pooled features| = {featureError:E3}");
        Assert.Equal(golden.Argmax, logits.argmax(1).data<long>().Select(v => (int)v).ToArray());
    }

    /// <summary>The pre-0.3 torchvision name of a dense layer's tensor (the inverse of <see cref="TorchVisionDenseNet.CheckpointName"/>).</summary>
    private static string OldDenseNetName(string name)
    {
        foreach (var part in new[] { "norm1.", "norm2.", "conv1.", "conv2." })
        {
            var at = name.IndexOf(".denselayer", StringComparison.Ordinal) >= 0 ? name.LastIndexOf("." + part, StringComparison.Ordinal) : -1;
            if (at >= 0 && !name.EndsWith(".num_batches_tracked", StringComparison.Ordinal))
            {
                return name[..(at + 1)] + part[..4] + "." + part[4] + name[(at + part.Length)..];
            }
        }

        return name;
    }

    private static double MaxAbs(Tensor actual, float[][] expected)
    {
        using var scope = NewDisposeScope();
        var reference = tensor(expected.SelectMany(r => r).ToArray(), [expected.Length, expected[0].Length]);
        Assert.Equal(reference.shape, actual.shape);
        return (actual - reference).abs().max().item<float>();
    }

    /// <summary>One golden file: the state-dict layout, the closed-form weights and input, torchvision's outputs.</summary>
    private sealed record Golden(
        IReadOnlyList<(string Name, long[] Shape, string DType)> StateDict, float[][] Logits, float[][] PooledFeatures, int[] Argmax, double LogitAbsMax)
    {
        public static Golden Read(string path)
        {
            using var json = JsonDocument.Parse(File.ReadAllText(path));
            var root = json.RootElement;
            var entries = root.GetProperty("state_dict").EnumerateArray()
                .Select(e => (e[0].GetString()!, e[1].EnumerateArray().Select(d => d.GetInt64()).ToArray(), e[2].GetString()!))
                .ToList();
            return new Golden(
                entries,
                Matrix(root.GetProperty("logits")),
                Matrix(root.GetProperty("pooled_features")),
                [.. root.GetProperty("argmax").EnumerateArray().Select(e => e.GetInt32())],
                root.GetProperty("logit_abs_max").GetDouble());
        }

        /// <summary>
        /// Tensor k of the fixture (its README formula): a = 0.1 + 0.7 i + 0.013 k; running_var 1 + 0.5 sin²a; num_batches_tracked 0;
        /// a 1-D <c>.weight</c> (a norm layer's) 1 + 0.1 sin a; other 1-D tensors 0.1 sin a; others sin a · √(2 / fan_in).
        /// </summary>
        public static Tensor Weight(string name, long[] shape, string dtype, int k)
        {
            if (dtype == "int64")
            {
                return zeros(shape, ScalarType.Int64);
            }

            var count = shape.Aggregate(1L, (a, b) => a * b);
            var values = new float[count];
            var fanIn = shape.Length >= 2 ? (double)count / shape[0] : 1;
            for (long i = 0; i < count; i++)
            {
                var s = Math.Sin(0.1 + (0.7 * i) + (0.013 * k));
                values[i] = (float)(name.EndsWith(".running_var", StringComparison.Ordinal) ? 1 + (0.5 * s * s)
                    : shape.Length >= 2 ? s * Math.Sqrt(2 / fanIn)
                    : name.EndsWith(".weight", StringComparison.Ordinal) ? 1 + (0.1 * s)
                    : 0.1 * s);
            }

            return tensor(values, shape);
        }

        /// <summary>The fixture's input: image b of [n, 3, 224, 224], element j: 0.5 sin(0.0037 (b + 1) j + 1.3 b).</summary>
        public static Tensor Input(int n)
        {
            const int size = 3 * 224 * 224;
            var values = new float[n * size];
            for (var b = 0; b < n; b++)
            {
                for (var j = 0; j < size; j++)
                {
                    values[(b * size) + j] = (float)(0.5 * Math.Sin((0.0037 * (b + 1) * j) + (1.3 * b)));
                }
            }

            return tensor(values, [n, 3, 224, 224]);
        }

        private static float[][] Matrix(JsonElement rows) =>
            [.. rows.EnumerateArray().Select(r => r.EnumerateArray().Select(v => v.GetSingle()).ToArray())];
    }

    [Fact]
    public void DefaultCandidatesPoolTheWideLastStageAndKeepCifarBlocksWhole()
    {
        using var resnet50 = new ModelRegistry().Create("torchvision:resnet50");
        Assert.Equal(["layer4.0:avg", "layer4.1:avg", "avgpool"], CandidateLayers.Default(resnet50, InputShape.ImageNet));
        using var densenet = new ModelRegistry().Create("torchvision:densenet121");
        Assert.Equal(["features.transition3:avg", "features.denseblock4:avg", "avgpool"], CandidateLayers.Default(densenet, InputShape.ImageNet));
        using var cifar = new ModelRegistry().Create("resnet20");
        Assert.Equal(["layer3.0", "layer3.1", "layer3.2", "avgpool"], CandidateLayers.Default(cifar, InputShape.Cifar));
    }

    [Fact]
    public void PooledTapAveragesTheModuleOutputOverSpace()
    {
        manual_seed(3);
        using var model = new ModelRegistry().Create("torchvision:resnet18", classCount: 4);
        using var scope = NewDisposeScope();
        var x = randn(2, 3, 64, 64);
        using var whole = new LayerTapExtractor(model, ["layer4.1"]);
        using var pooled = new LayerTapExtractor(model, ["layer4.1:avg", "layer3.1:avg"]);
        var (_, full) = whole.ForwardActivations(x);
        var (_, parts) = pooled.ForwardActivations(x);
        Assert.Equal([2L, 512], parts[0].shape);
        Assert.Equal([2L, 256], parts[1].shape);
        var expected = full[0].reshape(2, 512, -1).mean([2]);
        Assert.True(allclose(expected, parts[0], rtol: 1e-5, atol: 1e-6));

        // layer4.1 pooled is what avgpool computes: the same key.
        using var avgpool = new LayerTapExtractor(model, ["avgpool"]);
        Assert.True(allclose(avgpool.ForwardActivations(x).Activations[0], parts[0], rtol: 1e-5, atol: 1e-6));
        Assert.Throws<ArgumentException>(() => new LayerTapExtractor(model, ["layer9:avg"]));
    }
}
