using System.Diagnostics;
using ScalableCache.Core;
using ScalableCache.Core.Data;
using ScalableCache.Core.Evaluation;
using ScalableCache.Core.Models;

namespace ScalableCache.Host.Experiments;

/// <summary>
/// Table 1 of one of the author's Keras models under the author's protocol (his layers, θ and λ; a cache of all training images
/// plus their horizontal flips; errors on the whole test set) and under ours (layers, θ and λ searched on a seeded half of the test
/// set, errors on the other half, a cache of the training images), from one pass of the network over each image set.
/// </summary>
/// <param name="Model">Registry name.</param>
/// <param name="DataSet">The data set.</param>
/// <param name="TrainImages">Training images available (the cache holds these, and in the author's protocol their flips too).</param>
/// <param name="TestImages">Test images.</param>
/// <param name="Author">The author's protocol.</param>
/// <param name="Ours">Our protocol on the same network.</param>
/// <param name="Seconds">Wall time per stage.</param>
internal sealed record AuthorProtocolRow(
    string Model,
    string DataSet,
    int TrainImages,
    int TestImages,
    AuthorProtocolResult Author,
    Table1Row Ours,
    IReadOnlyDictionary<string, double> Seconds);

/// <summary>The author's protocol on one model: his settings and the errors they give on the whole test set.</summary>
/// <param name="Layers">The tapped layers (Keras names of his <c>model.layers</c> indices).</param>
/// <param name="LayerIndices">His <c>mem_layers</c>.</param>
/// <param name="CacheSize">Keys: training images plus their flips.</param>
/// <param name="KeyDimension">Key dimension.</param>
/// <param name="Theta">His θ of the cache model.</param>
/// <param name="Lambda">His λ.</param>
/// <param name="CacheOnlyTheta">His θ of the cache-only model.</param>
/// <param name="NetworkError">The network alone.</param>
/// <param name="NetworkErrors">The network's misclassified test images.</param>
/// <param name="CacheError">The cache model.</param>
/// <param name="CacheOnlyError">The cache-only model.</param>
/// <param name="PaperNetworkError">The seed's Table 1: network.</param>
/// <param name="PaperCacheError">The seed's Table 1: cache.</param>
/// <param name="PaperCacheOnlyError">The seed's Table 1: cache-only.</param>
internal sealed record AuthorProtocolResult(
    IReadOnlyList<string> Layers,
    IReadOnlyList<int> LayerIndices,
    long CacheSize,
    long KeyDimension,
    double Theta,
    double Lambda,
    double CacheOnlyTheta,
    double NetworkError,
    long NetworkErrors,
    double CacheError,
    double CacheOnlyError,
    double PaperNetworkError,
    double PaperCacheError,
    double PaperCacheOnlyError);

/// <summary>Runs <see cref="AuthorProtocolRow"/>s.</summary>
internal sealed class AuthorProtocolExperiment(ExperimentSession session)
{
    private const int Chunk = 10_000;

    public async Task<AuthorProtocolRow> RunAsync(
        OrhanModel preset, string? data, int seed, GridSearchOptions grid, int maxLayers, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(preset);
        var progress = session.Progress;
        var total = Stopwatch.StartNew();
        var provider = session.Provider;
        using var model = await session.LoadModelAsync(preset.Model, null, cancellationToken, data).ConfigureAwait(false);
        var (train, test, split) = session.LoadData(model, data, seed);
        var authorLayers = preset.MemoryLayers.Select(i => model.Model.ResolveLayer(i.ToString(System.Globalization.CultureInfo.InvariantCulture))).ToArray();
        var fitter = session.Fitter(model, o =>
        {
            o.Grid = grid;
            o.MaxLayers = maxLayers;
            o.CandidateStorage = TorchSharp.torch.ScalarType.Float16;
        });
        var candidates = fitter.Candidates();
        IReadOnlyList<string> union = [.. candidates.Union(authorLayers, StringComparer.Ordinal)];

        // One pass over the training and test images taps every layer either protocol needs.
        using var trainKeys = progress.Timed($"{preset.Model}: training keys", () => fitter.ExtractLayers(train, union, "train", cancellationToken), out var tTrain);
        using var testKeys = progress.Timed($"{preset.Model}: test keys", () => fitter.ExtractLayers(test, union, "test", cancellationToken), out var tTest);

        // Ours: layers, θ and λ chosen on the validation half, errors on the report half; the cache holds the training images.
        Table1Row ours;
        var seconds = new Dictionary<string, double> { ["extractTrain"] = tTrain.TotalSeconds, ["extractTest"] = tTest.TotalSeconds };
        using (var validationKeys = testKeys.Rows(split.First))
        {
            var ourFitter = session.Fitter(model, o =>
            {
                o.Grid = grid;
                o.MaxLayers = maxLayers;
                o.Candidates = candidates;
            });
            using var fit = progress.Timed($"{preset.Model}: our protocol (layer search, θ/λ search)", () => ourFitter.Fit(trainKeys, validationKeys, train, cancellationToken), out var tFit);
            using var report = ourFitter.Compose(testKeys, fit.Report.Layers, split.Second);
            var result = CacheEvaluation.Report(fit.Classifier.Memory, fit.Report.Tuning, report, Math.Max(1, session.BatchSize));
            seconds["ourFit"] = tFit.TotalSeconds;
            ours = Table1Experiment.Row(
                new Table1Request(preset.Model, null, data, null, candidates, maxLayers, seed, false, grid, null, null),
                preset.Model, fit.Report.Layers, fit.Report.KeyDimension, fit.Report.CacheSize, false, split, provider.Provider, result,
                fit.Report.LayerSearch, fit.Report.Seconds);
        }

        // The author's: his layers, θ and λ; the cache holds the training images and their horizontal flips; the whole test set.
        var watch = Stopwatch.StartNew();
        using var memory = provider.Create(checked((int)LayerWidth(trainKeys, authorLayers)), trainKeys.ClassCount);
        for (var start = 0; start < train.Count; start += Chunk)
        {
            var rows = Enumerable.Range(start, Math.Min(Chunk, train.Count - start)).ToArray();
            using var part = fitter.Compose(trainKeys, authorLayers, rows);
            memory.Add(part.Keys, part.Labels);
        }

        for (var start = 0; start < train.Count; start += Chunk)
        {
            // His flips mirror the normalised images (cifar_utils.py normalises, then flips).
            using var part = fitter.ExtractFlipped(train.Slice(start, Math.Min(Chunk, train.Count - start)), authorLayers, "train (flipped)", cancellationToken);
            memory.Add(part.Keys, part.Labels);
        }

        seconds["authorCache"] = watch.Elapsed.TotalSeconds;
        watch.Restart();
        using var queries = fitter.Compose(testKeys, authorLayers);
        var fixedGrid = new GridSearchOptions { Thetas = [preset.Theta, preset.CacheOnlyTheta], Lambdas = [preset.Lambda], IncludeCacheOnly = true };
        var errors = CacheGridSearch.Search(memory, queries.Keys, queries.Probabilities, queries.Labels, fixedGrid, Math.Max(1, session.BatchSize));
        seconds["authorEvaluate"] = watch.Elapsed.TotalSeconds;
        seconds["total"] = total.Elapsed.TotalSeconds;
        var author = new AuthorProtocolResult(
            authorLayers, preset.MemoryLayers, memory.Count, memory.Dimension, preset.Theta, preset.Lambda, preset.CacheOnlyTheta,
            errors.BaselineError, (long)Math.Round(errors.BaselineError * test.Count), errors.ErrorAt(0, 0), errors.ErrorAt(1, errors.Lambdas.Count - 1),
            preset.PaperErrors.Network, preset.PaperErrors.Cache, preset.PaperErrors.CacheOnly);
        progress.Status(
            $"{preset.Model}: author's protocol network {author.NetworkError:P2} (paper {author.PaperNetworkError:P2}), cache {author.CacheError:P2} " +
            $"(paper {author.PaperCacheError:P2}), cache-only {author.CacheOnlyError:P2} (paper {author.PaperCacheOnlyError:P2})");
        return new AuthorProtocolRow(preset.Model, preset.DataSet, train.Count, test.Count, author, ours, seconds);
    }

    private static long LayerWidth(PerLayerKeys keys, IEnumerable<string> layers) => layers.Sum(l => keys.Layer(l).shape[1]);
}
