using ScalableCache.Core.Data;
using ScalableCache.Core.Models;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>The shared CIFAR-100 ResNet-56 (option B, chenyaofo names) loads by name and classifies test images.</summary>
public sealed class PublishedModelTests
{
    [Fact]
    public void Cifar100ResNet56LoadsWithChenyaofoNamesAndClassifies()
    {
        var file = Path.Combine(SharedData.Root, "models", "cifar100", "cifar100_resnet56-f2eff4c8.pt");
        using var loaded = ModelTestSupport.Registry.Load(ModelRegistry.Cifar100ResNet56, file);
        Assert.Equal(100, loaded.Model.ClassCount);
        Assert.Equal(344, loaded.Checkpoint.TensorCount); // every tensor of the file, BatchNorm counters included
        var test = Cifar100.LoadTest(Path.Combine(SharedData.Cifar100, Cifar100.FolderName));
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var images = tensor(test.Pixels[..(200 * 3072)].ToArray(), [200, 3, 32, 32]);
        var predicted = loaded.Model.Logits(loaded.Spec.Normalization.Normalize(images)).argmax(1);
        var correct = predicted.eq(test.LabelsToTensor(0, 200)).sum().item<long>();
        Assert.InRange(correct, 120, 200); // 72.63 % top-1 on the whole test set
    }
}
