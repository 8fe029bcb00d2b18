using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using ScalableCache.Core.Data;
using ScalableCache.Core.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>Shared inputs of the model, checkpoint and feature tests: checkpoint paths, the CIFAR-10 test set, temp files.</summary>
internal static class ModelTestSupport
{
    private static readonly Lazy<ImageDataset> TestSet = new(() => Cifar10.LoadTest(SharedData.Cifar10));

    public static string ResNet20Safetensors => Path.Combine(SharedData.Models, "resnet20.safetensors");

    public static string ResNet20Legacy => Path.Combine(SharedData.Models, "resnet20-12fca82f.th");

    public static IModelRegistry Registry { get; } = new ModelRegistry();

    /// <summary>The 10,000 CIFAR-10 test images, read once per test run.</summary>
    public static ImageDataset Cifar10Test => TestSet.Value;

    public static PretrainedModel LoadResNet20(string? path = null) => Registry.Load("resnet20", path ?? ResNet20Safetensors);

    /// <summary>Normalised test images <c>[start, start + count)</c>, float32 on the CPU.</summary>
    public static Tensor NormalizedTestImages(int start, int count)
    {
        var n = InputNormalization.ImageNet;
        return Cifar10Test.ToTensor(start, count, n.Mean.ToArray(), n.Std.ToArray());
    }

    /// <summary>Counts misclassified test images <c>[0, count)</c>, in batches of <paramref name="batchSize"/>.</summary>
    public static int CountErrors(ImageClassifier model, int count, int batchSize = 500)
    {
        var errors = 0;
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        for (var start = 0; start < count; start += batchSize)
        {
            var n = Math.Min(batchSize, count - start);
            var x = NormalizedTestImages(start, n);
            var predicted = model.Logits(x).argmax(1);
            var labels = Cifar10Test.LabelsToTensor(start, n);
            errors += (int)predicted.ne(labels).sum().item<long>();
            scope.DisposeEverything();
        }

        return errors;
    }

    /// <summary>Writes a safetensors file from raw float32 tensors (for crafting broken checkpoints).</summary>
    public static void WriteSafetensors(string path, IReadOnlyList<(string Name, long[] Shape, float[] Values)> tensors)
    {
        var header = new Dictionary<string, object>();
        long offset = 0;
        foreach (var (name, shape, values) in tensors)
        {
            var bytes = values.Length * 4L;
            header[name] = new { dtype = "F32", shape, data_offsets = new[] { offset, offset + bytes } };
            offset += bytes;
        }

        var json = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(header));
        using var stream = File.Create(path);
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)json.Length);
        stream.Write(length);
        stream.Write(json);
        Span<byte> b = stackalloc byte[4];
        foreach (var (_, _, values) in tensors)
        {
            foreach (var v in values)
            {
                BinaryPrimitives.WriteSingleLittleEndian(b, v);
                stream.Write(b);
            }
        }
    }
}

/// <summary>A temporary folder deleted on dispose.</summary>
internal sealed class CheckpointTempFolder : IDisposable
{
    public CheckpointTempFolder()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "scache-ckpt-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string Combine(string name) => System.IO.Path.Combine(Path, name);

    /// <summary>Writes the first <paramref name="length"/> bytes of <paramref name="source"/> to a new file.</summary>
    public string Truncated(string source, long length, string name)
    {
        var bytes = File.ReadAllBytes(source);
        var target = Combine(name);
        File.WriteAllBytes(target, bytes.AsSpan(0, (int)length).ToArray());
        return target;
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
