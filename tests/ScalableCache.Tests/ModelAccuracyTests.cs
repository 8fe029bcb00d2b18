using System.Diagnostics;
using ScalableCache.Core.Checkpoints;
using ScalableCache.Core.Models;
using Xunit;

namespace ScalableCache.Tests;

/// <summary>The published test errors on all 10,000 CIFAR-10 test images (about 10–60 s each on 2 CPU cores).</summary>
[Trait("Category", "FullData")]
public sealed class ModelAccuracyTests
{
    [Theory]
    [InlineData("resnet20", "resnet20.safetensors", 827)]
    [InlineData("resnet20", "resnet20-12fca82f.th", 827)]
    [InlineData("resnet32", "resnet32.safetensors", 737)]
    [InlineData("resnet56", "resnet56.safetensors", 661)]
    public void PublishedTestErrorIsReproducedExactly(string model, string file, int expectedErrors)
    {
        _ = ModelTestSupport.Cifar10Test;
        var watch = Stopwatch.StartNew();
        using var loaded = ModelTestSupport.Registry.Load(model, Path.Combine(SharedData.Models, file));
        var errors = ModelTestSupport.CountErrors(loaded.Model, 10_000);
        TestContext.Current.TestOutputHelper?.WriteLine($"{model} from {file}: {errors} errors / 10,000 in {watch.Elapsed.TotalSeconds:F1} s");
        Assert.Equal(expectedErrors, errors);
        Assert.NotEqual(CheckpointFormat.TorchZip, loaded.Checkpoint.Format);
    }
}
