using ScalableCache.Core.Checkpoints;
using ScalableCache.Core.Models;
using TorchSharp;
using TorchSharp.PyBridge;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

public sealed class CheckpointFormatTests
{
    [Fact]
    public void FormatsAreDetectedByContentNotExtension()
    {
        Assert.Equal(CheckpointFormat.TorchLegacy, CheckpointFormats.Detect(ModelTestSupport.ResNet20Legacy));
        Assert.Equal(CheckpointFormat.Safetensors, CheckpointFormats.Detect(ModelTestSupport.ResNet20Safetensors));

        using var temp = new CheckpointTempFolder();
        var disguisedLegacy = temp.Combine("legacy.safetensors");
        File.Copy(ModelTestSupport.ResNet20Legacy, disguisedLegacy);
        var disguisedSafetensors = temp.Combine("weights.pt");
        File.Copy(ModelTestSupport.ResNet20Safetensors, disguisedSafetensors);
        Assert.Equal(CheckpointFormat.TorchLegacy, CheckpointFormats.Detect(disguisedLegacy));
        Assert.Equal(CheckpointFormat.Safetensors, CheckpointFormats.Detect(disguisedSafetensors));

        using var model = new CifarResNet(3);
        var zip = temp.Combine("model.bin");
        CheckpointWriter.Save(model, zip, CheckpointFormat.TorchZip);
        Assert.Equal(CheckpointFormat.TorchZip, CheckpointFormats.Detect(zip));
    }

    [Fact]
    public void LegacyAndSafetensorsResNet20AreBitwiseIdentical()
    {
        using var fromSafetensors = ModelTestSupport.LoadResNet20(ModelTestSupport.ResNet20Safetensors);
        using var fromLegacy = ModelTestSupport.LoadResNet20(ModelTestSupport.ResNet20Legacy);
        Assert.Equal(CheckpointFormat.Safetensors, fromSafetensors.Checkpoint.Format);
        Assert.Equal(CheckpointFormat.TorchLegacy, fromLegacy.Checkpoint.Format);

        // 97 tensors each; the 2018 checkpoints predate BatchNorm's num_batches_tracked (19 BN layers).
        Assert.Equal(97, fromLegacy.Checkpoint.TensorCount);
        Assert.Equal(19, fromLegacy.Checkpoint.DefaultedBuffers.Count);
        Assert.Equal("91.78000183105469", fromLegacy.Checkpoint.Metadata["best_prec1"]);
        Assert.Equal("resnet20-12fca82f.th", fromSafetensors.Checkpoint.Metadata["source"]);

        var a = fromSafetensors.Model.state_dict();
        var b = fromLegacy.Model.state_dict();
        Assert.Equal(a.Keys.Order(), b.Keys.Order());
        foreach (var (name, tensor) in a)
        {
            Assert.True(tensor.bytes.SequenceEqual(b[name].bytes), $"{name} differs");
        }

        using var scope = NewDisposeScope();
        var x = ModelTestSupport.NormalizedTestImages(0, 500);
        using var noGrad = no_grad();
        var la = fromSafetensors.Model.Logits(x);
        var lb = fromLegacy.Model.Logits(x);
        Assert.True(la.bytes.SequenceEqual(lb.bytes), "logits differ");

        // Sanity: a trained model, not zeros: about 92 % of 500 images right.
        var labels = ModelTestSupport.Cifar10Test.LabelsToTensor(0, 500);
        var correct = la.argmax(1).eq(labels).sum().item<long>();
        Assert.InRange(correct, 440, 490);
    }

    [Fact]
    public void LoadedWeightsAreTheCheckpointValues()
    {
        using var loaded = ModelTestSupport.LoadResNet20();
        using var checkpoint = Checkpoint.Read(ModelTestSupport.ResNet20Legacy);
        Assert.Equal(97, checkpoint.Tensors.Count);
        Assert.DoesNotContain(checkpoint.Tensors.Keys, k => k.StartsWith("module.", StringComparison.Ordinal));
        var state = loaded.Model.state_dict();
        foreach (var (name, tensor) in checkpoint.Tensors)
        {
            Assert.Equal(ScalarType.Float32, tensor.dtype);
            Assert.True(state[name].bytes.SequenceEqual(tensor.bytes), name);
        }

        Assert.Equal([16L, 3, 3, 3], checkpoint.Tensors["conv1.weight"].shape);
    }

    [Fact]
    public void MismatchedCheckpointListsEveryProblemInOneError()
    {
        using var temp = new CheckpointTempFolder();
        using var source = Checkpoint.Read(ModelTestSupport.ResNet20Safetensors);
        var tensors = source.Tensors
            .Where(kv => kv.Key != "layer2.1.bn1.running_mean" && kv.Key != "layer3.0.conv2.weight")
            .Select(kv => (kv.Key, kv.Value.shape, kv.Value.data<float>().ToArray()))
            .ToList();
        tensors.Add(("fc.weight", [10, 64], new float[640]));
        var bias = tensors.FindIndex(t => t.Key == "linear.bias");
        tensors[bias] = ("linear.bias", [11], new float[11]);
        var broken = temp.Combine("broken.safetensors");
        ModelTestSupport.WriteSafetensors(broken, tensors);

        using var model = new CifarResNet(3);
        var before = model.state_dict()["conv1.weight"].clone();
        var error = Assert.Throws<CheckpointMismatchException>(() => CheckpointLoader.Load(model, broken));
        Assert.Equal(["layer2.1.bn1.running_mean", "layer3.0.conv2.weight"], error.Missing.Select(m => m.Name).Order());
        Assert.Equal(["fc.weight"], error.Unexpected.Select(u => u.Name));
        var mismatch = Assert.Single(error.ShapeMismatches);
        Assert.Equal("linear.bias", mismatch.Name);
        Assert.Equal([10L], mismatch.Expected);
        Assert.Equal([11L], mismatch.Actual);

        Assert.Contains(broken, error.Message, StringComparison.Ordinal);
        Assert.Contains("layer3.0.conv2.weight [64, 64, 3, 3]", error.Message, StringComparison.Ordinal);
        Assert.Contains("layer2.1.bn1.running_mean [32]", error.Message, StringComparison.Ordinal);
        Assert.Contains("fc.weight [10, 64]", error.Message, StringComparison.Ordinal);
        Assert.Contains("linear.bias expected [10], checkpoint has [11]", error.Message, StringComparison.Ordinal);

        // Nothing was copied.
        Assert.True(before.bytes.SequenceEqual(model.state_dict()["conv1.weight"].bytes));
        before.Dispose();
    }

    [Fact]
    public void WrongDepthOrClassCountIsAMismatch()
    {
        using var resnet32 = new ModelRegistry().Create("resnet32");
        var deeper = Assert.Throws<CheckpointMismatchException>(() => CheckpointLoader.Load(resnet32, ModelTestSupport.ResNet20Legacy));
        Assert.Contains(deeper.Missing, m => m.Name == "layer1.4.conv2.weight");
        Assert.Empty(deeper.Unexpected);

        using var cifar100 = new CifarResNet(3, 100);
        var classes = Assert.Throws<CheckpointMismatchException>(() => CheckpointLoader.Load(cifar100, ModelTestSupport.ResNet20Safetensors));
        Assert.Equal(["linear.bias", "linear.weight"], classes.ShapeMismatches.Select(s => s.Name).Order());

        // Without an explicit class count the registry reads it from the checkpoint.
        using var inferred = new ModelRegistry().Load("resnet20", ModelTestSupport.ResNet20Legacy);
        Assert.Equal(10, inferred.Model.ClassCount);
    }

    [Theory]
    [InlineData("legacy", 10)]
    [InlineData("legacy", 200)]
    [InlineData("legacy", 12_500)]
    [InlineData("legacy", 600_000)]
    [InlineData("legacy", -1)]
    [InlineData("safetensors", 4)]
    [InlineData("safetensors", 100)]
    [InlineData("safetensors", 600_000)]
    [InlineData("safetensors", -1)]
    [InlineData("zip", 100)]
    [InlineData("zip", -1)]
    public void TruncatedFilesFailNamingTheFile(string kind, long keep)
    {
        using var temp = new CheckpointTempFolder();
        var source = kind switch
        {
            "legacy" => ModelTestSupport.ResNet20Legacy,
            "safetensors" => ModelTestSupport.ResNet20Safetensors,
            _ => temp.Combine("full.pt"),
        };
        if (kind == "zip")
        {
            using var model = ModelTestSupport.LoadResNet20();
            CheckpointWriter.Save(model.Model, source, CheckpointFormat.TorchZip);
        }

        var length = new FileInfo(source).Length;
        var cut = temp.Truncated(source, keep < 0 ? length - 1 : keep, "cut-" + kind);
        var error = Assert.ThrowsAny<Exception>(() => Checkpoint.Read(cut));
        Assert.IsAssignableFrom<CheckpointException>(error);
        Assert.Contains(cut, error.Message, StringComparison.Ordinal);
        Assert.True(
            error.Message.Contains("truncated", StringComparison.Ordinal) || error.Message.Contains("corrupt", StringComparison.Ordinal)
            || error.Message.Contains("not a checkpoint", StringComparison.Ordinal),
            error.Message);
    }

    [Fact]
    public void CorruptAndForeignFilesFailClearly()
    {
        using var temp = new CheckpointTempFolder();
        var text = temp.Combine("notes.pt");
        File.WriteAllText(text, "these are not weights");
        var unknown = Assert.Throws<CheckpointException>(() => Checkpoint.Read(text));
        Assert.Contains("not a checkpoint in a known format", unknown.Message, StringComparison.Ordinal);
        Assert.Contains(text, unknown.Message, StringComparison.Ordinal);

        var empty = temp.Combine("empty.th");
        File.WriteAllBytes(empty, []);
        Assert.Contains("is empty", Assert.Throws<CheckpointException>(() => Checkpoint.Read(empty)).Message, StringComparison.Ordinal);

        // A pickle of the integer 1, not a torch.save file.
        var pickle = temp.Combine("one.pkl");
        File.WriteAllBytes(pickle, [0x80, 0x02, (byte)'K', 0x01, (byte)'.']);
        Assert.Contains("not a legacy torch.save file", Assert.Throws<CheckpointException>(() => Checkpoint.Read(pickle)).Message, StringComparison.Ordinal);

        // Garbage inside the object pickle of the real file.
        var bytes = File.ReadAllBytes(ModelTestSupport.ResNet20Legacy);
        bytes.AsSpan(300, 40).Fill(0xFF);
        var garbled = temp.Combine("garbled.th");
        File.WriteAllBytes(garbled, bytes);
        var corrupt = Assert.Throws<CheckpointException>(() => Checkpoint.Read(garbled));
        Assert.Contains("corrupt", corrupt.Message, StringComparison.Ordinal);
        Assert.Contains(garbled, corrupt.Message, StringComparison.Ordinal);

        // A safetensors header that is not JSON.
        var badHeader = temp.Combine("bad.safetensors");
        File.WriteAllBytes(badHeader, [4, 0, 0, 0, 0, 0, 0, 0, (byte)'{', (byte)'x', (byte)'x', (byte)'}']);
        Assert.Contains("malformed safetensors header", Assert.Throws<CheckpointException>(() => Checkpoint.Read(badHeader)).Message, StringComparison.Ordinal);

        Assert.Throws<FileNotFoundException>(() => Checkpoint.Read(temp.Combine("absent.pt")));
    }

    [Theory]
    [InlineData(CheckpointFormat.TorchZip)]
    [InlineData(CheckpointFormat.Safetensors)]
    public void PyBridgeWrittenCheckpointsRoundTrip(CheckpointFormat format)
    {
        using var temp = new CheckpointTempFolder();
        using var original = ModelTestSupport.LoadResNet20(ModelTestSupport.ResNet20Legacy);
        var path = temp.Combine("resnet20.out");
        CheckpointWriter.Save(original.Model, path, format);
        Assert.Equal(format, CheckpointFormats.Detect(path));

        using var reloaded = ModelTestSupport.LoadResNet20(path);
        Assert.Empty(reloaded.Checkpoint.DefaultedBuffers);
        Assert.Equal(original.Model.state_dict().Count, reloaded.Checkpoint.TensorCount);
        var a = original.Model.state_dict();
        foreach (var (name, tensor) in reloaded.Model.state_dict())
        {
            Assert.True(tensor.bytes.SequenceEqual(a[name].bytes), name);
        }

        Assert.Throws<NotSupportedException>(() => CheckpointWriter.Save(original.Model, path, CheckpointFormat.TorchLegacy));
    }

    [Fact]
    public void PyBridgeLoaderAndThisReaderCoexistInOneProcess()
    {
        using var temp = new CheckpointTempFolder();
        using var original = ModelTestSupport.LoadResNet20();
        var path = temp.Combine("resnet20.pt");
        CheckpointWriter.Save(original.Model, path, CheckpointFormat.TorchZip);

        // PyBridge's own loader shares Razorvine's process-wide constructor table with this reader; both must keep working.
        using var viaPyBridge = new CifarResNet(3);
        viaPyBridge.load_py(path);
        using var legacy = Checkpoint.Read(ModelTestSupport.ResNet20Legacy);
        using var zip = Checkpoint.Read(path);
        var state = viaPyBridge.state_dict();
        foreach (var (name, tensor) in legacy.Tensors)
        {
            Assert.True(state[name].bytes.SequenceEqual(tensor.bytes), name);
            Assert.True(zip.Tensors[name].bytes.SequenceEqual(tensor.bytes), name);
        }
    }
}
