using ScalableCache.Core.Data;
using ScalableCache.Core.Features;
using ScalableCache.Core.Models;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

public sealed class FeatureExtractionTests
{
    private static readonly string[] Taps = ["layer3.1", "layer3.2", "avgpool"];

    [Fact]
    public void LayerListingShowsModulesInForwardOrderWithShapes()
    {
        using var loaded = ModelTestSupport.LoadResNet20();
        var layers = LayerInspector.ListLayers(loaded.Model, InputShape.Cifar);
        var byName = layers.ToDictionary(l => l.Name);

        Assert.Equal("conv1", layers[0].Name);
        Assert.Equal("linear", layers[^1].Name);
        Assert.Equal([16L, 32, 32], byName["conv1"].OutputShape);
        Assert.Equal([16L, 32, 32], byName["bn1"].OutputShape);
        Assert.Equal([16L, 32, 32], byName["layer1.0"].OutputShape);
        Assert.Equal([16L, 32, 32], byName["layer1"].OutputShape);
        Assert.Equal([32L, 16, 16], byName["layer2.0"].OutputShape);
        Assert.Equal([32L, 16, 16], byName["layer2.0.conv1"].OutputShape);
        Assert.Equal([64L, 8, 8], byName["layer3.2"].OutputShape);
        Assert.Equal(4096, byName["layer3.2"].FeatureCount);
        Assert.Equal([64L, 1, 1], byName["avgpool"].OutputShape);
        Assert.Equal(64, byName["avgpool"].FeatureCount);
        Assert.Equal([10L], byName["linear"].OutputShape);
        Assert.Equal("CifarBasicBlock", byName["layer1.0"].Kind);
        Assert.Equal("Conv2d", byName["conv1"].Kind);

        var order = layers.Select(l => l.Name).ToList();
        string[] blocks = ["layer1.0", "layer1.1", "layer1.2", "layer2.0", "layer2.1", "layer2.2", "layer3.0", "layer3.1", "layer3.2"];
        var positions = blocks.Select(b => order.IndexOf(b)).ToList();
        Assert.DoesNotContain(-1, positions);
        Assert.Equal(positions.Order(), positions);
        Assert.True(order.IndexOf("layer1") < order.IndexOf("layer1.0"), "a container starts before its children");
        Assert.True(order.IndexOf("layer1.0.conv1") < order.IndexOf("layer1.0.bn2"));
        Assert.True(order.IndexOf("layer3.2") < order.IndexOf("avgpool"));

        // Every tappable name that runs appears once; listing removes its hooks (a second listing is identical).
        Assert.Equal(order.Count, order.Distinct().Count());
        Assert.Equal(order, LayerInspector.ListLayers(loaded.Model, InputShape.Cifar).Select(l => l.Name));
    }

    [Fact]
    public void KeysAreUnitNormAndEqualTheManualComputation()
    {
        using var loaded = ModelTestSupport.LoadResNet20();
        var model = loaded.Model;
        using var scope = NewDisposeScope();
        var x = ModelTestSupport.NormalizedTestImages(0, 64);

        Tensor keys;
        Tensor logits;
        using (var extractor = new LayerTapExtractor(model, Taps))
        {
            using var result = extractor.Extract(x);
            keys = result.Keys.clone();
            logits = result.Logits.clone();
            Assert.Equal([64L, 4096 + 4096 + 64], keys.shape);
            Assert.Equal([64L, 10], result.Probabilities.shape);
            var norms = keys.norm(1).data<float>().ToArray();
            Assert.All(norms, n => Assert.Equal(1f, n, tolerance: 1e-5f)); // float32 norm of 8,256 components: rounding ≈ √d·ε ≈ 5e-6
            Assert.True(result.Probabilities.sum(1).allclose(ones(64), rtol: 0, atol: 1e-5));
            Assert.True(result.Probabilities.allclose(nn.functional.softmax(result.Logits, 1)));
        }

        // Manual: a separate forward pass per layer with a hand-written hook keeping the raw activation.
        var pieces = new List<Tensor>();
        var modules = model.named_modules().ToDictionary(m => m.name, m => (nn.Module<Tensor, Tensor>)m.module);
        foreach (var layer in Taps)
        {
            Tensor? raw = null;
            var hook = modules[layer].register_forward_hook((_, _, output) =>
            {
                raw = output.clone();
                raw.DetachFromDisposeScope();
                return output;
            });
            using (no_grad())
            {
                model.Logits(x);
            }

            hook.remove();
            Assert.NotNull(raw);
            scope.Attach(raw);
            var flat = raw.reshape(64, -1);
            pieces.Add(flat / flat.norm(1, keepdim: true));
        }

        var manual = cat(pieces, 1);
        manual /= manual.norm(1, keepdim: true);
        Assert.True(keys.allclose(manual, rtol: 1e-5, atol: 1e-6), $"max |Δ| = {(keys - manual).abs().max().item<float>()}");

        // The extractor's logits are those of the plain forward pass, bit for bit.
        using (no_grad())
        {
            var plain = model.Logits(x);
            Assert.True(plain.bytes.SequenceEqual(logits.bytes));
        }

        // With all concatenated parts unit-norm, each part carries 1/√k of the key's norm.
        var avgpoolPart = keys.narrow(1, 8192, 64);
        Assert.All(avgpoolPart.norm(1).data<float>().ToArray(), n => Assert.Equal(1 / MathF.Sqrt(3), n, tolerance: 1e-5f));
    }

    [Fact]
    public void SingleTapKeyIsTheNormalisedPooledFeature()
    {
        using var loaded = ModelTestSupport.LoadResNet20();
        using var scope = NewDisposeScope();
        var x = ModelTestSupport.NormalizedTestImages(100, 16);
        using var extractor = new LayerTapExtractor(loaded.Model, [loaded.Model.PooledFeaturesLayer]);
        using var result = extractor.Extract(x);

        // avgpool is the spatial mean of layer3's output.
        using var layer3 = new LayerTapExtractor(loaded.Model, ["layer3"]);
        using var viaLayer3 = layer3.Extract(x);
        var pooled = viaLayer3.Keys.reshape(16, 64, 64).mean([2]);
        pooled /= pooled.norm(1, keepdim: true);
        Assert.True(result.Keys.allclose(pooled, rtol: 1e-5, atol: 1e-6));
    }

    [Fact]
    public void UnknownOrRepeatedLayersFailListingValidNames()
    {
        using var loaded = ModelTestSupport.LoadResNet20();
        var error = Assert.Throws<ArgumentException>(() => new LayerTapExtractor(loaded.Model, ["layer3.2", "layer4.0", "fc"]));
        Assert.Contains("'layer4.0'", error.Message, StringComparison.Ordinal);
        Assert.Contains("'fc'", error.Message, StringComparison.Ordinal);
        Assert.Contains("Valid layers:", error.Message, StringComparison.Ordinal);
        Assert.Contains("avgpool", error.Message, StringComparison.Ordinal);
        Assert.Contains("layer3.2.bn2", error.Message, StringComparison.Ordinal);

        Assert.Throws<ArgumentException>(() => new LayerTapExtractor(loaded.Model, ["avgpool", "avgpool"]));
        Assert.Throws<ArgumentException>(() => new LayerTapExtractor(loaded.Model, []));

        var extractor = new LayerTapExtractor(loaded.Model, ["avgpool"]);
        extractor.Dispose();
        using var scope = NewDisposeScope();
        Assert.Throws<ObjectDisposedException>(() => extractor.Extract(zeros(1, 3, 32, 32)));
    }

    [Fact]
    public void DatasetDriverMatchesPerBatchExtractionAndReportsProgress()
    {
        const int count = 300;
        using var loaded = ModelTestSupport.LoadResNet20();
        var test = ModelTestSupport.Cifar10Test.Slice(0, count);
        using var extractor = new LayerTapExtractor(loaded.Model, Taps);
        var reports = new List<ExtractionProgress>();
        var progress = new SynchronousProgress(reports.Add);
        var options = new FeatureExtractionOptions { BatchSize = 128 };
        var ct = TestContext.Current.CancellationToken;

        using var features = DatasetFeatureExtractor.Extract(extractor, test, loaded.Spec.Normalization, options, progress, ct);
        Assert.Equal(count, features.Count);
        Assert.Equal(8256, features.Dimension);
        Assert.Equal([new(128, count), new(256, count), new(count, count)], reports);
        Assert.Equal(test.Labels.ToArray().Select(l => (long)l), features.Labels!.data<long>().ToArray());
        Assert.Equal(["layer3.1", "layer3.2", "avgpool"], features.Layers);
        Assert.Equal(count, features.Throughput!.Images);
        Assert.InRange(features.Throughput.ReadSeconds, 0, features.Throughput.Seconds);
        Assert.InRange(features.Throughput.WaitSeconds, 0, features.Throughput.Seconds);

        using var scope = NewDisposeScope();
        var x = ModelTestSupport.NormalizedTestImages(128, 128);
        using var direct = extractor.Extract(x);
        Assert.True(features.Keys.narrow(0, 128, 128).bytes.SequenceEqual(direct.Keys.bytes), "keys of batch 2");
        Assert.True(features.Logits.narrow(0, 128, 128).bytes.SequenceEqual(direct.Logits.bytes), "logits of batch 2");
        Assert.True(features.Probabilities.narrow(0, 128, 128).bytes.SequenceEqual(direct.Probabilities.bytes));
        Assert.All(features.Keys.norm(1).data<float>().ToArray(), n => Assert.Equal(1f, n, tolerance: 1e-5f));

        // The tensor overload gives the same rows.
        var images = tensor(test.Pixels.ToArray(), [count, 3, 32, 32]);
        var labels = tensor(test.Labels.ToArray(), [count]);
        using var viaTensor = DatasetFeatureExtractor.Extract(extractor, images, labels, loaded.Spec.Normalization, options, cancellationToken: ct);
        Assert.True(viaTensor.Keys.bytes.SequenceEqual(features.Keys.bytes));
        Assert.Equal(features.Labels.data<long>().ToArray(), viaTensor.Labels!.data<long>().ToArray());

        // Results are ordinary tensors that outlive the extractor's scope and allow in-place updates.
        features.Keys.mul_(1f);
    }

    [Fact]
    public void ABatchRunInForwardSlicesGivesTheWholeBatchsOutputsInEvalModeOnly()
    {
        using var loaded = ModelTestSupport.LoadResNet20();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var x = ModelTestSupport.NormalizedTestImages(0, 100);
        using var whole = new LayerTapExtractor(loaded.Model, Taps) { ForwardBatchSize = 100 };
        using var sliced = new LayerTapExtractor(loaded.Model, Taps) { ForwardBatchSize = 32 }; // 32, 32, 32 and 4 images
        Assert.Equal(LayerTapExtractor.DefaultForwardBatchSize, new LayerTapExtractor(loaded.Model, Taps).ForwardBatchSize);
        var (logits, activations) = whole.ForwardActivations(x);
        var (slicedLogits, slicedActivations) = sliced.ForwardActivations(x);
        Assert.Equal(logits.shape, slicedLogits.shape);
        Assert.True(logits.sub(slicedLogits).abs().max().item<float>() <= 1e-5f, "logits: each image's own, in order");
        for (var i = 0; i < activations.Length; i++)
        {
            Assert.Equal(activations[i].shape, slicedActivations[i].shape);
            Assert.True(activations[i].sub(slicedActivations[i]).abs().max().item<float>() <= 1e-5f, $"{Taps[i]}: each image's own, in order");
        }

        // Out of order slices would not pass: the last slice's images are not the first ones.
        Assert.True(logits.narrow(0, 96, 4).sub(logits.narrow(0, 0, 4)).abs().max().item<float>() > 1e-2f);
        using var keys = sliced.Extract(x);
        Assert.True(keys.Keys.sub(whole.Extract(x).Keys).abs().max().item<float>() <= 1e-6f, "Extract slices too");
        Assert.Throws<ArgumentOutOfRangeException>(() => sliced.ForwardBatchSize = 0);

        // In training mode (batch statistics) the network sees the whole batch: slices would change every value.
        using var small = nn.Sequential(("conv", nn.Conv2d(3, 4, 3)), ("bn", nn.BatchNorm2d(4)), ("pool", nn.AdaptiveAvgPool2d(1)), ("flat", nn.Flatten()), ("fc", nn.Linear(4, 3)));
        small.train();
        using var trainTap = new LayerTapExtractor(small, ["bn"]) { ForwardBatchSize = 8 };
        var images = randn(20, 3, 10, 10, generator: new Generator(7));
        var (trainLogits, _) = trainTap.ForwardActivations(images);
        Assert.True(trainLogits.sub(small.call(images)).abs().max().item<float>() <= 1e-6f, "the whole batch's statistics");
        Assert.True(trainLogits.narrow(0, 0, 8).sub(small.call(images.narrow(0, 0, 8))).abs().max().item<float>() > 1e-3f, "a slice's statistics differ");
    }

    [Fact]
    public void DatasetDriverValidatesItsInput()
    {
        using var model = new CifarResNet(1);
        using var extractor = new LayerTapExtractor(model, ["avgpool"]);
        var normalization = InputNormalization.ImageNet;
        var ct = TestContext.Current.CancellationToken;
        ImageDataset Images(int count) => new(new byte[3072 * count], new int[count], 3, 32, 32, ["a", "b"]);
        Assert.Throws<ArgumentException>(() => DatasetFeatureExtractor.Extract(
            extractor, Images(0), normalization, cancellationToken: ct));
        Assert.Throws<ArgumentException>(() => DatasetFeatureExtractor.Extract(
            extractor, Images(1), new InputNormalization([0.5f], [0.5f]), cancellationToken: ct));
        Assert.Throws<ArgumentOutOfRangeException>(() => DatasetFeatureExtractor.Extract(
            extractor, Images(1), normalization, new FeatureExtractionOptions { BatchSize = 0 }, cancellationToken: ct));
        Assert.Throws<ArgumentException>(() => DatasetFeatureExtractor.ExtractPerLayer(
            extractor, Images(1), normalization, storage: ScalarType.Float64, cancellationToken: ct));
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.Throws<OperationCanceledException>(() => DatasetFeatureExtractor.Extract(
            extractor, Images(1), normalization, cancellationToken: cts.Token));
    }

    private sealed class SynchronousProgress(Action<ExtractionProgress> report) : IProgress<ExtractionProgress>
    {
        public void Report(ExtractionProgress value) => report(value);
    }
}
