using System.Diagnostics;
using System.Globalization;
using ScalableCache.Core;
using ScalableCache.Core.Data;
using ScalableCache.Core.Evaluation;
using ScalableCache.Core.Features;
using ScalableCache.Host.Cli;

namespace ScalableCache.Host.Experiments;

/// <summary>Inputs of one Table 1 row.</summary>
internal sealed record Table1Request(
    string Model,
    string? Weights,
    string? Data,
    IReadOnlyList<string>? Layers,
    IReadOnlyList<string>? Candidates,
    int MaxLayers,
    int Seed,
    bool Flip,
    GridSearchOptions Grid,
    double? Theta,
    double? Lambda,
    int? MaxTrain = null,
    int? MaxTest = null,
    string? CacheFile = null,
    DataSetKind? Dataset = null,
    int? PerClass = null,
    bool HalfKeys = false);

/// <summary>One Table 1 row with everything needed to reproduce it.</summary>
internal sealed record Table1Row(
    string Model,
    IReadOnlyList<string> Layers,
    long KeyDimension,
    long CacheSize,
    bool Flip,
    int Seed,
    int ValidationCount,
    int ReportCount,
    string Provider,
    double BaselineError,
    double CacheError,
    double CacheOnlyError,
    double Theta,
    double Lambda,
    double CacheOnlyTheta,
    bool ThetaAtGridEdge,
    bool CacheOnlyThetaAtGridEdge,
    double ValidationBaselineError,
    double ValidationCacheError,
    double ValidationCacheOnlyError,
    IReadOnlyList<double> Thetas,
    IReadOnlyList<double> Lambdas,
    IReadOnlyList<IReadOnlyList<double>> ValidationErrorGrid,
    LayerCombinationResult? LayerSearch,
    IReadOnlyDictionary<string, double> Seconds)
{
    /// <summary>θ values adaptive widening added beyond the configured grid.</summary>
    public int ThetaWidenings { get; init; }

    /// <summary>The data set (<c>cifar10</c>, <c>cifar100</c>, <c>imagenet</c>).</summary>
    public string Dataset { get; init; } = "";

    /// <summary>Training images the cache was made from, before any per-class subset (equal to <see cref="CacheSize"/> without one, unflipped).</summary>
    public long TrainCount { get; init; }

    /// <summary>Images per class of the seeded cache subset (<c>--per-class</c>); <see langword="null"/> for the whole training set.</summary>
    public int? PerClass { get; init; }

    /// <summary>
    /// Images/s of the training images' loader with nothing else running, over the first two batches (streamed data sets only;
    /// <see langword="null"/> for in-memory ones).
    /// </summary>
    public double? LoaderAloneImagesPerSecond { get; init; }

    /// <summary>How fast each extraction ran (<c>train</c>, <c>test</c>): images/s of the loader beside the network and of the whole pass.</summary>
    public IReadOnlyDictionary<string, ExtractionThroughput> Throughput { get; init; } = new Dictionary<string, ExtractionThroughput>();

    /// <summary>Wall time, CPU time and peak resident memory per stage, where measured.</summary>
    public IReadOnlyDictionary<string, StageUsage> Usage { get; init; } = new Dictionary<string, StageUsage>();
}

/// <summary>
/// The paper's headline experiment for one model: choose layers (greedy search) and θ, λ on a seeded half of the test set,
/// report the network, the cache model and the cache-only model on the other half.
/// </summary>
internal sealed class Table1Experiment(ExperimentSession session)
{
    public async Task<Table1Row> RunAsync(Table1Request request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        var total = Stopwatch.StartNew();
        var progress = session.Progress;
        var provider = session.Provider; // an unknown provider fails before any work
        using var model = await session.LoadModelAsync(request.Model, request.Weights, cancellationToken, request.Data).ConfigureAwait(false);
        if (request.CacheFile is not null)
        {
            return RunFromCacheFile(request, model, total, cancellationToken);
        }

        var kind = ExperimentSession.DataSetOf(model, request.Dataset);
        if (kind == DataSetKind.ImageNet && request.Flip)
        {
            throw new UsageException("--flip needs the training images in memory; ImageNet's stream from disk.");
        }

        if (request.PerClass is not null && kind != DataSetKind.ImageNet)
        {
            throw new UsageException("--per-class applies to ImageNet; for CIFAR use --max-train.");
        }

        int trainCount;
        IImageSource train, test;
        DatasetSplit split;
        if (kind == DataSetKind.ImageNet)
        {
            (train, test, split, trainCount) = session.LoadImageNet(model, request.Data, request.Seed, request.PerClass, request.MaxTest);
        }
        else
        {
            (train, test, split) = session.LoadData(model, request.Data, request.Seed, request.MaxTrain, request.MaxTest);
            trainCount = train.Count;
        }

        var fitter = session.Fitter(model, o =>
        {
            o.Layers = request.Layers?.Select(model.Model.ResolveLayer).ToList(); // a Keras model also takes model.layers indices
            o.Candidates = request.Candidates?.Select(model.Model.ResolveLayer).ToList();
            o.MaxLayers = request.MaxLayers;
            o.Grid = request.Grid;
            o.Theta = request.Theta;
            o.Lambda = request.Lambda;
            o.Flip = request.Flip;
            o.CandidateStorage = request.HalfKeys ? TorchSharp.torch.ScalarType.Float16 : TorchSharp.torch.ScalarType.Float32;
        });

        // One forward pass over the test images, then one over the training images, taps every layer needed (candidates, or the
        // given layers). Neither pass keeps a candidate's keys in memory beyond the validation half's: they go to files, each
        // candidate's similarities to the validation half are computed batch by batch for the layer search, and the cache (and the
        // report half) is composed from the chosen layers' keys read back, bit for bit those an in-memory pass gives.
        var meter = new StageMeter((name, usage) => progress.Status($"{request.Model}: {StageMeter.Describe(name, usage)}"));
        var candidates = fitter.Candidates();
        double? loaderAlone = null;
        if (train is not ImageDataset)
        {
            loaderAlone = ExtractionThroughput.MeasureLoader(train, 2 * Math.Max(1, session.BatchSize), Math.Max(1, session.BatchSize));
            progress.Status(string.Create(CultureInfo.InvariantCulture, $"{request.Model}: loader alone {loaderAlone:0.0} images/s (decoding on {Environment.ProcessorCount} cores, no network)"));
        }

        using var testKeys = progress.Timed($"{request.Model}: test keys", () => meter.Measure("extractTest",
            () => fitter.ExtractForSearch(test, null, candidates, "test", cancellationToken)), out _);

        // The validation half's keys of every candidate are held only while the training pass computes the similarities; the fit
        // needs their norms, probabilities and labels, and reads the chosen layers' keys back for the θ/λ search.
        using var trainKeys = progress.Timed($"{request.Model}: training keys{(request.Layers is null ? " and similarities" : "")}", () => meter.Measure("extractTrain", () =>
        {
            using var validationKeys = request.Layers is null ? testKeys.Rows(split.First) : null;
            return fitter.ExtractForSearch(train, validationKeys, candidates, "train", cancellationToken);
        }), out _);
        var throughput = new Dictionary<string, ExtractionThroughput>();
        foreach (var (part, rate) in new[] { ("train", trainKeys.Throughput), ("test", testKeys.Throughput) })
        {
            if (rate is { } t)
            {
                throughput[part] = t;
                progress.Status(string.Create(CultureInfo.InvariantCulture,
                    $"{request.Model}: {part} {t.Images:N0} images, {t.ImagesPerSecond:0.0}/s with the network, loader {t.LoaderImagesPerSecond:0.0}/s beside it; the network waited {t.WaitSeconds:0.0} s for images"));
            }
        }

        using var fit = progress.Timed($"{request.Model}: fit ({(request.Layers is null ? "layer search, " : "")}{provider.Provider} cache, θ/λ search)",
            () => fitter.Fit(trainKeys, testKeys, split.First, train as ImageDataset, cancellationToken), out _);
        meter.Add(fit.Report.Usage);
        var layers = fit.Report.Layers;
        var result = progress.Timed($"{request.Model}: report", () => meter.Measure("report", () =>
        {
            using var report = testKeys.Compose(layers, split.Second, fit.Classifier.Recipe.Normalization);
            return CacheEvaluation.Report(fit.Classifier.Memory, fit.Report.Tuning, report, Math.Max(1, session.BatchSize));
        }), out _);
        var seconds = meter.Stages.ToDictionary(s => s.Key, s => s.Value.Seconds, StringComparer.Ordinal);
        seconds["total"] = total.Elapsed.TotalSeconds;
        return Row(request, model.Spec.Name, layers, fit.Report.KeyDimension, fit.Report.CacheSize, request.Flip, split, provider.Provider, result,
            fit.Report.LayerSearch, seconds) with
        {
            Dataset = ExperimentSession.Name(kind),
            TrainCount = trainCount,
            PerClass = request.PerClass,
            LoaderAloneImagesPerSecond = loaderAlone,
            Throughput = throughput,
            Usage = meter.Stages,
        };
    }

    /// <summary>
    /// Evaluates a cache built earlier (<c>scache build</c>): its keys, layers and provider come from the file (an HNSW graph is
    /// loaded, not rebuilt), so only the test images go through the network. θ, λ: flags, else the file's, else searched.
    /// </summary>
    private Table1Row RunFromCacheFile(Table1Request request, LoadedModel model, Stopwatch total, CancellationToken cancellationToken)
    {
        var progress = session.Progress;
        using var classifier = progress.Timed($"load {request.CacheFile}", () => session.LoadClassifier(request.CacheFile!, model, cancellationToken), out var tl);
        var recipe = classifier.Recipe;
        if (request.Layers is { } wanted && !wanted.SequenceEqual(recipe.Layers))
        {
            throw new UsageException($"The cache file keys layers [{string.Join(", ", recipe.Layers)}], not [{string.Join(", ", wanted)}].");
        }

        var kind = ExperimentSession.DataSetOf(model, request.Dataset);
        IImageSource test = kind == DataSetKind.ImageNet
            ? ExperimentSession.ImageNetValidation(model, request.Data, request.MaxTest, request.Seed)
            : ExperimentSession.Limit(session.LoadTest(model, request.Data), request.MaxTest, request.Seed);
        var split = test.SeededSplit(request.Seed, ExperimentSession.ValidationFraction);
        var fitter = session.Fitter(model, o => o.KeyNormalization = recipe.Normalization);
        using var testKeys = progress.Timed($"{request.Model}: test keys", () => fitter.ExtractLayers(test, recipe.Layers, "test", cancellationToken), out var t2);
        using var validation = testKeys.Compose(recipe.Layers, split.First, recipe.Normalization);
        using var report = testKeys.Compose(recipe.Layers, split.Second, recipe.Normalization);
        var theta = request.Theta ?? (request.Lambda is null ? classifier.Theta : null);
        var lambda = request.Lambda ?? (request.Theta is null ? classifier.Lambda : null);
        if (theta.HasValue != lambda.HasValue)
        {
            (theta, lambda) = (null, null);
        }

        var result = progress.Timed($"{request.Model}: θ/λ search and report", () => CacheEvaluation.Evaluate(
            classifier.Memory, validation, report, request.Grid, Math.Max(1, session.BatchSize), theta, lambda), out var t4);
        var seconds = new Dictionary<string, double>
        {
            ["loadCache"] = tl.TotalSeconds,
            ["extractTest"] = t2.TotalSeconds,
            ["evaluate"] = t4.TotalSeconds,
            ["total"] = total.Elapsed.TotalSeconds,
        };
        return Row(request, model.Spec.Name, recipe.Layers, classifier.Dimension, classifier.Count, classifier.Flip, split, classifier.Memory.Provider, result,
            null, seconds) with
        {
            Dataset = ExperimentSession.Name(kind),
            TrainCount = classifier.Count,
            Throughput = testKeys.Throughput is { } t ? new Dictionary<string, ExtractionThroughput> { ["test"] = t } : new Dictionary<string, ExtractionThroughput>(),
        };
    }

    public static Table1Row Row(
        Table1Request request, string model, IReadOnlyList<string> layers, long keyDimension, long cacheSize, bool flip, DatasetSplit split,
        string provider, CacheEvaluationResult result, LayerCombinationResult? search, IReadOnlyDictionary<string, double> seconds) =>
        new(model, layers, keyDimension, cacheSize, flip, request.Seed, split.First.Count, split.Second.Count,
            provider, result.BaselineError, result.CacheError, result.CacheOnlyError, result.Theta, result.Lambda, result.CacheOnlyTheta,
            result.ThetaAtGridEdge, result.CacheOnlyThetaAtGridEdge, result.ValidationBaselineError, result.ValidationCacheError,
            result.ValidationCacheOnlyError, result.Grid.Thetas, result.Grid.Lambdas, result.Grid.Errors, search, seconds)
        {
            ThetaWidenings = result.Tuning.ThetaWidenings,
        };
}
