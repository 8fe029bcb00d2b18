using System.Diagnostics;
using ScalableCache.Core;
using ScalableCache.Core.Evaluation;
using ScalableCache.Hnsw;
using static TorchSharp.torch;

namespace ScalableCache.Host.Experiments;

/// <summary>How one approximate store compares with the exact store on the same keys (report half).</summary>
internal sealed record ApproximationRow(
    string Provider,
    string Details,
    long KeyDimension,
    double BuildSeconds,
    double QueriesPerSecond,
    double QuerySpeedupOverExact,
    double ErrorAtExactSetting,
    double ErrorDifferencePoints,
    double SearchedError,
    double SearchedTheta,
    double SearchedLambda,
    double Top1Agreement,
    double MeanTotalVariation,
    double? RecallAtK,
    int? TopK,
    long ResidentBytes,
    bool GraphReused);

/// <summary>The comparison.</summary>
internal sealed record ApproximationResult(
    string Model, IReadOnlyList<string> Layers, int Seed, long CacheSize, long KeyDimension, double Theta, double Lambda,
    double NetworkError, double ExactError, double ExactBuildSeconds, double ExactQueriesPerSecond, long ExactResidentBytes, IReadOnlyList<ApproximationRow> Rows,
    double Seconds);

/// <summary>
/// The approximation report: every approximate provider against the exact store on the same keys. θ and λ are searched for the
/// exact store on the validation half; on the report half each provider is measured at that setting (error, top-1 agreement of
/// the mixed model with exact, mean total-variation distance of p_mem, recall@k of the retrieved neighbours for HNSW) and at its
/// own searched setting. Extra HNSW search settings (top-k, efSearch) are measured on the same graph, without rebuilding it.
/// Resident memory is the growth of the process working set over each store's build, after full garbage collections.
/// </summary>
internal sealed class ApproximationExperiment(ExperimentSession session, Core.CacheProviderSelector providers)
{
    public async Task<ApproximationResult> RunAsync(
        string modelName, string? weights, string? data, IReadOnlyList<string>? layers, IReadOnlyList<string> compared, int seed,
        GridSearchOptions grid, int maxLayers, IReadOnlyList<(int TopK, int ExpansionSearch)> hnswSearches, int? maxTrain, int? maxTest,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(hnswSearches);
        var watch = Stopwatch.StartNew();
        var exactFactory = providers.Find("Exact");
        var factories = compared.Select(providers.Find).ToList(); // unknown names fail before any work
        using var model = await session.LoadModelAsync(modelName, weights, cancellationToken, data).ConfigureAwait(false);
        var (train, test, split) = session.LoadData(model, data, seed, maxTrain, maxTest);
        var fitter = session.Fitter(model, o =>
        {
            o.Layers = layers;
            o.Grid = grid;
            o.MaxLayers = maxLayers;
        }, exactFactory);
        var classCount = model.Model.ClassCount;
        var candidates = fitter.Candidates();
        using var trainKeys = fitter.ExtractLayers(train, candidates, "train", cancellationToken);
        using var testKeys = fitter.ExtractLayers(test, candidates, "test", cancellationToken);
        if (layers is null)
        {
            using var validationKeys = testKeys.Rows(split.First);
            layers = fitter.SearchLayers(trainKeys, validationKeys).Layers;
        }

        using var trainTable = fitter.Compose(trainKeys, layers);
        using var validation = fitter.Compose(testKeys, layers, split.First);
        using var report = fitter.Compose(testKeys, layers, split.Second);

        var residentBefore = Resident();
        var buildWatch = Stopwatch.StartNew();
        using var exact = fitter.BuildMemory(trainTable, classCount);
        var exactBuild = buildWatch.Elapsed.TotalSeconds;
        var exactResident = Resident() - residentBefore;
        var chosen = CacheGridSearch.Search(exact, validation.Keys, validation.Probabilities, validation.Labels, grid, session.BatchSize);
        var (theta, lambda) = (chosen.Theta, chosen.Lambda);
        var (exactMem, exactSeconds) = MemoryProbabilities(exact, report, theta);
        using var exactPMem = exactMem;
        using var exactPrediction = Predictions(exactPMem, report, lambda);
        var exactError = Error(exactPrediction, report);
        var exactQps = report.Count / exactSeconds;
        session.Progress.Status($"Exact: error {exactError:P2} at θ={theta}, λ={lambda}; {exactQps:0} queries/s; resident +{exactResident / 1048576.0:0} MiB");

        var rows = new List<ApproximationRow>();
        foreach (var factory in factories)
        {
            cancellationToken.ThrowIfCancellationRequested();
            residentBefore = Resident();
            buildWatch.Restart();
            using var memory = CacheEvaluation.Build(factory, trainTable, classCount);
            var build = buildWatch.Elapsed.TotalSeconds;
            var resident = Resident() - residentBefore;
            rows.Add(Measure(factory.Provider, memory, build, resident, graphReused: false));
            if (memory is IHnswCacheMemory hnsw)
            {
                foreach (var (topK, expansion) in hnswSearches)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    hnsw.TuneSearch(topK, expansion);
                    rows.Add(Measure(factory.Provider, memory, build, resident, graphReused: true));
                }
            }
        }

        ApproximationRow Measure(string provider, ICacheMemory memory, double build, long resident, bool graphReused)
        {
            var (approxMem, seconds) = MemoryProbabilities(memory, report, theta);
            using var pMem = approxMem;
            using var prediction = Predictions(pMem, report, lambda);
            using var scope = NewDisposeScope();
            var agreement = prediction.eq(exactPrediction).to_type(ScalarType.Float32).mean().item<float>();
            var tvd = (pMem - exactPMem).abs().sum(1).mul(0.5).mean().item<float>();
            var own = CacheEvaluation.Evaluate(memory, validation, report, grid, session.BatchSize);
            double? recall = null;
            int? topK = null;
            if (memory is IHnswCacheMemory hnsw)
            {
                topK = hnsw.Options.TopK;
                recall = HnswRecall.AtK(hnsw, report.Keys, trainTable.Keys, topK.Value);
            }

            var error = Error(prediction, report);
            session.Progress.Status(
                $"{provider} ({Describe(memory)}): error {error:P2} (Δ {(error - exactError) * 100:+0.00;-0.00} points), agreement {agreement:P2}, TVD {tvd:0.0000}" +
                (recall is null ? string.Empty : $", recall@{topK} {recall:0.0000}") + $", {report.Count / seconds:0} queries/s");
            return new ApproximationRow(
                provider, Describe(memory), memory.Dimension, build, report.Count / seconds, exactSeconds / seconds, error,
                (error - exactError) * 100, own.CacheError, own.Theta, own.Lambda, agreement, tvd, recall, topK, resident, graphReused);
        }

        return new ApproximationResult(
            model.Spec.Name, layers, seed, exact.Count, exact.Dimension, theta, lambda, report.NetworkError(), exactError, exactBuild, exactQps, exactResident, rows,
            watch.Elapsed.TotalSeconds);
    }

    private static string Describe(ICacheMemory memory) => memory switch
    {
        IHnswCacheMemory h => $"M={h.Options.Connectivity}, efConstruction={h.Options.ExpansionAdd}, efSearch={h.Options.ExpansionSearch}, top-k={h.Options.TopK}",
        RandomProjection.IRandomProjectionCacheMemory r =>
            $"{r.Projection.Kind} {r.Projection.InputDimension}→{r.Projection.OutputDimension}, renormalised={r.Renormalize}, inner={r.Inner.Provider}",
        _ => memory.Provider,
    };

    private static long Resident() => ProcessMemory.ResidentBytes();

    private (Tensor PMem, double Seconds) MemoryProbabilities(ICacheMemory memory, FeatureTable rows, double theta)
    {
        var watch = Stopwatch.StartNew();
        var parts = new List<Tensor>();
        for (long start = 0; start < rows.Count; start += session.BatchSize)
        {
            var n = Math.Min(session.BatchSize, rows.Count - start);
            parts.Add(memory.MemoryProbabilities(rows.Keys.narrow(0, start, n), theta));
        }

        var seconds = watch.Elapsed.TotalSeconds;
        var result = cat(parts);
        foreach (var p in parts)
        {
            p.Dispose();
        }

        return (result, seconds);
    }

    private static Tensor Predictions(Tensor pMem, FeatureTable rows, double lambda)
    {
        using var scope = NewDisposeScope();
        return CacheMixer.Mix(rows.Probabilities, pMem, lambda).argmax(1).MoveToOuterDisposeScope();
    }

    private static double Error(Tensor predictions, FeatureTable rows)
    {
        using var scope = NewDisposeScope();
        return predictions.ne(rows.Labels).sum().item<long>() / (double)rows.Count;
    }
}
