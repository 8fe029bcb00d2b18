using ScalableCache.Core;
using ScalableCache.Core.Data;
using ScalableCache.Core.Evaluation;
using ScalableCache.Core.Features;
using ScalableCache.Core.Models;
using ScalableCache.Exact;
using Xunit;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>
/// The layer search without held keys (<see cref="LayerSearchKeys"/>): one pass over the training images spills each candidate's
/// keys and computes its similarities; everything it yields must be bit-identical to the in-memory path, and the fit must choose
/// and score exactly what the in-memory fit does — on the real ResNet-20 and CIFAR-10 images.
/// </summary>
public sealed class LayerSearchKeysTests : IDisposable
{
    private readonly PersistenceTempFolder _folder = new();

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    // 700 training images (not a multiple of the batch) and 300 validation images.
    private static ImageDataset Train => Cifar10.LoadTrain(SharedData.Cifar10).ClassBalancedSubset(70, seed: 3);

    private static ImageDataset Validation => ModelTestSupport.Cifar10Test.ClassBalancedSubset(30, seed: 4);

    private CacheFitOptions Options(bool flip = false, IReadOnlyList<string>? layers = null, SearchSimilarities similarities = SearchSimilarities.Auto) => new()
    {
        SearchSimilarities = similarities,
        Store = new ExactCacheMemoryFactory(new ExactCacheOptions()),
        Input = InputNormalization.ImageNet,
        InputShape = InputShape.Cifar,
        MaxLayers = 3,
        Layers = layers,
        Grid = new GridSearchOptions { Thetas = [10, 30, 50, 70, 90], Lambdas = [0.1, 0.3, 0.5, 0.7, 0.9] },
        BatchSize = 96,
        KeyFolder = _folder.Path,
        Flip = flip,
    };

    [Fact]
    public void TheOnePassGivesBitIdenticalKeysNormsAndSimilaritiesToThePerLayerPath()
    {
        using var net = ModelTestSupport.LoadResNet20();
        var fitter = new CacheFitter(net.Model, Options());
        var candidates = fitter.Candidates();
        Assert.True(candidates.Count >= 3, $"candidates: {string.Join(", ", candidates)}");
        var train = Train;
        using var validation = fitter.ExtractLayers(Validation, candidates, "validation", Ct);
        using var inMemory = fitter.ExtractLayers(train, candidates, "train", Ct);
        using var spilled = fitter.ExtractForSearch(train, validation, candidates, "train", Ct);

        Assert.Equal(train.Count, spilled.Count);
        Assert.True(Same(spilled.Labels, inMemory.Labels));
        Assert.True(Same(spilled.Probabilities, inMemory.Probabilities), "probabilities");
        Assert.Equal(candidates.Sum(l => inMemory.Layer(l).shape[1]) * train.Count * sizeof(float), spilled.SpilledBytes);
        foreach (var layer in candidates)
        {
            using var scope = NewDisposeScope();
            Assert.True(Same(spilled.ReadLayer(layer, 0, train.Count), inMemory.Layer(layer)), $"{layer}: keys");
            Assert.True(Same(spilled.ReadLayer(layer, 101, 250), inMemory.Layer(layer).narrow(0, 101, 250)), $"{layer}: rows 101..350");
            Assert.True(Same(spilled.Norms[layer], inMemory.Norms[layer]), $"{layer}: norms");
            var reference = LayerCombinationSearch.Similarities(validation.Layer(layer), inMemory.Layer(layer));
            var streamed = spilled.Similarities![layer].ToTensor();
            Assert.Equal(reference.shape, streamed.shape);
            var differing = reference.ne(streamed).sum().item<long>();
            Assert.True(differing == 0, $"{layer}: {differing} of {reference.numel()} float16 similarities differ from LayerCombinationSearch.Similarities");
        }

        // Any layer set's keys, composed from a chunk read back, are the in-memory path's keys of those rows.
        using (var scope = NewDisposeScope())
        {
            string[] set = [candidates[2], candidates[0]];
            using var all = inMemory.Compose(set);
            using var chunk = spilled.Compose(set, 350, 333);
            Assert.True(Same(chunk.Keys, all.Keys.narrow(0, 350, 333)), "composed keys");
            Assert.True(Same(chunk.Labels, all.Labels.narrow(0, 350, 333)));
        }

        // Rows read back (the report half of a test pass) are the in-memory path's rows.
        int[] rows = [5, 699, 0, 350, 351];
        using (var fromFiles = spilled.Rows(rows, [candidates[1], candidates[0]]))
        using (var fromMemory = inMemory.Rows(rows, [candidates[1], candidates[0]]))
        {
            Assert.Equal(fromMemory.Keys.Keys, fromFiles.Keys.Keys);
            foreach (var layer in fromMemory.Keys.Keys)
            {
                Assert.True(Same(fromFiles.Layer(layer), fromMemory.Layer(layer)), $"{layer}: rows");
                Assert.True(Same(fromFiles.Norms[layer], fromMemory.Norms[layer]), $"{layer}: row norms");
            }

            Assert.True(Same(fromFiles.Probabilities, fromMemory.Probabilities));
            Assert.True(Same(fromFiles.Labels, fromMemory.Labels));
        }

        // Rows composed straight from the files (the report half as `reproduce` reads it) are the in-memory composition, both recipes.
        foreach (var normalization in new[] { KeyNormalization.PerLayer, KeyNormalization.Concatenated })
        {
            using var composed = spilled.Compose([candidates[1], candidates[0]], rows, normalization);
            using var fromMemory = inMemory.Rows(rows, [candidates[1], candidates[0]]);
            using var expected = fromMemory.Compose([candidates[1], candidates[0]], normalization: normalization);
            Assert.True(Same(composed.Keys, expected.Keys), $"{normalization}: composed rows");
            Assert.True(Same(composed.Probabilities, expected.Probabilities));
            Assert.True(Same(composed.Labels, expected.Labels));
        }

        spilled.ReleaseSimilarities();
        Assert.Null(spilled.Similarities);
        Assert.True(Same(spilled.ReadLayer(candidates[0], 0, 1), inMemory.Layer(candidates[0]).narrow(0, 0, 1)), "keys stay readable");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TheSpilledFitChoosesAndScoresExactlyWhatTheInMemoryFitDoes(bool flip)
    {
        using var net = ModelTestSupport.LoadResNet20();
        var options = Options(flip);
        var fitter = new CacheFitter(net.Model, options);
        var candidates = fitter.Candidates();
        var train = Train;
        using var validation = fitter.ExtractLayers(Validation, candidates, "validation", Ct);
        using var inMemoryKeys = fitter.ExtractLayers(train, candidates, "train", Ct);
        using var reference = fitter.Fit(inMemoryKeys, validation, train, Ct);

        string folder;
        CacheFitReport report;
        using (var spilled = fitter.ExtractForSearch(train, validation, candidates, "train", Ct))
        {
            folder = Assert.Single(Directory.GetDirectories(_folder.Path));
            using var fit = fitter.Fit(spilled, validation, train, Ct);
            report = fit.Report;
            Assert.Null(spilled.Similarities); // freed before the memory is built
            using var scope = NewDisposeScope();
            using var queries = validation.Compose(report.Layers);
            var expected = reference.Classifier.Memory.ClassLogMass(queries.Keys, [10, 50, 90]);
            var actual = fit.Classifier.Memory.ClassLogMass(queries.Keys, [10, 50, 90]);
            Assert.True(Same(actual, expected), "the two memories answer identically");
        }

        Assert.False(Directory.Exists(folder), "the key files are deleted with the keys");
        Assert.Equal(reference.Report.Layers, report.Layers);
        Assert.Equal(reference.Report.CacheSize, report.CacheSize);
        Assert.Equal(flip ? 2 * train.Count : train.Count, report.CacheSize);
        Assert.Equal(reference.Report.LayerSearch!.Evaluated.Select(s => (string.Join(",", s.Layers), s.Error, s.Theta, s.Lambda)),
            report.LayerSearch!.Evaluated.Select(s => (string.Join(",", s.Layers), s.Error, s.Theta, s.Lambda)));
        Assert.Equal(reference.Report.Tuning.Theta, report.Tuning.Theta);
        Assert.Equal(reference.Report.Tuning.Lambda, report.Tuning.Lambda);
        Assert.Equal(reference.Report.Tuning.CacheOnlyTheta, report.Tuning.CacheOnlyTheta);
        Assert.Equal(reference.Report.Tuning.Grid.Errors.SelectMany(r => r), report.Tuning.Grid.Errors.SelectMany(r => r));
        Assert.Contains("layerSearch", report.Usage.Keys);
        Assert.Contains("buildCache", report.Usage.Keys);
        Assert.Contains("tune", report.Usage.Keys);
        Assert.Equal(flip, report.Usage.ContainsKey("extractFlipped"));
    }

    [Fact]
    public void AFitThatReadsTheValidationKeysBackFromTheTestKeyFilesIsTheFitThatHoldsThem()
    {
        // As `reproduce` runs: the test images go to files, the validation half's rows are held only while the training pass makes
        // the similarities, and the fit reads the chosen layers' validation keys back for θ and λ.
        using var net = ModelTestSupport.LoadResNet20();
        var fitter = new CacheFitter(net.Model, Options());
        var candidates = fitter.Candidates();
        var train = Train;
        var test = ModelTestSupport.Cifar10Test.ClassBalancedSubset(40, seed: 4);
        var rows = test.SeededSplit(5, 0.5).First;
        using var testKeys = fitter.ExtractForSearch(test, null, candidates, "test", Ct);
        using var held = testKeys.Rows(rows);

        using var outputs = testKeys.Rows(rows, keys: false);
        Assert.Empty(outputs.Keys);
        Assert.Equal(candidates, outputs.Norms.Keys);
        Assert.True(Same(outputs.Probabilities, held.Probabilities));
        Assert.True(Same(outputs.Labels, held.Labels));

        using var spilled = fitter.ExtractForSearch(train, held, candidates, "train", Ct);
        using var again = fitter.ExtractForSearch(train, held, candidates, "train", Ct);
        using var reference = fitter.Fit(spilled, held, train, Ct);
        using var fit = fitter.Fit(again, testKeys, rows, train, Ct);

        Assert.Equal(reference.Report.Layers, fit.Report.Layers);
        Assert.Equal(reference.Report.LayerSearch!.Evaluated.Select(s => (string.Join(",", s.Layers), s.Error, s.Theta, s.Lambda)),
            fit.Report.LayerSearch!.Evaluated.Select(s => (string.Join(",", s.Layers), s.Error, s.Theta, s.Lambda)));
        Assert.Equal(reference.Report.Tuning.Theta, fit.Report.Tuning.Theta);
        Assert.Equal(reference.Report.Tuning.Lambda, fit.Report.Tuning.Lambda);
        Assert.Equal(reference.Report.Tuning.CacheOnlyTheta, fit.Report.Tuning.CacheOnlyTheta);
        Assert.Equal(reference.Report.Tuning.Grid.Errors.SelectMany(r => r), fit.Report.Tuning.Grid.Errors.SelectMany(r => r));
        using var scope = NewDisposeScope();
        using var queries = held.Compose(fit.Report.Layers);
        Assert.True(Same(fit.Classifier.Memory.ClassLogMass(queries.Keys, [10, 50, 90]), reference.Classifier.Memory.ClassLogMass(queries.Keys, [10, 50, 90])));
    }

    [Fact]
    public void SimilaritiesComputedFromTheKeysAreTheFilesToAFloat16StepAndTheFitChoosesTheSame()
    {
        using var net = ModelTestSupport.LoadResNet20();
        var files = new CacheFitter(net.Model, Options(similarities: SearchSimilarities.Files));
        var fromKeys = new CacheFitter(net.Model, Options(similarities: SearchSimilarities.FromKeys));
        var candidates = files.Candidates();
        var train = Train;
        using var validation = files.ExtractLayers(Validation, candidates, "validation", Ct);
        using var written = files.ExtractForSearch(train, validation, candidates, "train", Ct);
        using var computed = fromKeys.ExtractForSearch(train, validation, candidates, "train", Ct);
        var folder = Assert.Single(Directory.GetDirectories(_folder.Path), d => Directory.GetFiles(d, "similarities*").Length == 0);
        Assert.Equal(candidates.Count, Directory.GetFiles(folder).Length); // the keys only
        Assert.IsType<SimilarityFile>(written.Similarities![candidates[0]]);

        foreach (var layer in candidates)
        {
            using var scope = NewDisposeScope();
            var a = written.Similarities![layer].ToTensor().to_type(ScalarType.Float32);
            var b = computed.Similarities![layer].ToTensor().to_type(ScalarType.Float32);
            var step = maximum(a.abs(), b.abs()) * Math.Pow(2, -10) + Math.Pow(2, -24); // one float16 step at most
            Assert.True((a - b).abs().le(step).all().item<bool>(), $"{layer}: a similarity differs by more than one float16 step");
            var differing = a.ne(b).sum().item<long>();
            Assert.True(differing <= a.numel() / 100, $"{layer}: {differing} of {a.numel()} similarities differ");
        }

        using var a1 = files.Fit(written, validation, train, Ct);
        using var b1 = fromKeys.Fit(computed, validation, train, Ct);
        Assert.Equal(a1.Report.Layers, b1.Report.Layers);
        Assert.Equal(a1.Report.Tuning.Theta, b1.Report.Tuning.Theta);
        Assert.Equal(a1.Report.Tuning.Lambda, b1.Report.Tuning.Lambda);
        Assert.Equal(a1.Report.LayerSearch!.Evaluated.Select(s => string.Join(",", s.Layers)), b1.Report.LayerSearch!.Evaluated.Select(s => string.Join(",", s.Layers)));
        foreach (var (x, y) in a1.Report.LayerSearch.Evaluated.Zip(b1.Report.LayerSearch.Evaluated))
        {
            Assert.True(Math.Abs(x.Error - y.Error) <= 2.0 / Validation.Count, $"[{string.Join(",", x.Layers)}]: {x.Error} and {y.Error}");
        }
    }

    [Theory]
    [InlineData(KeyNormalization.PerLayer)]
    [InlineData(KeyNormalization.Concatenated)]
    public void ThetaAndLambdaFromTheFloat32SimilaritiesAreWhatTheMemoryGives(KeyNormalization normalization)
    {
        using var net = ModelTestSupport.LoadResNet20();
        CacheFitOptions With(bool exact)
        {
            var o = Options();
            o.KeyNormalization = normalization;
            o.TuneFromSimilarities = exact;
            return o;
        }

        var fitter = new CacheFitter(net.Model, With(exact: true));
        var memoryFitter = new CacheFitter(net.Model, With(exact: false));
        var candidates = fitter.Candidates();
        var train = Train;
        using var validation = fitter.ExtractLayers(Validation, candidates, "validation", Ct);
        using var withExact = fitter.ExtractForSearch(train, validation, candidates, "train", Ct);
        using var without = memoryFitter.ExtractForSearch(train, validation, candidates, "train", Ct);
        using var poisoned = fitter.ExtractForSearch(train, validation, candidates, "train", Ct);
        Assert.Null(without.ExactSimilarities);
        var exact = withExact.ExactSimilarities!;
        Assert.Equal(candidates.Order(StringComparer.Ordinal), exact.Keys.Order(StringComparer.Ordinal));
        foreach (var layer in candidates)
        {
            using var scope = NewDisposeScope();
            var values = exact[layer].ToTensor();
            Assert.Equal(ScalarType.Float32, values.dtype);
            Assert.True(Same(withExact.Similarities![layer].ToTensor(), values.to_type(ScalarType.Float16)), $"{layer}: the float16 matrix is the float32 one rounded");
            var product = validation.Layer(layer).to_type(ScalarType.Float32).mm(withExact.ReadLayer(layer, 0, train.Count).t());
            var gap = (values - product).abs().max().item<float>();
            Assert.True(gap <= 1e-5f, $"{layer}: float32 similarities {gap} from the product of the keys");
        }

        // Zeroed float32 files make a different grid: the fit must be reading them.
        foreach (var file in poisoned.ExactSimilarities!.Values.Cast<SimilarityFile>())
        {
            using var handle = File.OpenHandle(file.Path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite);
            RandomAccess.Write(handle, new byte[RandomAccess.GetLength(handle)], 0);
        }

        using var a = fitter.Fit(withExact, validation, train, Ct);
        Assert.Null(withExact.ExactSimilarities); // freed once θ and λ are chosen
        using var b = memoryFitter.Fit(without, validation, train, Ct);
        using var c = fitter.Fit(poisoned, validation, train, Ct);
        Assert.Equal(b.Report.Layers, a.Report.Layers);
        Assert.Equal(b.Report.Tuning.Theta, a.Report.Tuning.Theta);
        Assert.Equal(b.Report.Tuning.Lambda, a.Report.Tuning.Lambda);
        Assert.Equal(b.Report.Tuning.CacheOnlyTheta, a.Report.Tuning.CacheOnlyTheta);
        Assert.Equal(b.Report.Tuning.ValidationBaselineError, a.Report.Tuning.ValidationBaselineError);
        Assert.Equal(b.Report.Tuning.ValidationCacheError, a.Report.Tuning.ValidationCacheError);
        Assert.Equal(b.Report.Tuning.ValidationCacheOnlyError, a.Report.Tuning.ValidationCacheOnlyError);
        Assert.Equal(b.Report.Tuning.Grid.Errors.SelectMany(r => r), a.Report.Tuning.Grid.Errors.SelectMany(r => r));
        Assert.Equal(b.Report.Layers, c.Report.Layers); // the search read the float16 files, untouched
        Assert.NotEqual(b.Report.Tuning.Grid.Errors.SelectMany(r => r), c.Report.Tuning.Grid.Errors.SelectMany(r => r));
    }

    [Fact]
    public void FixedLayersNeedNoSimilaritiesAndASearchWithoutThemFailsClearly()
    {
        using var net = ModelTestSupport.LoadResNet20();
        var fitter = new CacheFitter(net.Model, Options());
        var layer = fitter.Candidates()[1];
        using var validation = fitter.ExtractLayers(Validation, [layer], "validation", Ct);
        using var keys = fitter.ExtractForSearch(Train, null, [layer], "train", Ct);
        Assert.Null(keys.Similarities);
        Assert.Contains("no similarities", Assert.Throws<ArgumentException>(() => fitter.SearchLayers(keys, validation)).Message, StringComparison.Ordinal);
        var fixedFitter = new CacheFitter(net.Model, Options(layers: [layer]));
        using var fit = fixedFitter.Fit(keys, validation, null, Ct);
        Assert.Equal([layer], fit.Report.Layers);
        Assert.Null(fit.Report.LayerSearch);
    }

    public void Dispose() => _folder.Dispose();

    /// <summary>Same shape and every element equal (bit for bit, for finite values; −∞ equals −∞).</summary>
    private static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();
}
