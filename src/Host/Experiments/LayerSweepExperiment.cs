using System.Diagnostics;
using ScalableCache.Core;
using ScalableCache.Core.Evaluation;
using ScalableCache.Core.Features;
using ScalableCache.RandomProjection;
using static TorchSharp.torch;

namespace ScalableCache.Host.Experiments;

/// <summary>One layer's point of the sweep (Figure 2).</summary>
internal sealed record LayerSweepPoint(
    string Layer,
    int Index,
    double Depth,
    long Dimension,
    long KeyDimension,
    bool Projected,
    double FixedError,
    double SearchedError,
    double CacheOnlyError,
    double Theta,
    double Lambda,
    double CacheOnlyTheta,
    double Seconds);

/// <summary>The whole sweep.</summary>
internal sealed record LayerSweepResult(
    string Model,
    int Seed,
    double BaselineError,
    double FixedTheta,
    double FixedLambda,
    int MaxDimension,
    string Provider,
    IReadOnlyList<LayerSweepPoint> Points,
    double Seconds);

/// <summary>
/// Figure 2 of the paper: the cache keyed on one layer at a time — the stem, every block output, the pooled features and the
/// logits — with the error on the report half at the paper's θ = 50, λ = 0.5 and with θ, λ searched on the validation half.
/// </summary>
/// <remarks>
/// Early layers are large (ResNet stage 1: 16 × 32 × 32 = 16,384 values). Keys are extracted a few layers per forward pass,
/// stored as float16, and a layer wider than <c>maxDimension</c> is projected to that width with a seeded Gaussian
/// Johnson–Lindenstrauss matrix (unit rows again after projection), which bounds both memory and time.
/// </remarks>
internal sealed class LayerSweepExperiment(ExperimentSession session)
{
    public async Task<LayerSweepResult> RunAsync(
        string modelName, string? weights, string? data, int seed, GridSearchOptions grid, double fixedTheta, double fixedLambda,
        int maxDimension, CancellationToken cancellationToken)
    {
        var watch = Stopwatch.StartNew();
        var provider = session.Provider;
        using var model = await session.LoadModelAsync(modelName, weights, cancellationToken, data).ConfigureAwait(false);
        var (train, test, split) = session.LoadData(model, data, seed);
        var layers = CandidateLayers.Sweep(model.Model, model.Input);
        var fitter = session.Fitter(model, o => o.CandidateStorage = ScalarType.Float16);
        var classCount = model.Model.ClassCount;
        var points = new List<LayerSweepPoint>();
        double baseline = double.NaN;

        // Groups of layers per forward pass, at most ~48k float16 values per image in memory at once.
        const long groupBudget = 49_152;
        var groups = new List<List<LayerInfo>>();
        foreach (var layer in layers)
        {
            if (groups.Count == 0 || groups[^1].Sum(l => l.FeatureCount) + layer.FeatureCount > groupBudget)
            {
                groups.Add([]);
            }

            groups[^1].Add(layer);
        }

        var searchGrid = new GridSearchOptions
        {
            Thetas = grid.Thetas.Contains(fixedTheta) ? grid.Thetas : [.. grid.Thetas, fixedTheta],
            Lambdas = grid.Lambdas,
            IncludeCacheOnly = grid.IncludeCacheOnly,
        };
        foreach (var group in groups)
        {
            var names = group.Select(l => l.Name).ToList();
            using var trainKeys = fitter.ExtractLayers(train, names, "train", cancellationToken);
            using var testKeys = fitter.ExtractLayers(test, names, "test", cancellationToken);
            foreach (var layer in group)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var layerWatch = Stopwatch.StartNew();
                var projected = layer.FeatureCount > maxDimension;
                using var trainTable = Keys(trainKeys, layer, projected, maxDimension, null);
                using var validation = Keys(testKeys, layer, projected, maxDimension, split.First);
                using var report = Keys(testKeys, layer, projected, maxDimension, split.Second);
                using var memory = fitter.BuildMemory(trainTable, classCount);
                var searched = CacheEvaluation.Evaluate(memory, validation, report, searchGrid, session.BatchSize);
                var fixedReport = CacheGridSearch.Search(memory, report.Keys, report.Probabilities, report.Labels,
                    new GridSearchOptions { Thetas = [fixedTheta], Lambdas = [fixedLambda] }, session.BatchSize);
                baseline = searched.BaselineError;
                var index = points.Count;
                points.Add(new LayerSweepPoint(
                    layer.Name, index, layers.Count == 1 ? 1 : index / (double)(layers.Count - 1), layer.FeatureCount, trainTable.KeyDimension,
                    projected, fixedReport.Error, searched.CacheError, searched.CacheOnlyError, searched.Theta, searched.Lambda, searched.CacheOnlyTheta,
                    layerWatch.Elapsed.TotalSeconds));
                session.Progress.Status(
                    $"{layer.Name} ({layer.FeatureCount}{(projected ? $" → {maxDimension}" : string.Empty)}): θ=50,λ=0.5 {fixedReport.Error:P2}; searched {searched.CacheError:P2} (θ={searched.Theta}, λ={searched.Lambda}); cache-only {searched.CacheOnlyError:P2}; network {baseline:P2}");
            }
        }

        return new LayerSweepResult(model.Spec.Name, seed, baseline, fixedTheta, fixedLambda, maxDimension, provider.Provider, points, watch.Elapsed.TotalSeconds);
    }

    private static FeatureTable Keys(PerLayerKeys keys, LayerInfo layer, bool project, int width, IReadOnlyList<int>? rows)
    {
        var table = keys.Compose([layer.Name], rows);
        if (!project)
        {
            return table;
        }

        using (table)
        {
            using var scope = NewDisposeScope();
            using var projection = RandomProjectionMatrix.Create(RandomProjectionKind.Gaussian, 20181203, (int)layer.FeatureCount, width);
            var projectedKeys = nn.functional.normalize(projection.Apply(table.Keys), 2, 1, KeyRecipe.NormEpsilon);
            var result = new FeatureTable(projectedKeys, table.Probabilities, table.Labels, table.Layers);
            result.Keys.DetachFromDisposeScope();
            result.Probabilities.DetachFromDisposeScope();
            result.Labels.DetachFromDisposeScope();
            return result;
        }
    }
}
