using ScalableCache.Core;
using ScalableCache.Core.Data;
using ScalableCache.Core.Models;
using ScalableCache.Core.Persistence;
using ScalableCache.Exact;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>The library object: fit on any TorchSharp module by module names, predict, grow, save, load with checks.</summary>
public sealed class CacheClassifierTests : IDisposable
{
    private readonly PersistenceTempFolder _folder = new();

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static ImageDataset TrainSlice => Cifar10.LoadTrain(SharedData.Cifar10).ClassBalancedSubset(30, seed: 1);

    private static ImageDataset ValidationSlice => ModelTestSupport.Cifar10Test.ClassBalancedSubset(10, seed: 2);

    private static CacheFitOptions Options(IReadOnlyList<string>? candidates = null, IReadOnlyList<string>? layers = null) => new()
    {
        Store = new ExactCacheMemoryFactory(new ExactCacheOptions()),
        Input = InputNormalization.ImageNet,
        InputShape = InputShape.Cifar,
        Candidates = candidates,
        Layers = layers,
        MaxLayers = 2,
        Grid = new GridSearchOptions { Thetas = [10, 40], Lambdas = [0.3, 0.7] },
        BatchSize = 64,
    };

    [Fact]
    public void ATorchVisionResNetFitsByModuleNamesPredictsGrowsAndRoundTrips()
    {
        torch.manual_seed(7);
        using var backbone = torchvision.models.resnet18(num_classes: 10);
        var train = TrainSlice;
        var validation = ValidationSlice;

        using var fit = CacheClassifier.Fit(backbone, train, validation, Options(candidates: ["layer4", "avgpool"]), Ct);
        var classifier = fit.Classifier;
        Assert.NotEmpty(fit.Report.Layers);
        Assert.All(fit.Report.Layers, l => Assert.Contains(l, new[] { "layer4", "avgpool" }));
        Assert.NotNull(fit.Report.LayerSearch);
        Assert.Equal(512 * fit.Report.Layers.Count, classifier.Dimension); // layer4 of a 32×32 input is 512×1×1, avgpool 512
        Assert.Equal(train.Count, classifier.Count);
        Assert.Contains(fit.Report.Tuning.Theta, new[] { 10.0, 40.0 });
        Assert.Equal(classifier.Theta, fit.Report.Tuning.Theta);

        using var scope = NewDisposeScope();
        var images = validation.Slice(0, 20).ToTensor(0, 20);
        var p = classifier.Probabilities(images);
        Assert.Equal([20L, 10L], p.shape);
        Assert.True(p.sum(1).allclose(ones(20), rtol: 0, atol: 1e-5));
        using (var outputs = classifier.Classify(images))
        {
            // The mixture is (1 − λ) p_net + λ p_mem of the same pass.
            var lambda = classifier.Lambda!.Value;
            Assert.True(outputs.Probabilities.allclose((outputs.Network * (1 - lambda)) + (outputs.Memory * lambda), rtol: 1e-5, atol: 1e-6));
            Assert.True(classifier.Predict(images).eq(outputs.Predictions()).all().item<bool>());
        }

        // Online growth: the validation images join the memory; each then finds itself at similarity 1.
        classifier.Add(images, validation.Slice(0, 20).LabelsToTensor(0, 20));
        Assert.Equal(train.Count + 20, classifier.Count);
        var grown = classifier.Probabilities(images);

        var path = _folder.File("resnet18.scache");
        var header = classifier.Save(path, cancellationToken: Ct);
        Assert.Equal(classifier.Recipe, header.Recipe);
        Assert.Equal(train.Count + 20, header.Count);

        using var loaded = CacheClassifier.Load(path, backbone, new CacheLoadOptions { Providers = [new ExactCacheMemoryFactory(new ExactCacheOptions())] }, Ct);
        Assert.Equal(classifier.Recipe, loaded.Recipe);
        Assert.Equal(classifier.Theta, loaded.Theta);
        Assert.Equal(classifier.Lambda, loaded.Lambda);
        Assert.True(loaded.Probabilities(images).eq(grown).all().item<bool>(), "identical probabilities after save and load");
    }

    [Fact]
    public void APerPixelConcatenatedRecipeIsSavedAndLoadedWithItsStatistics()
    {
        using var net = TinyTapNet.Create(3, ScalarType.Float32);
        var shape = new InputShape(2, 4, 4);
        var mean = Enumerable.Range(0, shape.Size).Select(i => 0.3f + (0.01f * i)).ToArray();
        var std = Enumerable.Range(0, shape.Size).Select(i => 0.2f + (0.005f * i)).ToArray();
        var recipe = new KeyRecipe(["conv", "act"], InputNormalization.PerPixel(mean, std, shape), shape, KeyNormalization.Concatenated);
        var factory = new ExactCacheMemoryFactory(new ExactCacheOptions());
        var (classes, dimension) = recipe.Probe(net);
        using var scope = NewDisposeScope();
        var images = rand(6, 2, 4, 4);
        var path = _folder.File("per-pixel.scache");
        Tensor before;
        using (var classifier = new CacheClassifier(net, recipe, factory.Create(dimension, classes), 20, 0.5))
        {
            classifier.Add(images, tensor(new long[] { 0, 1, 2, 0, 1, 2 }));
            before = classifier.Probabilities(images);
            classifier.Save(path, cancellationToken: Ct);
        }

        using var loaded = CacheClassifier.Load(path, net, new CacheLoadOptions { Providers = [factory] }, Ct);
        Assert.Equal(recipe, loaded.Recipe);
        Assert.True(loaded.Recipe.Input.IsPerPixel);
        Assert.Equal(mean, loaded.Recipe.Input.Mean);
        Assert.Contains("per pixel over 2×4×4 images", CacheFile.ReadHeader(path).Normalization, StringComparison.Ordinal);
        Assert.True(loaded.Probabilities(images).eq(before).all().item<bool>(), "identical probabilities after save and load");

        // Per-pixel statistics are x/255 per position: the normalised image is (x − mean[c, h, w]) / std[c, h, w].
        var x = full(1, 2, 4, 4, 0.5f);
        var normalised = recipe.Input.Normalize(x);
        Assert.Equal((0.5f - mean[5]) / std[5], normalised[0, 0, 1, 1].item<float>(), 1e-5f);
        Assert.Throws<ArgumentException>(() => recipe.Input.Normalize(rand(1, 2, 5, 5)));

        // Flipping after normalising (Orhan's cache) = normalising the flipped image with mirrored statistics.
        var some = rand(3, 2, 4, 4);
        var flippedAfter = recipe.Input.Normalize(some).flip(3);
        var mirrored = recipe.Input.Mirrored().Normalize(some.flip(3));
        Assert.True(mirrored.allclose(flippedAfter, rtol: 1e-6, atol: 1e-6), "mirrored statistics");
        Assert.False(recipe.Input.Normalize(some.flip(3)).allclose(flippedAfter, rtol: 1e-3, atol: 1e-3), "per-pixel statistics are not symmetric here");
        Assert.Same(InputNormalization.ImageNet, InputNormalization.ImageNet.Mirrored());
    }

    [Fact]
    public void LoadChecksCheckpointClassCountAndKeyWidthBeforeAnyQuery()
    {
        using var net = TinyTapNet.Create(3, ScalarType.Float32);
        var recipe = new KeyRecipe(["conv", "act"], TinyTapNet.Normalization, new InputShape(2, 4, 4));
        var (classes, dimension) = recipe.Probe(net);
        Assert.Equal((3, 2 * 3 * 16), (classes, dimension));
        var factory = new ExactCacheMemoryFactory(new ExactCacheOptions());
        var memory = factory.Create(dimension, classes);
        using var scope = NewDisposeScope();
        var images = rand(6, 2, 4, 4);
        var built = new CacheModelId("tiny", new string('a', 64), "tiny-a.safetensors");
        string path;
        using (var classifier = new CacheClassifier(net, recipe, memory, 20, 0.5, new CacheClassifierOptions { Model = built }))
        {
            classifier.Add(images, tensor(new long[] { 0, 1, 2, 0, 1, 2 }));
            path = _folder.File("tiny.scache");
            classifier.Save(path, cancellationToken: Ct);
        }

        CacheLoadOptions Options(CacheModelId? model, bool allow = false) => new() { Providers = [factory], Model = model, AllowCheckpointMismatch = allow };

        // Another checkpoint of the same architecture: named with both digests.
        var other = built with { CheckpointSha256 = new string('b', 64), CheckpointFile = "tiny-b.safetensors" };
        var e = Assert.Throws<CacheFileException>(() => CacheClassifier.Load(path, net, Options(other), Ct));
        Assert.Equal(CacheFileProblem.Mismatch, e.Problem);
        Assert.Contains(new string('a', 64), e.Message, StringComparison.Ordinal);
        Assert.Contains(new string('b', 64), e.Message, StringComparison.Ordinal);
        Assert.Contains("tiny-b.safetensors", e.Message, StringComparison.Ordinal);

        // A checkpoint digest is required once the file records one, unless reuse is deliberate.
        Assert.Equal(CacheFileProblem.Mismatch, Assert.Throws<CacheFileException>(() => CacheClassifier.Load(path, net, Options(new CacheModelId("tiny")), Ct)).Problem);
        using (var reused = CacheClassifier.Load(path, net, Options(other, allow: true), Ct))
        {
            Assert.Equal(6, reused.Count);
        }

        // Another model name, another class count, another key width.
        Assert.Contains("'tiny'", Assert.Throws<CacheFileException>(() => CacheClassifier.Load(path, net, Options(new CacheModelId("resnet20")), Ct)).Message, StringComparison.Ordinal);
        using var fourClasses = new TinyTapNet(classes: 4);
        var classMismatch = Assert.Throws<CacheFileException>(() => CacheClassifier.Load(path, fourClasses, Options(built), Ct));
        Assert.Contains("3 classes but the backbone outputs 4", classMismatch.Message, StringComparison.Ordinal);
        using var wider = new TinyTapNet(side: 5); // its classifier expects 5×5 images: it cannot make the file's 4×4 keys
        var inputMismatch = Assert.Throws<CacheFileException>(() => CacheClassifier.Load(path, wider, Options(built), Ct));
        Assert.Equal(CacheFileProblem.Mismatch, inputMismatch.Problem);
        Assert.Contains("2×4×4", inputMismatch.Message, StringComparison.Ordinal);
        using (var wrongWidth = factory.Create(dimension + 1, classes))
        {
            var widthMismatch = Assert.Throws<ArgumentException>(() => new CacheClassifier(net, recipe, wrongWidth, 20, 0.5));
            Assert.Contains($"dimension {dimension + 1}", widthMismatch.Message, StringComparison.Ordinal);
            Assert.Contains($"make {dimension}", widthMismatch.Message, StringComparison.Ordinal);
        }

        // The right checkpoint loads and answers as saved.
        using var loaded = CacheClassifier.Load(path, net, Options(built), Ct);
        Assert.Equal(recipe, loaded.Recipe);
        Assert.Equal(20, loaded.Theta);
    }

    [Fact]
    public async Task PredictionsRunWhileAnotherThreadAddsAndSeeWholeAdds()
    {
        using var net = TinyTapNet.Create(5, ScalarType.Float32);
        var recipe = new KeyRecipe(["act"], TinyTapNet.Normalization, new InputShape(2, 4, 4));
        var (classes, dimension) = recipe.Probe(net);
        using var classifier = new CacheClassifier(
            net, recipe, new ExactCacheMemoryFactory(new ExactCacheOptions()).Create(dimension, classes), 30, 1.0, new CacheClassifierOptions { BatchSize = 4 });
        const int adds = 40;
        const int perAdd = 3;
        var batches = Enumerable.Range(0, adds).Select(i =>
        {
            var images = Images(perAdd, 100 + i);
            return (Images: images, Labels: full(perAdd, i % classes, ScalarType.Int64));
        }).ToList();
        var queries = Images(8, 7);
        var seen = new System.Collections.Concurrent.ConcurrentBag<long>();
        using var done = new CancellationTokenSource();
        var readers = Enumerable.Range(0, 2).Select(_ => Task.Run(() =>
        {
            while (!done.IsCancellationRequested)
            {
                using var scope = NewDisposeScope();
                var before = classifier.Count;
                using var outputs = classifier.Classify(queries);
                var after = classifier.Count;
                // Cache-only (λ = 1): every row is a distribution over the classes seen so far, or all zeros before the first add.
                var sums = outputs.Probabilities.sum(1);
                Assert.True(before == 0 || sums.allclose(ones_like(sums), rtol: 0, atol: 1e-5), $"rows sum to {sums.min().item<float>()}…");
                Assert.True(after % perAdd == 0 && before % perAdd == 0, "a count part-way through an add");
                seen.Add(after);
            }
        }, Ct)).ToList();
        foreach (var (images, labels) in batches)
        {
            classifier.Add(images, labels);

            // Wait (bounded) until a reader has seen this state, so reads provably interleave with the adds.
            var count = classifier.Count;
            var wait = System.Diagnostics.Stopwatch.StartNew();
            while (!seen.Contains(count) && wait.Elapsed < TimeSpan.FromSeconds(10))
            {
                await Task.Delay(1, Ct);
            }
        }

        done.Cancel();
        await Task.WhenAll(readers);
        Assert.Equal(adds * perAdd, classifier.Count);
        Assert.Equal(adds, seen.Where(c => c > 0).Distinct().Count()); // a prediction saw every intermediate state
        foreach (var (images, labels) in batches)
        {
            images.Dispose();
            labels.Dispose();
        }

        queries.Dispose();
    }

    private static Tensor Images(int count, int seed) =>
        tensor(KnownClassifiers.Uniform(count * 2 * 4 * 4, seed, 0.05, 0.95).Select(v => (float)v).ToArray(), [count, 2, 4, 4]);

    [Fact]
    public void TheKeyRecipesComposeFromActivationsAndFromStoredUnitParts()
    {
        using var scope = NewDisposeScope();
        var a = randn(5, 3, 2, 2, dtype: ScalarType.Float64);
        var b = randn(5, 7, dtype: ScalarType.Float64) * 10;
        var flatA = a.reshape(5, -1);
        foreach (var mode in new[] { KeyNormalization.PerLayer, KeyNormalization.Concatenated })
        {
            var keys = KeyRecipe.Compose([a, b], mode);
            var expected = mode == KeyNormalization.PerLayer
                ? cat([flatA / flatA.norm(1).unsqueeze(1), b / b.norm(1).unsqueeze(1)], 1)
                : cat([flatA, b], 1);
            expected /= expected.norm(1).unsqueeze(1);
            Assert.True(keys.allclose(expected, rtol: 1e-12, atol: 1e-12), mode.ToString());

            // What PerLayerKeys stores: unit parts and norms.
            var parts = new[] { flatA / flatA.norm(1).unsqueeze(1), b / b.norm(1).unsqueeze(1) };
            var composed = KeyRecipe.ComposeUnitParts(parts, [flatA.norm(1), b.norm(1)], mode);
            Assert.True(composed.allclose(expected.to_type(ScalarType.Float32), rtol: 1e-5, atol: 1e-6), mode.ToString());

            // Normalised in place, the values are those of nn.functional.normalize over the concatenation, bit for bit, and the
            // caller's parts are untouched (also a single part, which may be the caller's own tensor).
            var floatParts = parts.Select(p => p.to_type(ScalarType.Float32)).ToArray();
            var before = floatParts.Select(p => p.clone()).ToArray();
            var joined = mode == KeyNormalization.PerLayer
                ? cat(floatParts, 1)
                : cat([floatParts[0] * flatA.norm(1).to_type(ScalarType.Float32).unsqueeze(1), floatParts[1] * b.norm(1).to_type(ScalarType.Float32).unsqueeze(1)], 1);
            var reference = nn.functional.normalize(joined, 2, 1, KeyRecipe.NormEpsilon);
            var float32 = KeyRecipe.ComposeUnitParts(floatParts, [flatA.norm(1).to_type(ScalarType.Float32), b.norm(1).to_type(ScalarType.Float32)], mode);
            Assert.True(float32.eq(reference).all().item<bool>(), $"{mode}: in-place normalisation differs from nn.functional.normalize");
            Assert.True(floatParts.Zip(before).All(p => p.First.eq(p.Second).all().item<bool>()), "the parts are not modified");
            var single = KeyRecipe.ComposeUnitParts([floatParts[1]], [b.norm(1).to_type(ScalarType.Float32)], mode);
            Assert.True(floatParts[1].eq(before[1]).all().item<bool>(), "a single part is not modified");
            Assert.True(single.eq(nn.functional.normalize(mode == KeyNormalization.PerLayer ? floatParts[1] : floatParts[1] * b.norm(1).to_type(ScalarType.Float32).unsqueeze(1), 2, 1, KeyRecipe.NormEpsilon)).all().item<bool>());
        }

        // At the CIFAR ResNets' widths (three 4,096-wide layers, 300 rows) as well.
        var wide = Enumerable.Range(0, 3).Select(_ => nn.functional.normalize(randn(300, 4096), 2, 1, KeyRecipe.NormEpsilon)).ToArray();
        var wideNorms = Enumerable.Range(0, 3).Select(_ => rand(300) + 0.5).ToArray();
        Assert.True(KeyRecipe.ComposeUnitParts(wide, wideNorms, KeyNormalization.PerLayer).eq(nn.functional.normalize(cat(wide, 1), 2, 1, KeyRecipe.NormEpsilon)).all().item<bool>());
        Assert.True(KeyRecipe.ComposeUnitParts(wide, wideNorms, KeyNormalization.Concatenated)
            .eq(nn.functional.normalize(cat([.. wide.Select((w, i) => w * wideNorms[i].unsqueeze(1))], 1), 2, 1, KeyRecipe.NormEpsilon)).all().item<bool>());

        Assert.Throws<ArgumentException>(() => new KeyRecipe(["x", "x"], InputNormalization.ImageNet, InputShape.Cifar));
        Assert.Throws<ArgumentException>(() => new KeyRecipe([], InputNormalization.ImageNet, InputShape.Cifar));
        Assert.Throws<ArgumentException>(() => new KeyRecipe(["x"], InputNormalization.ImageNet, new InputShape(1, 32, 32)));
    }

    public void Dispose() => _folder.Dispose();
}
