using System.Diagnostics;
using ScalableCache.Core.Data;
using ScalableCache.Core.Evaluation;
using ScalableCache.Core.Features;
using ScalableCache.Core.Models;
using ScalableCache.Core.Persistence;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core;

/// <summary>Progress of <see cref="CacheFitter.ExtractToKeyFile"/> after each chunk.</summary>
/// <param name="Done">Images whose keys are in the file (resumed ones included).</param>
/// <param name="Total">Images in the data.</param>
/// <param name="Resumed">Images a resumed file already held when this run started.</param>
/// <param name="ImagesPerSecond">Images extracted per second in this run.</param>
/// <param name="Remaining">Estimated time to the end at that rate.</param>
public readonly record struct KeyFileBuildProgress(long Done, long Total, long Resumed, double ImagesPerSecond, TimeSpan? Remaining);

/// <summary>Progress of a fit: status lines and per-stage counters (images extracted).</summary>
public interface ICacheFitProgress
{
    /// <summary>One line for people.</summary>
    void Status(string message);

    /// <summary>A counter for a stage of <paramref name="total"/> items, or <see langword="null"/> for none.</summary>
    IProgress<long>? Step(string label, long total);
}

/// <summary>Settings of a fit (<see cref="CacheFitter"/>).</summary>
public sealed class CacheFitOptions
{
    /// <summary>Creates the memory (e.g. <c>new ExactCacheMemoryFactory(new())</c>). Required.</summary>
    public ICacheMemoryFactory? Store { get; set; }

    /// <summary>The input normalisation the backbone was trained with. Required.</summary>
    public InputNormalization? Input { get; set; }

    /// <summary>Shape of one input image.</summary>
    public InputShape InputShape { get; set; } = InputShape.Cifar;

    /// <summary>How several layers' activations become one key.</summary>
    public KeyNormalization KeyNormalization { get; set; } = KeyNormalization.PerLayer;

    /// <summary>Fixed key layers (in order); when <see langword="null"/>, the layers are chosen by greedy search over <see cref="Candidates"/>.</summary>
    public IReadOnlyList<string>? Layers { get; set; }

    /// <summary>Candidate layers of the search; when <see langword="null"/>, <see cref="CandidateLayers.Default"/>.</summary>
    public IReadOnlyList<string>? Candidates { get; set; }

    /// <summary>Largest layer set the search builds (at least 1).</summary>
    public int MaxLayers { get; set; } = 3;

    /// <summary>The θ × λ grid searched on the validation images.</summary>
    public GridSearchOptions Grid { get; set; } = new();

    /// <summary>Fixed θ (with <see cref="Lambda"/>); both <see langword="null"/> to search them.</summary>
    public double? Theta { get; set; }

    /// <summary>Fixed λ in <c>[0, 1]</c> (with <see cref="Theta"/>).</summary>
    public double? Lambda { get; set; }

    /// <summary>Whether horizontally flipped training images join the memory (the paper's C-10+ cache).</summary>
    public bool Flip { get; set; }

    /// <summary>Images per forward pass and per memory query.</summary>
    public int BatchSize { get; set; } = 256;

    /// <summary>
    /// Most images the backbone sees in one call (<see cref="LayerTapExtractor.ForwardBatchSize"/>): a batch of <see cref="BatchSize"/>
    /// goes through it in slices of this many, with the same outputs. Must be positive.
    /// </summary>
    public int ForwardBatchSize { get; set; } = LayerTapExtractor.DefaultForwardBatchSize;

    /// <summary>Device the images go to; the backbone's when <see langword="null"/>.</summary>
    public Device? Device { get; set; }

    /// <summary>Element type of the per-layer candidate keys held during the search: float32, or float16 to halve memory.</summary>
    public ScalarType CandidateStorage { get; set; } = ScalarType.Float32;

    /// <summary>
    /// Where <see cref="CacheFitter.ExtractForSearch"/> writes the training images' per-layer keys (a new subfolder per extraction,
    /// deleted with the keys); the system temporary folder when <see langword="null"/>. Needs room for N × (sum of the candidates'
    /// widths) float32 values.
    /// </summary>
    public string? KeyFolder { get; set; }

    /// <summary>
    /// Where a layer search keeps its similarity matrices (<see cref="SearchSimilarities"/>): files under <see cref="KeyFolder"/>
    /// written during the training pass when they fit on its disk, else computed from the spilled keys whenever the search reads them
    /// (<see cref="SearchSimilarities.Auto"/>, the default).
    /// </summary>
    public SearchSimilarities SearchSimilarities { get; set; } = SearchSimilarities.Auto;

    /// <summary>
    /// Choose θ and λ of a searched fit from float32 copies of the search's similarity matrices, written from the same products during
    /// the training pass (<see cref="LayerSearchKeys.ExactSimilarities"/>: <c>n × N × 4</c> bytes per candidate, beside the float16 files,
    /// when both fit on disk), instead of querying the built memory with the validation keys — a second product of the size of the
    /// training pass's for the chosen layers. The similarities are the chosen keys' cosines up to float32 rounding (each layer's product
    /// summed, not one product over the joined keys), so a grid cell can differ from the memory's only where a query's two best mixed
    /// probabilities tie within that rounding. Not used for caches with flipped images, or when the files are missing. Default on.
    /// </summary>
    public bool TuneFromSimilarities { get; set; } = true;

    /// <summary>The network and checkpoint, recorded in the fitted classifier (and its cache files).</summary>
    public CacheModelId? Model { get; set; }

    /// <summary>Progress; none when <see langword="null"/>.</summary>
    public ICacheFitProgress? Progress { get; set; }

    /// <summary>Every problem with these settings, as messages naming the setting; empty when they are valid.</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (Store is null)
        {
            errors.Add("Store: a cache memory factory is required.");
        }

        if (Input is null)
        {
            errors.Add("Input: the backbone's input normalisation is required.");
        }

        if (MaxLayers < 1)
        {
            errors.Add($"MaxLayers must be at least 1 (got {MaxLayers}).");
        }

        if (BatchSize < 1)
        {
            errors.Add($"BatchSize must be positive (got {BatchSize}).");
        }

        if (ForwardBatchSize < 1)
        {
            errors.Add($"ForwardBatchSize must be positive (got {ForwardBatchSize}).");
        }

        if (Theta.HasValue != Lambda.HasValue)
        {
            errors.Add("Theta and Lambda are given together, or neither (to search both).");
        }

        if (Theta is { } theta && !(theta > 0 && double.IsFinite(theta)))
        {
            errors.Add($"Theta must be finite and greater than 0 (got {theta}).");
        }

        if (Lambda is { } lambda && !(lambda >= 0 && lambda <= 1))
        {
            errors.Add($"Lambda must lie in [0, 1] (got {lambda}).");
        }

        if (Layers is { Count: 0 } || Candidates is { Count: 0 })
        {
            errors.Add("Layers and Candidates, when given, name at least one layer.");
        }

        if (CandidateStorage is not (ScalarType.Float32 or ScalarType.Float16))
        {
            errors.Add($"CandidateStorage must be Float32 or Float16 (got {CandidateStorage}).");
        }

        errors.AddRange(Grid?.Validate() ?? ["Grid is required."]);
        return errors;
    }
}

/// <summary>How a classifier was fitted.</summary>
/// <param name="Layers">The key layers (chosen or given).</param>
/// <param name="KeyDimension">Key dimension D.</param>
/// <param name="CacheSize">Keys in the memory.</param>
/// <param name="Flip">Whether flipped training images are in the memory.</param>
/// <param name="LayerSearch">The greedy search's rounds and scored sets, when the layers were searched.</param>
/// <param name="Tuning">θ and λ (and the cache-only θ) chosen on the validation images, with the error grid and grid-edge warnings.</param>
/// <param name="Seconds">Wall time per stage (<c>extractTrain</c>, <c>extractValidation</c>, <c>layerSearch</c>, <c>extractFlipped</c>, <c>buildCache</c>, <c>tune</c>).</param>
public sealed record CacheFitReport(
    IReadOnlyList<string> Layers,
    long KeyDimension,
    long CacheSize,
    bool Flip,
    LayerCombinationResult? LayerSearch,
    CacheTuning Tuning,
    IReadOnlyDictionary<string, double> Seconds)
{
    /// <summary>Wall time, CPU time and peak resident memory per stage (the stages of <see cref="Seconds"/> this fit measured).</summary>
    public IReadOnlyDictionary<string, StageUsage> Usage { get; init; } = new Dictionary<string, StageUsage>();
}

/// <summary>A fitted classifier with its fit report. Disposing it disposes the classifier.</summary>
/// <param name="Classifier">The fitted classifier (owned by this object until taken: see <see cref="Detach"/>).</param>
/// <param name="Report">How it was fitted.</param>
public sealed record CacheFit(CacheClassifier Classifier, CacheFitReport Report) : IDisposable
{
    private bool _detached;

    /// <summary>Hands the classifier to the caller: disposing this fit no longer disposes it.</summary>
    public CacheClassifier Detach()
    {
        _detached = true;
        return Classifier;
    }

    /// <summary>Disposes the classifier unless it was detached.</summary>
    public void Dispose()
    {
        if (!_detached)
        {
            Classifier.Dispose();
        }
    }
}

/// <summary>
/// The procedure that turns a trained network into a cache model (Orhan 2018): per-layer keys of the training and validation
/// images from one forward pass each, a greedy layer-combination search on the validation images (unless the layers are fixed),
/// the memory of the chosen layers' training keys, and the θ × λ search. Each stage is public, so experiments that reuse keys
/// (a report set extracted with the validation set, sub-sampled caches) run the same code.
/// </summary>
public sealed class CacheFitter
{
    private readonly CacheFitOptions _options;
    private readonly InputNormalization _input;
    private readonly ICacheMemoryFactory _store;

    /// <summary>Creates the fitter; invalid options fail here, naming the setting.</summary>
    public CacheFitter(nn.Module<Tensor, Tensor> backbone, CacheFitOptions options)
    {
        ArgumentNullException.ThrowIfNull(backbone);
        ArgumentNullException.ThrowIfNull(options);
        var problems = options.Validate();
        if (problems.Count > 0)
        {
            throw new ArgumentException("Invalid fit options: " + string.Join(" ", problems), nameof(options));
        }

        Backbone = backbone;
        _options = options;
        _input = options.Input!;
        _store = options.Store!;
        backbone.eval();
    }

    /// <summary>The network.</summary>
    public nn.Module<Tensor, Tensor> Backbone { get; }

    /// <summary>The settings.</summary>
    public CacheFitOptions Options => _options;

    /// <summary>The layers a fit extracts: the fixed layers, else the candidates, else the default candidates.</summary>
    public IReadOnlyList<string> Candidates() =>
        _options.Layers ?? _options.Candidates ?? CandidateLayers.Default(Backbone, _options.InputShape);

    /// <summary>A recipe over <paramref name="layers"/> with the fit's input and key normalisation.</summary>
    public KeyRecipe Recipe(IReadOnlyList<string> layers) => new(layers, _input, _options.InputShape, _options.KeyNormalization);

    /// <summary>Per-layer unit keys (and norms), network probabilities and labels of <paramref name="data"/> for <paramref name="layers"/>.</summary>
    /// <remarks>Any <see cref="IImageSource"/>: an in-memory <see cref="ImageDataset"/> or a streaming one such as ImageNet's files.</remarks>
    public PerLayerKeys ExtractLayers(IImageSource data, IReadOnlyList<string> layers, string label = "images", CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(layers);
        CheckShape(data);
        using var extractor = Tap(layers);
        var step = _options.Progress?.Step($"{label} [{layers.Count} layer{(layers.Count == 1 ? "" : "s")}]", data.Count);
        return DatasetFeatureExtractor.ExtractPerLayer(
            extractor, data, _input, ExtractionOptions(), _options.CandidateStorage, Adapt(step), cancellationToken);
    }

    /// <summary>
    /// Streams the recipe keys of <paramref name="data"/> at <paramref name="layers"/> into <paramref name="writer"/>, one chunk of
    /// <see cref="KeyFileLayout.RowsPerChunk"/> images at a time, and completes the file: memory stays at one chunk of keys (plus a
    /// batch of images), not N × d. A writer that resumed an unfinished file (<see cref="KeyFileWriter.Count"/> &gt; 0) continues at
    /// image <see cref="KeyFileWriter.Count"/>. Cancelling stops after the current batch; the chunks already written stay and a
    /// later call with a resumed writer goes on from there.
    /// </summary>
    /// <exception cref="ArgumentException">The writer holds more keys than <paramref name="data"/> has images, or its dimension or
    /// class count does not fit the keys and labels.</exception>
    public KeyFileWriter ExtractToKeyFile(
        IImageSource data, IReadOnlyList<string> layers, KeyFileWriter writer, IProgress<KeyFileBuildProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(layers);
        ArgumentNullException.ThrowIfNull(writer);
        CheckShape(data);
        if (writer.Count > data.Count)
        {
            throw new ArgumentException($"The key file '{writer.Path}' already holds {writer.Count} keys; the data has {data.Count} images.", nameof(writer));
        }

        var resumed = writer.Count;
        var chunk = writer.Layout.EffectiveRowsPerChunk;
        var watch = Stopwatch.StartNew();
        using var extractor = Tap(layers);
        for (var start = (int)writer.Count; start < data.Count && !writer.IsComplete; start += chunk)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var range = new ImageSourceRange(data, start, Math.Min(chunk, data.Count - start));
            using (var features = DatasetFeatureExtractor.Extract(extractor, range, _input, ExtractionOptions(), null, cancellationToken))
            {
                writer.Append(features.Keys, features.Labels!);
            }

            var done = start + range.Count;
            var rate = (done - resumed) / Math.Max(watch.Elapsed.TotalSeconds, 1e-9);
            progress?.Report(new KeyFileBuildProgress(done, data.Count, resumed, rate, rate > 0 ? TimeSpan.FromSeconds((data.Count - done) / rate) : null));
        }

        writer.Complete();
        return writer;
    }

    /// <summary>
    /// One forward pass over <paramref name="data"/> (the training images) for a layer search that holds no candidate's keys: each
    /// layer's float32 unit keys go to a file under <see cref="CacheFitOptions.KeyFolder"/>, and, given
    /// <paramref name="validation"/> (per-layer keys of the validation images for the same layers), each layer's validation × training
    /// similarities are computed batch by batch (<see cref="LayerSearchKeys"/>). Fit from the result with
    /// <see cref="Fit(LayerSearchKeys, PerLayerKeys, ImageDataset?, CancellationToken)"/>.
    /// </summary>
    public LayerSearchKeys ExtractForSearch(
        IImageSource data, PerLayerKeys? validation, IReadOnlyList<string> layers, string label = "images", CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(layers);
        CheckShape(data);
        using var extractor = Tap(layers);
        var step = _options.Progress?.Step($"{label} [{layers.Count} layer{(layers.Count == 1 ? "" : "s")}{(validation is null ? "" : ", similarities")}]", data.Count);
        var folder = Path.Combine(_options.KeyFolder ?? Path.GetTempPath(), $"scache-keys-{Guid.NewGuid():N}");
        return DatasetFeatureExtractor.ExtractForSearch(
            extractor, data, _input, validation, folder, ExtractionOptions(), Adapt(step), cancellationToken, _options.SearchSimilarities,
            exactSimilarities: _options.TuneFromSimilarities && !_options.Flip);
    }

    /// <summary>Keys of <paramref name="layers"/> composed by the recipe, probabilities and labels of <paramref name="data"/>.</summary>
    public FeatureTable Extract(IImageSource data, IReadOnlyList<string> layers, string label = "images", CancellationToken cancellationToken = default) =>
        Extract(data, layers, _input, label, cancellationToken);

    /// <summary>
    /// Keys of the horizontal flips of <paramref name="data"/> (the paper's C-10+ cache), as flipping the <em>normalised</em> images
    /// gives them: with per-pixel statistics that is the flipped image normalised with mirrored statistics (Orhan's scripts flip after
    /// normalising); with per-channel statistics the order does not matter.
    /// </summary>
    public FeatureTable ExtractFlipped(ImageDataset data, IReadOnlyList<string> layers, string label = "images (flipped)", CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(data);
        return Extract(data.WithHorizontalFlips().Slice(data.Count, data.Count), layers, _input.Mirrored(), label, cancellationToken);
    }

    private FeatureTable Extract(IImageSource data, IReadOnlyList<string> layers, InputNormalization input, string label, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(layers);
        CheckShape(data);
        using var extractor = Tap(layers);
        var step = _options.Progress?.Step($"{label} [{string.Join(",", layers)}]", data.Count);
        using var features = DatasetFeatureExtractor.Extract(extractor, data, input, ExtractionOptions(), Adapt(step), cancellationToken);
        return new FeatureTable(features.Keys, features.Probabilities, features.Labels!, features.Layers);
    }

    /// <summary>The cache keys of <paramref name="layers"/> under the fit's key normalisation, from per-layer keys (rows <paramref name="rows"/>, or all).</summary>
    public FeatureTable Compose(PerLayerKeys keys, IReadOnlyList<string> layers, IReadOnlyList<int>? rows = null)
    {
        ArgumentNullException.ThrowIfNull(keys);
        return keys.Compose(layers, rows, _options.KeyNormalization);
    }

    /// <summary>
    /// Greedy layer-combination search over the candidate layers both key sets hold, scored on the validation keys under the fit's
    /// key normalisation (per layer, or concatenated then normalised once: <see cref="LayerCombinationSearch"/>).
    /// </summary>
    public LayerCombinationResult SearchLayers(PerLayerKeys train, PerLayerKeys validation, IReadOnlyList<string>? candidates = null)
    {
        ArgumentNullException.ThrowIfNull(train);
        ArgumentNullException.ThrowIfNull(validation);
        candidates ??= Candidates();
        var list = candidates.Select(c => new LayerCandidate(c, train.Layer(c), validation.Layer(c), train.Norms[c], validation.Norms[c])).ToList();
        var reporter = _options.Progress is { } p ? new StatusProgress(p) : null;
        var grid = _options.Grid;
        return LayerCombinationSearch.Run(
            list, train.Labels, validation.Probabilities, validation.Labels, train.ClassCount,
            grid.Thetas, grid.IncludeCacheOnly ? grid.EffectiveLambdas : grid.Lambdas, _options.MaxLayers, reporter,
            normalization: _options.KeyNormalization);
    }

    /// <summary>A new memory from the store factory holding <paramref name="train"/>'s keys (added in chunks).</summary>
    public ICacheMemory BuildMemory(FeatureTable train, int classCount)
    {
        ArgumentNullException.ThrowIfNull(train);
        return CacheEvaluation.Build(_store, train, classCount);
    }

    /// <summary>
    /// Extracts the validation images' candidate keys, then the training images' for a search (<see cref="ExtractForSearch"/>: no
    /// candidate's training keys held in memory), then fits from them (<see cref="Fit(LayerSearchKeys, PerLayerKeys, ImageDataset?, CancellationToken)"/>).
    /// Either may stream (<see cref="IImageSource"/>); <see cref="CacheFitOptions.Flip"/> needs the training images as an <see cref="ImageDataset"/>.
    /// </summary>
    public CacheFit Fit(IImageSource train, IImageSource validation, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(train);
        ArgumentNullException.ThrowIfNull(validation);
        var candidates = Candidates();
        var meter = Meter();
        using var validationKeys = meter.Measure("extractValidation", () => ExtractLayers(validation, candidates, "validation", cancellationToken));
        using var trainKeys = meter.Measure("extractTrain", () => ExtractForSearch(
            train, _options.Layers is null ? validationKeys : null, candidates, "train", cancellationToken));
        var fit = Fit(trainKeys, validationKeys, train as ImageDataset, cancellationToken);
        meter.Add(fit.Report.Usage);
        var seconds = new Dictionary<string, double>(fit.Report.Seconds)
        {
            ["extractTrain"] = meter.Stages["extractTrain"].Seconds,
            ["extractValidation"] = meter.Stages["extractValidation"].Seconds,
        };
        return fit with { Report = fit.Report with { Seconds = seconds, Usage = meter.Stages } };
    }

    /// <summary>
    /// Fits from extracted keys: chooses the layers (unless fixed) on <paramref name="validationKeys"/>, builds the memory of the
    /// training keys of those layers (plus flipped training images when <see cref="CacheFitOptions.Flip"/> is set, which needs
    /// <paramref name="train"/>), and chooses θ and λ on the validation keys (unless fixed).
    /// </summary>
    public CacheFit Fit(PerLayerKeys trainKeys, PerLayerKeys validationKeys, ImageDataset? train = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(trainKeys);
        ArgumentNullException.ThrowIfNull(validationKeys);
        return Fit(
            () => SearchLayers(trainKeys, validationKeys),
            (layers, meter) =>
            {
                using var trainTable = ComposeTraining(trainKeys, layers, train, meter, cancellationToken);
                return meter.Measure("buildCache", () => BuildMemory(trainTable, trainKeys.ClassCount));
            },
            layers => Compose(validationKeys, layers), train, cancellationToken);
    }

    /// <summary>
    /// Fits from keys extracted for a search (<see cref="ExtractForSearch"/>): the greedy search runs on their similarity matrices
    /// (unless the layers are fixed), which are then freed; the memory is built from the chosen layers' keys read back in chunks
    /// (the same float32 keys, added in the same chunks, as <see cref="Fit(PerLayerKeys, PerLayerKeys, ImageDataset?, CancellationToken)"/>
    /// adds), and θ, λ are chosen exactly as there — or, when the training pass also wrote the similarities in float32
    /// (<see cref="CacheFitOptions.TuneFromSimilarities"/>), from those, without querying the memory. <paramref name="validationKeys"/>
    /// must be the keys the similarities were made from.
    /// </summary>
    public CacheFit Fit(LayerSearchKeys trainKeys, PerLayerKeys validationKeys, ImageDataset? train = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(trainKeys);
        ArgumentNullException.ThrowIfNull(validationKeys);
        return Fit(trainKeys, validationKeys, layers => Compose(validationKeys, layers), train, cancellationToken);
    }

    /// <summary>
    /// Fits as <see cref="Fit(LayerSearchKeys, PerLayerKeys, ImageDataset?, CancellationToken)"/> does, with the validation keys read
    /// back from files instead of held: the validation images are rows <paramref name="validationRows"/> of
    /// <paramref name="validationKeys"/> (e.g. the test set extracted by <see cref="ExtractForSearch"/>, whose rows made the
    /// similarities); the search needs only their norms, probabilities and labels, and θ, λ are chosen on the chosen layers' keys of
    /// those rows, read back for the tuning and freed after it. The results are the other overload's, bit for bit.
    /// </summary>
    public CacheFit Fit(
        LayerSearchKeys trainKeys, LayerSearchKeys validationKeys, IReadOnlyList<int> validationRows, ImageDataset? train = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(trainKeys);
        ArgumentNullException.ThrowIfNull(validationKeys);
        ArgumentNullException.ThrowIfNull(validationRows);
        using var outputs = validationKeys.Rows(validationRows, keys: false);
        return Fit(trainKeys, outputs, layers => validationKeys.Compose(layers, validationRows, _options.KeyNormalization), train, cancellationToken);
    }

    /// <summary>The fit from search keys: <paramref name="validation"/> for the search, <paramref name="validationOf"/> the chosen layers' keys for θ and λ.</summary>
    private CacheFit Fit(
        LayerSearchKeys trainKeys, PerLayerKeys validation, Func<IReadOnlyList<string>, FeatureTable> validationOf, ImageDataset? train,
        CancellationToken cancellationToken) =>
        Fit(
            () => SearchLayers(trainKeys, validation),
            (layers, meter) =>
            {
                trainKeys.ReleaseSimilarities();
                using var flipped = _options.Flip ? meter.Measure("extractFlipped", () => ExtractFlipped(train!, layers, "train (flipped)", cancellationToken)) : null;
                var unflipped = trainKeys.Count;
                var dimension = (int)layers.Sum(trainKeys.Dimension);
                return meter.Measure("buildCache", () => CacheEvaluation.Build(
                    _store, unflipped + (flipped?.Count ?? 0), dimension, trainKeys.ClassCount,
                    (start, n) => ReadTraining(trainKeys, flipped, layers, start, n)));
            },
            validationOf, train, cancellationToken, layers => TuneFromSimilarities(trainKeys, validation, layers));

    /// <summary>
    /// θ and λ of <paramref name="layers"/> from the float32 similarities of the training pass (<see cref="LayerSearchKeys.ExactSimilarities"/>,
    /// rows = <paramref name="validation"/>'s queries), combined as the chosen keys are (mean of the layers, or weighted by the activation
    /// norms) and turned into per-class log-mass by the exact store's kernel; <see langword="null"/> when they are missing (the memory is
    /// queried instead). The files are freed either way.
    /// </summary>
    private CacheTuning? TuneFromSimilarities(LayerSearchKeys train, PerLayerKeys validation, IReadOnlyList<string> layers)
    {
        try
        {
            if (_options.Flip || train.ExactSimilarities is not { } exact || !layers.All(exact.ContainsKey))
            {
                return null;
            }

            using var scope = NewDisposeScope();
            var matrices = layers.Select(l => exact[l]).ToArray();
            var weights = _options.KeyNormalization == KeyNormalization.Concatenated
                ? LayerCombinationSearch.ConcatenatedWeights([.. layers.Select(l => (validation.Norms[l], train.Norms[l]))])
                : null;
            GridSearchResult Search(GridSearchOptions grid) => CacheGridSearch.Search(
                (start, rows, thetas) => LayerCombinationSearch.LogMass(matrices, weights, train.Labels, train.ClassCount, thetas, start, (int)rows, fused: true),
                validation.Probabilities, validation.Labels, grid, SimilarityTuningRows);
            return CacheEvaluation.Tune(
                Search, (theta, lambda) => Search(new GridSearchOptions { Thetas = [theta], Lambdas = [lambda] }).ErrorAt(0, 0),
                _options.Grid, _options.Theta, _options.Lambda);
        }
        finally
        {
            train.ReleaseExactSimilarities();
        }
    }

    /// <summary>Validation rows per log-mass call when θ and λ come from similarity files: the search's query block.</summary>
    private const int SimilarityTuningRows = 512;

    /// <summary>The greedy search on the similarity matrices of <see cref="ExtractForSearch"/> (over all its layers, or <paramref name="candidates"/>).</summary>
    public LayerCombinationResult SearchLayers(LayerSearchKeys train, PerLayerKeys validation, IReadOnlyList<string>? candidates = null)
    {
        ArgumentNullException.ThrowIfNull(train);
        ArgumentNullException.ThrowIfNull(validation);
        var similarities = train.Similarities
            ?? throw new ArgumentException("These keys hold no similarities (extracted without validation keys, or released).", nameof(train));
        candidates ??= train.Layers;
        var reporter = _options.Progress is { } p ? new StatusProgress(p) : null;
        var grid = _options.Grid;
        var norms = _options.KeyNormalization == KeyNormalization.Concatenated
            ? candidates.Select(c => (validation.Norms[c], train.Norms[c])).ToArray()
            : null;
        return LayerCombinationSearch.Run(
            candidates, [.. candidates.Select(c => similarities.TryGetValue(c, out var s) ? s : throw new ArgumentException($"No similarities for layer '{c}'.", nameof(candidates)))],
            train.Labels, validation.Probabilities, validation.Labels, train.ClassCount,
            grid.Thetas, grid.IncludeCacheOnly ? grid.EffectiveLambdas : grid.Lambdas, _options.MaxLayers, reporter, norms: norms);
    }

    /// <summary>
    /// Rows <c>[start, start + n)</c> of the training keys followed by the flipped ones (as <see cref="FeatureTable.Concat"/> orders
    /// them): new tensors the caller owns (<see cref="CacheEvaluation.Build(ICacheMemoryFactory, long, int, int, Func{long, long, ValueTuple{Tensor, Tensor}}, int)"/>
    /// disposes each chunk once added).
    /// </summary>
    private (Tensor Keys, Tensor Labels) ReadTraining(LayerSearchKeys trainKeys, FeatureTable? flipped, IReadOnlyList<string> layers, long start, long n)
    {
        var count = trainKeys.Count;
        var fromKeys = Math.Clamp(count - start, 0, n);
        var parts = new List<(Tensor Keys, Tensor Labels)>();
        if (fromKeys > 0)
        {
            var table = trainKeys.Compose(layers, start, fromKeys, _options.KeyNormalization);
            parts.Add((table.Keys, table.Labels));
            table.Probabilities.Dispose();
        }

        if (n > fromKeys)
        {
            var from = start + fromKeys - count;
            parts.Add((flipped!.Keys.narrow(0, from, n - fromKeys), flipped.Labels.narrow(0, from, n - fromKeys)));
        }

        if (parts.Count == 1)
        {
            return parts[0];
        }

        try
        {
            return (cat([.. parts.Select(p => p.Keys)]), cat([.. parts.Select(p => p.Labels)]));
        }
        finally
        {
            foreach (var (keys, labels) in parts)
            {
                keys.Dispose();
                labels.Dispose();
            }
        }
    }

    /// <summary>
    /// The shared fit: the layers (fixed, or <paramref name="search"/>), the memory (<paramref name="build"/>, which measures its
    /// stages), θ and λ from <paramref name="tuneWithoutMemory"/> where it gives them, else on the validation keys of the chosen layers
    /// (<paramref name="validationOf"/>, disposed after the tuning), each stage's usage measured.
    /// </summary>
    private CacheFit Fit(
        Func<LayerCombinationResult> search, Func<IReadOnlyList<string>, StageMeter, ICacheMemory> build, Func<IReadOnlyList<string>, FeatureTable> validationOf,
        ImageDataset? train, CancellationToken cancellationToken, Func<IReadOnlyList<string>, CacheTuning?>? tuneWithoutMemory = null)
    {
        if (_options.Flip && train is null)
        {
            throw new ArgumentException("A cache with flipped training images needs the training images in memory (an ImageDataset).", nameof(train));
        }

        var meter = Meter();
        LayerCombinationResult? chosen = null;
        var layers = _options.Layers;
        if (layers is null)
        {
            chosen = meter.Measure("layerSearch", search);
            layers = chosen.Layers;
            _options.Progress?.Status($"chose [{string.Join(", ", layers)}] (validation error {chosen.Score.Error:P2})");
        }

        cancellationToken.ThrowIfCancellationRequested();
        var memory = build(layers, meter);
        try
        {
            var tuning = meter.Measure("tune", () =>
            {
                if (tuneWithoutMemory?.Invoke(layers) is { } fromSimilarities)
                {
                    return fromSimilarities;
                }

                using var validation = validationOf(layers);
                return CacheEvaluation.Tune(memory, validation, _options.Grid, _options.BatchSize, _options.Theta, _options.Lambda);
            });
            foreach (var warning in tuning.Warnings)
            {
                _options.Progress?.Status(warning);
            }

            var classifier = new CacheClassifier(Backbone, Recipe(layers), memory, tuning.Theta, tuning.Lambda, new CacheClassifierOptions
            {
                BatchSize = _options.BatchSize,
                Device = _options.Device,
                Model = _options.Model,
                Flip = _options.Flip,
            });
            var seconds = meter.Stages.ToDictionary(s => s.Key, s => s.Value.Seconds, StringComparer.Ordinal);
            var report = new CacheFitReport(layers, memory.Dimension, memory.Count, _options.Flip, chosen, tuning, seconds) { Usage = meter.Stages };
            return new CacheFit(classifier, report);
        }
        catch
        {
            memory.Dispose();
            throw;
        }
    }

    private FeatureTable ComposeTraining(
        PerLayerKeys trainKeys, IReadOnlyList<string> layers, ImageDataset? train, StageMeter meter, CancellationToken cancellationToken)
    {
        var unflipped = Compose(trainKeys, layers);
        if (!_options.Flip)
        {
            return unflipped;
        }

        using (unflipped)
        {
            using var flipped = meter.Measure("extractFlipped", () => ExtractFlipped(train!, layers, "train (flipped)", cancellationToken));
            return FeatureTable.Concat(unflipped, flipped);
        }
    }

    /// <summary>A stage meter that reports each finished stage to the progress.</summary>
    private StageMeter Meter() => new(_options.Progress is { } p ? (name, usage) => p.Status(StageMeter.Describe(name, usage)) : null);

    private void CheckShape(IImageSource data)
    {
        if (data.Shape != _options.InputShape)
        {
            throw new ArgumentException(
                $"The images are {data.Shape} but the fit expects {_options.InputShape} (CacheFitOptions.InputShape).", nameof(data));
        }
    }

    private LayerTapExtractor Tap(IReadOnlyList<string> layers) =>
        new(Backbone, layers, _options.KeyNormalization) { ForwardBatchSize = _options.ForwardBatchSize };

    private FeatureExtractionOptions ExtractionOptions() => new() { BatchSize = _options.BatchSize, Device = _options.Device };

    private static ExtractionProgressAdapter? Adapt(IProgress<long>? inner) => inner is null ? null : new ExtractionProgressAdapter(inner);

    private sealed class ExtractionProgressAdapter(IProgress<long> inner) : IProgress<ExtractionProgress>
    {
        public void Report(ExtractionProgress value) => inner.Report(value.Processed);
    }

    private sealed class StatusProgress(ICacheFitProgress inner) : IProgress<string>
    {
        public void Report(string value) => inner.Status(value);
    }
}
