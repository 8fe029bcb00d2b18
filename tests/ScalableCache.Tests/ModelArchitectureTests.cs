using ScalableCache.Core.Models;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

public sealed class ModelArchitectureTests
{
    /// <summary>Independent count: conv1 + bn1, per block two 3×3 convs and two BNs (weight + bias), linear.</summary>
    private static long ExpectedParameters(int n, int classes)
    {
        long total = (3 * 16 * 9) + (2 * 16);
        var inPlanes = 16;
        foreach (var planes in new[] { 16, 32, 64 })
        {
            for (var i = 0; i < n; i++)
            {
                total += (inPlanes * planes * 9) + (planes * planes * 9) + (4 * planes);
                inPlanes = planes;
            }
        }

        return total + (64 * classes) + classes;
    }

    [Theory]
    [InlineData(1, 10)]
    [InlineData(3, 10)]
    [InlineData(7, 10)]
    [InlineData(1, 100)]
    [InlineData(7, 100)]
    public void AnyDepthAndClassCountHasTheRightParametersAndOutput(int n, int classes)
    {
        using var model = new CifarResNet(n, classes);
        Assert.Equal((6 * n) + 2, model.Depth);
        Assert.Equal(classes, model.ClassCount);
        var parameters = model.named_parameters().ToList();
        Assert.Equal(ExpectedParameters(n, classes), parameters.Sum(p => p.parameter.numel()));

        var shapes = model.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.shape);
        Assert.Equal([16L, 3, 3, 3], shapes["conv1.weight"]);
        Assert.Equal([32L, 16, 3, 3], shapes["layer2.0.conv1.weight"]);
        Assert.Equal([64L, 64, 3, 3], shapes[$"layer3.{n - 1}.conv2.weight"]);
        Assert.Equal([64L], shapes[$"layer3.{n - 1}.bn2.running_var"]);
        Assert.Equal([(long)classes, 64], shapes["linear.weight"]);
        Assert.Equal([(long)classes], shapes["linear.bias"]);
        Assert.False(shapes.ContainsKey($"layer1.{n}.conv1.weight"));

        // conv1, bn1 (5), per block conv1, bn1 (5), conv2, bn2 (5), linear (2).
        Assert.Equal(1 + 5 + (3 * n * 12) + 2, shapes.Count);

        model.eval();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var logits = model.Logits(randn(2, 3, 32, 32));
        Assert.Equal([2L, classes], logits.shape);
    }

    [Fact]
    public void ResNet20TensorNamesAreExactlyTheCheckpointNamesPlusBatchCounters()
    {
        using var model = new CifarResNet(3);
        using var checkpoint = Core.Checkpoints.Checkpoint.Read(ModelTestSupport.ResNet20Safetensors);
        var expected = checkpoint.Tensors.Keys
            .Concat(checkpoint.Tensors.Keys.Where(k => k.EndsWith(".running_var", StringComparison.Ordinal))
                .Select(k => k.Replace(".running_var", ".num_batches_tracked", StringComparison.Ordinal)))
            .Order(StringComparer.Ordinal);
        Assert.Equal(expected, model.state_dict().Keys.Order(StringComparer.Ordinal));
        Assert.Equal(269_722, model.parameters().Sum(p => p.numel()));
    }

    [Fact]
    public void RegistryResolvesBuiltInsAndTheFamily()
    {
        var registry = new ModelRegistry();
        foreach (var (name, n) in new[] { ("resnet20", 3), ("resnet32", 5), ("resnet44", 7), ("resnet56", 9), ("resnet110", 18), ("ResNet20", 3) })
        {
            var spec = registry.Resolve(name);
            Assert.Equal(InputNormalization.ImageNet, spec.Normalization);
            Assert.Equal(InputShape.Cifar, spec.Input);
            using var model = registry.Create(name);
            Assert.Equal(n, Assert.IsType<CifarResNet>(model).BlocksPerStage);
            Assert.False(model.training);
        }

        var family = registry.Resolve("cifar-resnet:7");
        Assert.Equal("cifar-resnet:7", family.Name);
        using var resnet44 = Assert.IsType<CifarResNet>(registry.Create("cifar-resnet:7", classCount: 100));
        Assert.Equal((44, 100), (resnet44.Depth, resnet44.ClassCount));

        Assert.Equal([0.485f, 0.456f, 0.406f], family.Normalization.Mean);
        Assert.Equal([0.229f, 0.224f, 0.225f], family.Normalization.Std);
    }

    [Fact]
    public void UnknownNamesAndBadFamilyParametersFailClearly()
    {
        var registry = new ModelRegistry();
        var unknown = Assert.Throws<UnknownModelException>(() => registry.Resolve("vgg16"));
        Assert.Contains("vgg16", unknown.Message, StringComparison.Ordinal);
        Assert.Contains("resnet56", unknown.Message, StringComparison.Ordinal);
        Assert.Contains("cifar-resnet:N", unknown.Message, StringComparison.Ordinal);

        var bad = Assert.Throws<ArgumentException>(() => registry.Resolve("cifar-resnet:x"));
        Assert.Contains("blocks per stage", bad.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => registry.Resolve("cifar-resnet:0"));
    }

    [Fact]
    public void NewArchitecturesPlugIntoTheRegistry()
    {
        var registry = ModelRegistry.CreateEmpty();
        Assert.Empty(registry.Models);
        var normalization = new InputNormalization([0.5f], [0.25f]);
        registry.Register(new ModelSpec("tiny", "one block per stage", normalization, new InputShape(3, 32, 32), c => new CifarResNet(1, c)));
        var spec = registry.Resolve("TINY");
        Assert.Same(normalization, spec.Normalization);
        using var model = registry.Create("tiny", 5);
        Assert.Equal(5, model.ClassCount);
        Assert.Throws<UnknownModelException>(() => registry.Resolve("resnet20"));
    }

    [Fact]
    public void NormalizationMatchesTorchvisionFormula()
    {
        using var scope = NewDisposeScope();
        var pixels = tensor(new byte[] { 0, 255, 128, 64, 10, 20 }, [1, 3, 1, 2]);
        var x = InputNormalization.ImageNet.Normalize(pixels);
        var values = x.data<float>().ToArray();
        float[] mean = [0.485f, 0.456f, 0.406f];
        float[] std = [0.229f, 0.224f, 0.225f];
        byte[] raw = [0, 255, 128, 64, 10, 20];
        for (var i = 0; i < raw.Length; i++)
        {
            var c = i / 2;
            Assert.Equal(((raw[i] / 255f) - mean[c]) / std[c], values[i], tolerance: 1e-6f); // |values| ≤ 2.7: a few float32 steps (2.4e-7)
        }

        Assert.Throws<ArgumentException>(() => new InputNormalization([0.5f], [0f]));
        Assert.Throws<ArgumentException>(() => new InputNormalization([0.5f, 0.5f], [1f]));
    }
}
