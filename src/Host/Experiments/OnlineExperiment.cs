using System.Diagnostics;
using ScalableCache.Core;
using ScalableCache.Core.Evaluation;
using static TorchSharp.torch;

namespace ScalableCache.Host.Experiments;

/// <summary>Running errors after each streamed batch.</summary>
internal sealed record OnlineStep(int Seen, double NetworkError, double StaticCacheError, double GrowingCacheError, long GrowingCacheSize);

/// <summary>The online run.</summary>
internal sealed record OnlineResult(
    string Model, IReadOnlyList<string> Layers, string Provider, int Seed, int BatchSize, bool StartEmpty, double Theta, double Lambda,
    long StaticCacheSize, IReadOnlyList<OnlineStep> Steps, double NetworkError, double StaticCacheError, double GrowingCacheError,
    double QueriesPerSecond, double Seconds);

/// <summary>
/// Online evaluation with a growing cache (the unbounded-cache setting of Grave et al.): the report half of the test set is
/// streamed in a seeded order in batches; each batch is predicted with the current cache and then added to it with its true
/// labels. Compared against the static training-set cache and the network alone. θ and λ come from the validation half.
/// </summary>
internal sealed class OnlineExperiment(ExperimentSession session)
{
    public async Task<OnlineResult> RunAsync(
        string modelName, string? weights, string? data, IReadOnlyList<string>? layers, int seed, int batch, bool startEmpty,
        GridSearchOptions grid, double? theta, double? lambda, int maxLayers, CancellationToken cancellationToken)
    {
        var watch = Stopwatch.StartNew();
        var provider = session.Provider;
        using var model = await session.LoadModelAsync(modelName, weights, cancellationToken, data).ConfigureAwait(false);
        var (train, test, split) = session.LoadData(model, data, seed);
        var classCount = model.Model.ClassCount;
        var fitter = session.Fitter(model, o =>
        {
            o.Layers = layers;
            o.Grid = grid;
            o.MaxLayers = maxLayers;
            var both = theta is not null && lambda is not null;
            o.Theta = both ? theta : null;
            o.Lambda = both ? lambda : null;
        });
        var candidates = fitter.Candidates();
        using var trainKeys = fitter.ExtractLayers(train, candidates, "train", cancellationToken);
        using var testKeys = fitter.ExtractLayers(test, candidates, "test", cancellationToken);
        using var validationKeys = testKeys.Rows(split.First);

        // The static cache: the training keys, θ and λ from the validation half (unless given).
        using var fit = fitter.Fit(trainKeys, validationKeys, cancellationToken: cancellationToken);
        layers = fit.Report.Layers;
        var staticMemory = fit.Classifier.Memory;
        (theta, lambda) = (fit.Report.Tuning.Theta, fit.Report.Tuning.Lambda);
        session.Progress.Status($"θ = {theta}, λ = {lambda}{(fit.Report.Tuning.Searched ? " from the validation half" : string.Empty)}");

        // The stream: the report half in a seeded random order.
        var order = split.Second.ToArray();
        new Random(seed).Shuffle(order);
        using var stream = fitter.Compose(testKeys, layers, order);
        using var trainTable = startEmpty ? null : fitter.Compose(trainKeys, layers);
        using var growing = trainTable is null ? provider.Create(staticMemory.Dimension, classCount) : fitter.BuildMemory(trainTable, classCount);

        var steps = new List<OnlineStep>();
        long netWrong = 0, staticWrong = 0, growingWrong = 0;
        var queryTime = TimeSpan.Zero;
        var progress = session.Progress.Step("online", stream.Count);
        for (var start = 0; start < stream.Count; start += batch)
        {
            cancellationToken.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            var n = (int)Math.Min(batch, stream.Count - start);
            var keys = stream.Keys.narrow(0, start, n);
            var pNet = stream.Probabilities.narrow(0, start, n);
            var labels = stream.Labels.narrow(0, start, n);
            var queryWatch = Stopwatch.StartNew();
            var staticPrediction = CacheMixer.Predict(staticMemory, keys, pNet, theta.Value, lambda.Value, n);
            var growingPrediction = growing.Count == 0
                ? pNet.argmax(1)
                : CacheMixer.Predict(growing, keys, pNet, theta.Value, lambda.Value, n);
            queryTime += queryWatch.Elapsed;
            netWrong += pNet.argmax(1).ne(labels).sum().item<long>();
            staticWrong += staticPrediction.ne(labels).sum().item<long>();
            growingWrong += growingPrediction.ne(labels).sum().item<long>();

            // Then the batch joins the growing cache with its true labels.
            growing.Add(keys, labels);
            var seen = start + n;
            steps.Add(new OnlineStep(seen, netWrong / (double)seen, staticWrong / (double)seen, growingWrong / (double)seen, growing.Count));
            progress.Report(seen);
        }

        var total = (double)stream.Count;
        return new OnlineResult(
            model.Spec.Name, layers, provider.Provider, seed, batch, startEmpty, theta.Value, lambda.Value, staticMemory.Count, steps,
            netWrong / total, staticWrong / total, growingWrong / total, 2 * total / Math.Max(queryTime.TotalSeconds, 1e-9), watch.Elapsed.TotalSeconds);
    }
}
