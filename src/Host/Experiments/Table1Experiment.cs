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
    double? Lambda);

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
        var test = session.LoadTest(request.Data);
        var train = session.LoadTrain(request.Data, flips: false);
        var split = ExperimentSession.Split(test, request.Seed, ValidationFraction);
        var classCount = model.Model.ClassCount;

        LayerCombinationResult? search = null;
        var layers = request.Layers;
        if (layers is null)
        {
            var candidates = request.Candidates ?? LayerChoice.DefaultCandidates(model);
            search = progress.Timed($"{request.Model}: layer-combination search over {string.Join(", ", candidates)}",
                () => SearchLayers(model, train, test.Subset(split.First), candidates, request, classCount, cancellationToken), out var searchTime);
            seconds["layerSearch"] = searchTime.TotalSeconds;
            layers = search.Layers;
            progress.Status($"{request.Model}: chose [{string.Join(", ", layers)}] (validation error {search.Score.Error:P2})");
        }

        var cacheData = request.Flip ? train.WithHorizontalFlips() : train;
        using var trainFeatures = progress.Timed($"{request.Model}: training keys", () => session.Extract(model, cacheData, layers, "train", cancellationToken), out var t1);
        seconds["extractTrain"] = t1.TotalSeconds;
        using var testFeatures = progress.Timed($"{request.Model}: test keys", () => session.Extract(model, test, layers, "test", cancellationToken), out var t2);
        seconds["extractTest"] = t2.TotalSeconds;
        using var validation = testFeatures.Rows(split.First);
        using var report = testFeatures.Rows(split.Second);

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

    private LayerCombinationResult SearchLayers(
        LoadedModel model, ImageDataset train, ImageDataset validation, IReadOnlyList<string> candidates, Table1Request request, int classCount,
        CancellationToken cancellationToken)
    {
        using var trainKeys = session.ExtractPerLayer(model, train, candidates, "train (per layer)", cancellationToken);
        using var validationKeys = session.ExtractPerLayer(model, validation, candidates, "validation (per layer)", cancellationToken);
        var list = candidates.Select(c => new LayerCandidate(c, trainKeys.Keys[c], validationKeys.Keys[c])).ToList();
        var reporter = new SyncProgress<string>(session.Progress.Status);
        return LayerCombinationSearch.Run(
            list, trainKeys.Labels, validationKeys.Probabilities, validationKeys.Labels, classCount,
            request.Grid.Thetas, request.Grid.IncludeCacheOnly ? request.Grid.EffectiveLambdas : request.Grid.Lambdas,
            request.MaxLayers, reporter);
    }
}
