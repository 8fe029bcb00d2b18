using System.Diagnostics;
using ScalableCache.Core;
using ScalableCache.Core.Data;
using ScalableCache.Core.Evaluation;
using ScalableCache.Core.Robustness;
using ScalableCache.Host.Cli;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Host.Experiments;

/// <summary>What the robustness commands need to set up one backbone's cache models.</summary>
/// <param name="Model">Registry name.</param>
/// <param name="Data">CIFAR-10 folder flag (or null for the configured one).</param>
/// <param name="Layers">Cache layers, or null to choose them by the greedy search on the validation half (as Table 1 does).</param>
/// <param name="Candidates">Candidate layers of that search (null: the defaults).</param>
/// <param name="MaxLayers">Largest layer set of that search.</param>
/// <param name="Seed">Seed of the validation/report split of the test set (and of subsets).</param>
/// <param name="Grid">θ × λ grid searched on the validation half.</param>
/// <param name="Theta">Fixed θ of the cache model (with <paramref name="Lambda"/>), or null to search.</param>
/// <param name="Lambda">Fixed λ of the cache model (with <paramref name="Theta"/>), or null to search.</param>
/// <param name="CacheOnlyTheta">Fixed θ of the cache-only model, or null to search it.</param>
/// <param name="MaxTrain">Class-balanced subset of the training set for the cache (quick runs), or null for all.</param>
/// <param name="MaxTest">Class-balanced subset of the test set (quick runs), or null for all.</param>
internal sealed record RobustnessRequest(
    string Model,
    string? Data,
    IReadOnlyList<string>? Layers,
    IReadOnlyList<string>? Candidates,
    int MaxLayers,
    int Seed,
    GridSearchOptions Grid,
    double? Theta,
    double? Lambda,
    double? CacheOnlyTheta,
    int? MaxTrain,
    int? MaxTest);

/// <summary>How a backbone's cache models were set up (reported with every robustness result).</summary>
internal sealed record RobustnessBackboneInfo(
    string Model,
    IReadOnlyList<string> Layers,
    long KeyDimension,
    long CacheSize,
    double Theta,
    double Lambda,
    double CacheOnlyTheta,
    bool Searched,
    double? ValidationBaselineError,
    double? ValidationCacheError,
    double? ValidationCacheOnlyError,
    double? ReportBaselineError,
    double? ReportCacheError,
    double? ReportCacheOnlyError,
    IReadOnlyDictionary<string, double> Seconds);

/// <summary>A backbone with its differentiable cache model and the three variants. Owns both.</summary>
internal sealed class RobustnessBackbone(LoadedModel model, CacheModel cache, RobustnessBackboneInfo info, ImageDataset test, DatasetSplit split) : IDisposable
{
    public LoadedModel Model { get; } = model;

    public CacheModel Cache { get; } = cache;

    public RobustnessBackboneInfo Info { get; } = info;

    /// <summary>The (possibly limited) test set.</summary>
    public ImageDataset Test { get; } = test;

    /// <summary>Its validation (θ, λ search) and report halves.</summary>
    public DatasetSplit Split { get; } = split;

    public string Name => Info.Model;

    /// <summary>baseline (λ = 0), cache (θ, λ), cache-only (λ = 1, its own θ).</summary>
    public IReadOnlyList<CacheVariant> Variants =>
        [CacheVariant.Baseline, CacheVariant.Cache(Info.Theta, Info.Lambda), CacheVariant.CacheOnly(Info.CacheOnlyTheta)];

    public void Dispose()
    {
        Cache.Dispose();
        Model.Dispose();
    }
}

/// <summary>
/// Sets up a backbone for the robustness analyses the way Table 1 evaluates it: keys of the chosen layers over the training set,
/// θ and λ (and the cache-only θ) searched on the validation half of the test set with <see cref="CacheEvaluation"/>, layers chosen
/// by <see cref="LayerCombinationSearch"/> when not given; then a differentiable <see cref="CacheModel"/> over those keys.
/// Also: seeded image samples and batched accuracies shared by the attack and Jacobian experiments.
/// </summary>
internal sealed class RobustnessExperiment(ExperimentSession session)
{
    public ExperimentSession Session => session;

    public async Task<RobustnessBackbone> PrepareAsync(RobustnessRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        var seconds = new Dictionary<string, double>();
        var total = Stopwatch.StartNew();
        var progress = session.Progress;
        var model = await session.LoadModelAsync(request.Model, null, cancellationToken, request.Data).ConfigureAwait(false);
        try
        {
            var (train, test, split) = session.LoadData(model, request.Data, request.Seed, request.MaxTrain, request.MaxTest);
            var layers = request.Layers;
            var fitter = session.Fitter(model, o =>
            {
                o.Layers = layers;
                o.Candidates = request.Candidates;
                o.MaxLayers = request.MaxLayers;
                o.Grid = request.Grid;
                o.Theta = request.Theta;
                o.Lambda = request.Lambda;
                o.CandidateStorage = ScalarType.Float16;
            });
            CacheEvaluationResult? evaluation = null;
            FeatureTable trainTable;
            if (layers is not null && request.Theta.HasValue && request.Lambda.HasValue && request.CacheOnlyTheta.HasValue)
            {
                // Everything given: only the training keys are needed.
                trainTable = progress.Timed($"{request.Model}: training keys", () => fitter.Extract(train, layers, "train", cancellationToken), out var t);
                seconds["extractTrain"] = t.TotalSeconds;
            }
            else
            {
                var candidates = fitter.Candidates();
                using var trainKeys = progress.Timed($"{request.Model}: training keys", () => fitter.ExtractLayers(train, candidates, "train", cancellationToken), out var t1);
                seconds["extractTrain"] = t1.TotalSeconds;
                using var testKeys = progress.Timed($"{request.Model}: test keys", () => fitter.ExtractLayers(test, candidates, "test", cancellationToken), out var t2);
                seconds["extractTest"] = t2.TotalSeconds;
                using var validationKeys = testKeys.Rows(split.First);
                using var fit = progress.Timed($"{request.Model}: fit", () => fitter.Fit(trainKeys, validationKeys, cancellationToken: cancellationToken), out var t3);
                foreach (var (stage, time) in fit.Report.Seconds)
                {
                    seconds[stage] = time;
                }

                layers = fit.Report.Layers;
                using var report = fitter.Compose(testKeys, layers, split.Second);
                evaluation = CacheEvaluation.Report(fit.Classifier.Memory, fit.Report.Tuning, report, Math.Max(1, session.BatchSize));
                trainTable = fitter.Compose(trainKeys, layers);
            }

            using (trainTable)
            {
                var theta = request.Theta ?? evaluation!.Theta;
                var lambda = request.Lambda ?? evaluation!.Lambda;
                var cacheOnlyTheta = request.CacheOnlyTheta ?? evaluation!.CacheOnlyTheta;
                var cache = new CacheModel(model.Model, model.Normalization, layers, trainTable.Keys, trainTable.Labels);
                seconds["prepare"] = total.Elapsed.TotalSeconds;
                var info = new RobustnessBackboneInfo(
                    model.Spec.Name, layers, trainTable.KeyDimension, trainTable.Count, theta, lambda, cacheOnlyTheta, evaluation?.Searched ?? false,
                    evaluation?.ValidationBaselineError, evaluation?.ValidationCacheError, evaluation?.ValidationCacheOnlyError,
                    evaluation?.BaselineError, evaluation?.CacheError, evaluation?.CacheOnlyError, seconds);
                progress.Status(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                    $"{info.Model}: cache on [{string.Join(", ", layers)}] ({info.CacheSize} keys × {info.KeyDimension}), θ={theta}, λ={lambda}, cache-only θ={cacheOnlyTheta}"));
                return new RobustnessBackbone(model, cache, info, test, split);
            }
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// <paramref name="count"/> seeded random images of the report half (never used to choose θ, λ or layers), ascending:
    /// pixels in [0, 1] <c>[n, C, H, W]</c> on the model's device and true labels <c>[n]</c>.
    /// </summary>
    public static (int[] Indices, Tensor Pixels, Tensor Labels) Sample(RobustnessBackbone backbone, int count, int seed)
    {
        ArgumentNullException.ThrowIfNull(backbone);
        if (count < 1)
        {
            throw new UsageException("--images must be at least 1.");
        }

        var pool = backbone.Split.Second.ToArray();
        new Random(seed).Shuffle(pool);
        var indices = pool.Take(count).Order().ToArray();
        var subset = backbone.Test.Subset(indices);
        return (indices, subset.ToTensor(0, subset.Count, backbone.Model.Device), subset.LabelsToTensor(0, subset.Count, backbone.Model.Device));
    }

    /// <summary>Predicted labels of a classifier for pixels, in batches, under <c>no_grad</c>.</summary>
    public static long[] Predict(Func<Tensor, Tensor> classifier, Tensor pixels, int batchSize)
    {
        ArgumentNullException.ThrowIfNull(classifier);
        ArgumentNullException.ThrowIfNull(pixels);
        var result = new List<long>();
        using var noGrad = no_grad();
        for (long start = 0; start < pixels.shape[0]; start += batchSize)
        {
            using var scope = NewDisposeScope();
            var batch = pixels.narrow(0, start, Math.Min(batchSize, pixels.shape[0] - start));
            result.AddRange(classifier(batch).argmax(1).cpu().data<long>().ToArray());
        }

        return [.. result];
    }

    /// <summary>Fraction of <paramref name="predictions"/> equal to <paramref name="labels"/> (NaN when empty).</summary>
    public static double Accuracy(IReadOnlyList<long> predictions, IReadOnlyList<long> labels) =>
        predictions.Count == 0 ? double.NaN : predictions.Where((p, i) => p == labels[i]).Count() / (double)predictions.Count;
}
