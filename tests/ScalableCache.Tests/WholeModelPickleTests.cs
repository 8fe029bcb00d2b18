using System.Text.Json;
using ScalableCache.Core.Checkpoints;
using ScalableCache.Core.Models;
using ScalableCache.Host;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>
/// Whole-model pickles (<c>torch.save(model)</c>) walked as data onto our modules: the tiny DenseNet fixtures in
/// <c>Golden/pickles</c> (made by <c>make_tiny_densenet.py</c> with torch 1.13, legacy and zip), a wrong class and a missing
/// parameter, and the shared DenseNet-BC-100 pickle against its safetensors copy.
/// </summary>
public sealed class WholeModelPickleTests
{
    private static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "Golden", "pickles", name);

    [Theory]
    [InlineData("tiny-densenet-legacy.pth", CheckpointFormat.TorchLegacy)]
    [InlineData("tiny-densenet-zip.pth", CheckpointFormat.TorchZip)]
    public void LoadsAWholePickledModuleByNamesAndMatchesTorch(string file, CheckpointFormat format)
    {
        using var checkpoint = Checkpoint.Read(Fixture(file));
        Assert.Equal(format, checkpoint.Format);
        Assert.Equal("densenet.DenseNet3", checkpoint.Modules[0].ClassName);
        Assert.Contains(checkpoint.Modules, m => m is { Path: "block1.layer.0.conv2", ClassName: "torch.nn.modules.conv.Conv2d" });
        using var model = new DenseNetBc(10, 2, bottleneck: true, compression: 0.5, classCount: 10);
        CheckpointLoader.Load(model, checkpoint);
        model.eval();

        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var x = linspace(-1, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32);
        var logits = model.Logits(x);
        using var golden = JsonDocument.Parse(File.ReadAllText(Fixture("tiny-densenet.golden.json")));
        var expected = golden.RootElement.GetProperty("logits");
        for (var b = 0; b < 2; b++)
        {
            for (var c = 0; c < 10; c++)
            {
                var e = expected[b][c].GetDouble();
                Assert.InRange(logits[b, c].item<float>(), e - 1e-4, e + 1e-4);
            }
        }
    }

    [Fact]
    public void AnUnexpectedClassIsNamed()
    {
        using var model = new DenseNetBc(10, 2, bottleneck: true, compression: 0.5, classCount: 10);
        var error = Assert.Throws<CheckpointMismatchException>(() => CheckpointLoader.Load(model, Fixture("tiny-densenet-conv1d.pth")));
        Assert.Contains("module 'trans1.conv1' is a torch.nn.modules.conv.Conv1d in the file but a Conv2d in the model", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void AMissingParameterIsNamed()
    {
        using var model = new DenseNetBc(10, 2, bottleneck: true, compression: 0.5, classCount: 10);
        var error = Assert.Throws<CheckpointMismatchException>(() => CheckpointLoader.Load(model, Fixture("tiny-densenet-nobias.pth")));
        Assert.Equal(["fc.bias"], error.Missing.Select(m => m.Name));
    }

    [Theory]
    [InlineData("tiny-densenet-conv1d.pth", "module 'trans1.conv1' is a torch.nn.modules.conv.Conv1d in the file but a Conv2d in the model")]
    [InlineData("tiny-densenet-nobias.pth", "missing:    fc.bias [10]")]
    public async Task TheCliRejectsAPickleThatDoesNotFitWithExit6NamingTheProblem(string file, string problem)
    {
        var (code, stdout, _) = await CliTestSupport.Run(null, "baseline", "--json", "--model", "densenet-bc:10-2", "--weights", Fixture(file), "--data", SharedData.Cifar10);
        Assert.Equal(ExitCodes.InvalidCheckpoint, code);
        Assert.Contains(problem, CliTestSupport.SingleJsonObject(stdout).GetProperty("error").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public void TheSharedDenseNetPickleHoldsItsSafetensorsBitForBit()
    {
        var folder = Path.Combine(SharedData.Root, "models", "cifar10", "densenet100-bc");
        using var pickled = ModelTestSupport.Registry.Load(ModelRegistry.DenseNetBc100, Path.Combine(folder, "densenet_cifar10.pth"));
        using var plain = Checkpoint.Read(Path.Combine(folder, "densenet100-bc-cifar10.safetensors"));
        Assert.Equal(497, plain.Tensors.Count);
        Assert.Equal(10, pickled.Model.ClassCount);
        var state = pickled.Model.state_dict();
        foreach (var (name, tensor) in plain.Tensors)
        {
            Assert.True(state[name].equal(tensor).all().item<bool>(), name);
        }

        Assert.Equal(497, pickled.Checkpoint.TensorCount);
    }
}
