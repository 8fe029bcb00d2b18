using System.Diagnostics;
using ScalableCache.Core;
using ScalableCache.Core.Evaluation;

namespace ScalableCache.Host.Experiments;

/// <summary>One cache size and subset seed (Figure 3).</summary>
internal sealed record SizeSweepPoint(
    double Fraction, int PerClass, long CacheSize, int SubsetSeed, double BaselineError, double CacheError, double Gain, double Theta, double Lambda,
    double CacheOnlyError, double Seconds);

/// <summary>The whole sweep, with the mean gain per size.</summary>
internal sealed record SizeSweepResult(
    string Model, IReadOnlyList<string> Layers, int Seed, string Provider, IReadOnlyList<SizeSweepPoint> Points,
    IReadOnlyList<(double Fraction, double MeanGain, double MeanCacheError)> Summary, LayerCombinationResult? LayerSearch, double Seconds);

/// <summary>
/// Figure 3 of the paper: the gain of the cache model over the network against the cache size, for class-balanced random subsets
/// of the training set (several subset seeds per size), with θ and λ searched again for every cache.
/// </summary>
internal sealed class SizeSweepExperiment(ExperimentSession session)
{
    public static IReadOnlyList<double> DefaultFractions { get; } = [0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];

    public async Task<SizeSweepResult> RunAsync(
        string modelName, string? weights, string? data, IReadOnlyList<string>? layers, IReadOnlyList<double> fractions,
        IReadOnlyList<int> subsetSeeds, int seed, GridSearchOptions grid, int maxLayers, CancellationToken cancellationToken,
        int? maxTrain = null, int? maxTest = null)
    {
        var watch = Stopwatch.StartNew();
        var provider = session.Provider;
        using var model = await session.LoadModelAsync(modelName, weights, cancellationToken, data).ConfigureAwait(false);
        var (train, test, split) = session.LoadData(model, data, seed, maxTrain, maxTest);
        var fitter = session.Fitter(model, o =>
        {
            o.Layers = layers;
            o.Grid = grid;
            o.MaxLayers = maxLayers;
        });
        var candidates = fitter.Candidates();
        using var trainKeys = fitter.ExtractLayers(train, candidates, "train", cancellationToken);
        using var testKeys = fitter.ExtractLayers(test, candidates, "test", cancellationToken);
        using var validationKeys = testKeys.Rows(split.First);
        LayerCombinationResult? search = null;
        if (layers is null)
        {
            search = fitter.SearchLayers(trainKeys, validationKeys);
            layers = search.Layers;
            session.Progress.Status($"{modelName}: cache keyed on [{string.Join(", ", layers)}]");
        }

        // Every subset's cache is fitted with the chosen layers: memory of the subset's keys, θ and λ searched again.
        var chosen = layers;
        var subsetFitter = session.Fitter(model, o =>
        {
            o.Layers = chosen;
            o.Grid = grid;
            o.Progress = null;
        });
        using var report = fitter.Compose(testKeys, layers, split.Second);
        var points = new List<SizeSweepPoint>();
        foreach (var fraction in fractions)
        {
            foreach (var subsetSeed in subsetSeeds)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var pointWatch = Stopwatch.StartNew();
                var perClass = fraction == 0 ? 0 : train.PerClassForFraction(fraction);
                if (perClass == 0)
                {
                    // No cache: the model is the network.
                    var net = report.NetworkError();
                    points.Add(new SizeSweepPoint(fraction, 0, 0, subsetSeed, net, net, 0, double.NaN, 0, double.NaN, 0));
                    continue;
                }

                var indices = train.ClassBalancedIndices(perClass, subsetSeed);
                using var subset = trainKeys.Rows(indices, layers);
                using var fit = subsetFitter.Fit(subset, validationKeys, cancellationToken: cancellationToken);
                var memory = fit.Classifier.Memory;
                var result = CacheEvaluation.Report(memory, fit.Report.Tuning, report, session.BatchSize);
                points.Add(new SizeSweepPoint(
                    fraction, perClass, memory.Count, subsetSeed, result.BaselineError, result.CacheError, result.BaselineError - result.CacheError,
                    result.Theta, result.Lambda, result.CacheOnlyError, pointWatch.Elapsed.TotalSeconds));
                session.Progress.Status(
                    $"size {fraction:P0} ({memory.Count} keys, seed {subsetSeed}): cache {result.CacheError:P2} vs network {result.BaselineError:P2} (θ={result.Theta}, λ={result.Lambda})");
            }
        }

        var summary = points.GroupBy(p => p.Fraction)
            .Select(g => (g.Key, g.Average(p => p.Gain), g.Average(p => p.CacheError)))
            .ToList();
        return new SizeSweepResult(model.Spec.Name, layers, seed, provider.Provider, points, summary, search, watch.Elapsed.TotalSeconds);
    }
}
