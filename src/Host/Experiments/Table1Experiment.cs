using System.Diagnostics;
using ScalableCache.Core;
using ScalableCache.Core.Data;
using ScalableCache.Core.Evaluation;
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
    string? CacheFile = null);

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
    IReadOnlyDictionary<string, double> Seconds);

/// <summary>
/// The paper's headline experiment for one model: choose layers (greedy search) and θ, λ on a seeded half of the test set,
/// report the network, the cache model and the cache-only model on the other half.
/// </summary>
internal sealed class Table1Experiment(ExperimentSession session)
{
    /// <summary>The validation share of the test set.</summary>
    public const double ValidationFraction = 0.5;

    public async Task<Table1Row> RunAsync(Table1Request request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        var seconds = new Dictionary<string, double>();
        var total = Stopwatch.StartNew();
        var progress = session.Progress;
        var provider = session.Provider; // an unknown provider fails before any work
        using var model = await session.LoadModelAsync(request.Model, request.Weights, cancellationToken).ConfigureAwait(false);
        if (request.CacheFile is not null)
        {
            return RunFromCacheFile(request, model, seconds, total, cancellationToken);
        }

        var test = ExperimentSession.Limit(session.LoadTest(request.Data), request.MaxTest, request.Seed);
        var train = ExperimentSession.Limit(session.LoadTrain(request.Data, flips: false), request.MaxTrain, request.Seed);
        var split = ExperimentSession.Split(test, request.Seed, ValidationFraction);
        var classCount = model.Model.ClassCount;

        // One forward pass over the training and test images taps every layer needed (candidates, or the given layers);
        // the layer search and the final cache both use these keys.
        var candidates = request.Layers ?? request.Candidates ?? LayerChoice.DefaultCandidates(model);
        using var trainKeys = progress.Timed($"{request.Model}: training keys", () => session.ExtractPerLayer(model, train, candidates, "train", cancellationToken), out var t1);
        seconds["extractTrain"] = t1.TotalSeconds;
        using var testKeys = progress.Timed($"{request.Model}: test keys", () => session.ExtractPerLayer(model, test, candidates, "test", cancellationToken), out var t2);
        seconds["extractTest"] = t2.TotalSeconds;

        LayerCombinationResult? search = null;
        var layers = request.Layers;
        if (layers is null)
        {
            search = progress.Timed($"{request.Model}: layer-combination search over {string.Join(", ", candidates)}",
                () => SearchLayers(session, trainKeys, testKeys, split.First, candidates, request.Grid, request.MaxLayers, classCount), out var searchTime);
            seconds["layerSearch"] = searchTime.TotalSeconds;
            layers = search.Layers;
            progress.Status($"{request.Model}: chose [{string.Join(", ", layers)}] (validation error {search.Score.Error:P2})");
        }

        using var unflipped = trainKeys.Compose(layers);
        using var withFlips = request.Flip ? WithFlips(model, train, unflipped, layers, seconds, cancellationToken) : null;
        var trainFeatures = withFlips ?? unflipped;
        using var validation = testKeys.Compose(layers, split.First);
        using var report = testKeys.Compose(layers, split.Second);

        using var memory = progress.Timed($"{request.Model}: build {provider.Provider} cache", () => CacheEvaluation.Build(provider, trainFeatures, classCount), out var t3);
        seconds["buildCache"] = t3.TotalSeconds;
        var result = progress.Timed($"{request.Model}: θ/λ search and report", () => CacheEvaluation.Evaluate(
            memory, validation, report, request.Grid, Math.Max(1, session.BatchSize), request.Theta, request.Lambda), out var t4);
        seconds["evaluate"] = t4.TotalSeconds;
        seconds["total"] = total.Elapsed.TotalSeconds;

        return new Table1Row(
            model.Spec.Name, layers, trainFeatures.KeyDimension, memory.Count, request.Flip, request.Seed, split.First.Count, split.Second.Count,
            provider.Provider, result.BaselineError, result.CacheError, result.CacheOnlyError, result.Theta, result.Lambda, result.CacheOnlyTheta,
            result.ThetaAtGridEdge, result.CacheOnlyThetaAtGridEdge, result.ValidationBaselineError, result.ValidationCacheError,
            result.ValidationCacheOnlyError, result.Grid.Thetas, result.Grid.Lambdas, result.Grid.Errors, search, seconds);
    }

    /// <summary>
    /// Evaluates a cache built earlier (<c>scache build</c>): its keys, layers and provider come from the file (an HNSW graph is
    /// loaded, not rebuilt), so only the test images go through the network. θ, λ: flags, else the file's, else searched.
    /// </summary>
    private Table1Row RunFromCacheFile(Table1Request request, LoadedModel model, Dictionary<string, double> seconds, Stopwatch total, CancellationToken cancellationToken)
    {
        var progress = session.Progress;
        var header = ScalableCache.Core.Persistence.CacheFile.ReadHeader(request.CacheFile!);
        if (!string.Equals(header.Model.Name, model.Spec.Name, StringComparison.OrdinalIgnoreCase))
        {
            throw new UsageException($"The cache file '{request.CacheFile}' was built for model '{header.Model.Name}', not '{model.Spec.Name}'.");
        }

        if (request.Layers is { } wanted && !wanted.SequenceEqual(header.Layers))
        {
            throw new UsageException($"The cache file keys layers [{string.Join(", ", header.Layers)}], not [{string.Join(", ", wanted)}].");
        }

        var loaded = progress.Timed($"load {request.CacheFile}", () => session.LoadCacheFile(request.CacheFile!, cancellationToken), out var tl);
        seconds["loadCache"] = tl.TotalSeconds;
        using var memory = loaded.Memory;
        var test = ExperimentSession.Limit(session.LoadTest(request.Data), request.MaxTest, request.Seed);
        var split = ExperimentSession.Split(test, request.Seed, ValidationFraction);
        using var testKeys = progress.Timed($"{request.Model}: test keys", () => session.ExtractPerLayer(model, test, header.Layers, "test", cancellationToken), out var t2);
        seconds["extractTest"] = t2.TotalSeconds;
        using var validation = testKeys.Compose(header.Layers, split.First);
        using var report = testKeys.Compose(header.Layers, split.Second);
        var theta = request.Theta ?? (request.Lambda is null ? header.Theta : null);
        var lambda = request.Lambda ?? (request.Theta is null ? header.Lambda : null);
        if (theta.HasValue != lambda.HasValue)
        {
            (theta, lambda) = (null, null);
        }

        var result = progress.Timed($"{request.Model}: θ/λ search and report", () => CacheEvaluation.Evaluate(
            memory, validation, report, request.Grid, Math.Max(1, session.BatchSize), theta, lambda), out var t4);
        seconds["evaluate"] = t4.TotalSeconds;
        seconds["total"] = total.Elapsed.TotalSeconds;
        return new Table1Row(
            model.Spec.Name, header.Layers, memory.Dimension, memory.Count, header.Flip, request.Seed, split.First.Count, split.Second.Count,
            memory.Provider, result.BaselineError, result.CacheError, result.CacheOnlyError, result.Theta, result.Lambda, result.CacheOnlyTheta,
            result.ThetaAtGridEdge, result.CacheOnlyThetaAtGridEdge, result.ValidationBaselineError, result.ValidationCacheError,
            result.ValidationCacheOnlyError, result.Grid.Thetas, result.Grid.Lambdas, result.Grid.Errors, null, seconds);
    }

    private FeatureTable WithFlips(
        LoadedModel model, ImageDataset train, FeatureTable unflipped, IReadOnlyList<string> layers, Dictionary<string, double> seconds,
        CancellationToken cancellationToken)
    {
        var flippedImages = train.WithHorizontalFlips().Slice(train.Count, train.Count);
        using var flipped = session.Progress.Timed("flipped training keys", () => session.Extract(model, flippedImages, layers, "train (flipped)", cancellationToken), out var t);
        seconds["extractFlipped"] = t.TotalSeconds;
        return FeatureTable.Concat(unflipped, flipped);
    }

    /// <summary>Greedy layer-combination search on the validation rows of the test keys.</summary>
    public static LayerCombinationResult SearchLayers(
        ExperimentSession session, PerLayerKeys trainKeys, PerLayerKeys testKeys, IReadOnlyList<int> validationRows, IReadOnlyList<string> candidates,
        GridSearchOptions grid, int maxLayers, int classCount)
    {
        using var scope = TorchSharp.torch.NewDisposeScope();
        var rows = TorchSharp.torch.tensor(validationRows.Select(r => (long)r).ToArray());
        var list = candidates.Select(c => new LayerCandidate(c, trainKeys.Keys[c], testKeys.Keys[c].index_select(0, rows))).ToList();
        var reporter = new SyncProgress<string>(session.Progress.Status);
        return LayerCombinationSearch.Run(
            list, trainKeys.Labels, testKeys.Probabilities.index_select(0, rows), testKeys.Labels.index_select(0, rows), classCount,
            grid.Thetas, grid.IncludeCacheOnly ? grid.EffectiveLambdas : grid.Lambdas, maxLayers, reporter);
    }
}
