using System.Diagnostics;
using ScalableCache.Core.Data;
using ScalableCache.Core.Evaluation;
using ScalableCache.Core.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Features;

/// <summary>Settings of a whole-data-set extraction.</summary>
public sealed class FeatureExtractionOptions
{
    /// <summary>Images per batch (the network sees at most <see cref="LayerTapExtractor.ForwardBatchSize"/> of them per call).</summary>
    public int BatchSize { get; set; } = 256;

    /// <summary>Device the batches are sent to; the model's own device when <see langword="null"/> (the model must already be there).</summary>
    public Device? Device { get; set; }
}

/// <summary>Progress of an extraction: images done so far, out of the total.</summary>
/// <param name="Processed">Images processed.</param>
/// <param name="Total">Images in the data set.</param>
public readonly record struct ExtractionProgress(long Processed, long Total);

/// <summary>
/// How fast a streamed extraction ran: the loader (the source's <see cref="IImageSource.Read"/>, decoding on every core) and the whole
/// pass with the network. Reads of batch i + 1 overlap the network's pass over batch i, so <see cref="ReadSeconds"/> is the loader's
/// time while it shares the cores with the network, and <see cref="WaitSeconds"/> is how long the network sat idle waiting for it.
/// </summary>
/// <param name="Images">Images extracted.</param>
/// <param name="Seconds">Wall time of the whole extraction.</param>
/// <param name="ReadSeconds">Time spent in the source's reads, summed over the batches.</param>
/// <param name="WaitSeconds">Time the network waited for a batch to be read (the first batch included).</param>
public sealed record ExtractionThroughput(long Images, double Seconds, double ReadSeconds, double WaitSeconds)
{
    /// <summary>Images per second of the whole pass, network included.</summary>
    public double ImagesPerSecond => Seconds > 0 ? Images / Seconds : 0;

    /// <summary>Images per second of the loader alone: <see cref="Images"/> over <see cref="ReadSeconds"/>.</summary>
    public double LoaderImagesPerSecond => ReadSeconds > 0 ? Images / ReadSeconds : 0;

    /// <summary>
    /// Images per second of <paramref name="source"/>'s reads with nothing else running: the first <paramref name="images"/> images
    /// (at most all) read in batches of <paramref name="batchSize"/>, as an extraction reads them, and thrown away.
    /// </summary>
    public static double MeasureLoader(IImageSource source, int images, int batchSize)
    {
        ArgumentNullException.ThrowIfNull(source);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(images);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(batchSize);
        var count = Math.Min(images, source.Count);
        var buffer = new byte[(long)Math.Min(batchSize, Math.Max(count, 1)) * source.Shape.Size];
        var watch = Stopwatch.StartNew();
        for (var start = 0; start < count; start += batchSize)
        {
            source.Read(start, Math.Min(batchSize, count - start), buffer);
        }

        return count / Math.Max(watch.Elapsed.TotalSeconds, 1e-9);
    }
}

/// <summary>
/// Keys, classifier outputs and labels of a whole data set, on the CPU, row i belonging to image i. Owns its tensors (detached from
/// every dispose scope): dispose it when done, after copying what must outlive it (e.g. into a cache memory, which copies on add).
/// </summary>
public sealed class ExtractedFeatures : IDisposable
{
    internal ExtractedFeatures(IReadOnlyList<string> layers, Tensor keys, Tensor logits, Tensor probabilities, Tensor? labels)
    {
        Layers = layers;
        Keys = keys;
        Logits = logits;
        Probabilities = probabilities;
        Labels = labels;
    }

    /// <summary>The tapped layers, in key order.</summary>
    public IReadOnlyList<string> Layers { get; }

    /// <summary>Keys <c>[N, D]</c>, float32, unit L2 norm per row.</summary>
    public Tensor Keys { get; }

    /// <summary>Classifier logits <c>[N, C]</c>, float32.</summary>
    public Tensor Logits { get; }

    /// <summary>Classifier probabilities <c>softmax(Logits)</c>, <c>[N, C]</c>, float32.</summary>
    public Tensor Probabilities { get; }

    /// <summary>The labels given, <c>[N]</c> int64; <see langword="null"/> when none were given.</summary>
    public Tensor? Labels { get; }

    /// <summary>How fast the extraction ran; <see langword="null"/> for the tensor overload.</summary>
    public ExtractionThroughput? Throughput { get; internal set; }

    /// <summary>Number of images N.</summary>
    public long Count => Keys.shape[0];

    /// <summary>Key dimension D.</summary>
    public long Dimension => Keys.shape[1];

    /// <summary>Disposes every tensor.</summary>
    public void Dispose()
    {
        Keys.Dispose();
        Logits.Dispose();
        Probabilities.Dispose();
        Labels?.Dispose();
    }
}

/// <summary>
/// Runs a <see cref="LayerTapExtractor"/> over a whole data set in batches: uint8 NCHW pixels from an <see cref="IImageSource"/> (an
/// in-memory <see cref="ImageDataset"/> or a streaming source; one code path for both), or a tensor, are normalised per batch,
/// sent to the device, passed through the model once, and the keys, logits and probabilities are copied into CPU tensors
/// preallocated for the whole set.
/// </summary>
/// <remarks>
/// Runs under <c>no_grad</c> (not inference mode, so the results are ordinary tensors that callers may modify in place) inside one
/// dispose scope opened outside the batch loop; after each batch everything but the results is freed, so memory stays at one batch
/// plus the results. Not thread-safe per extractor. Inputs are never disposed.
/// </remarks>
public static class DatasetFeatureExtractor
{
    /// <summary>Extracts keys for images <c>[N, C, H, W]</c>: uint8 pixels, or floating point already in <c>[0, 1]</c>.</summary>
    /// <param name="extractor">The tapped model.</param>
    /// <param name="images">All images, on any device.</param>
    /// <param name="labels">Labels <c>[N]</c> (any integer type), or <see langword="null"/>.</param>
    /// <param name="normalization">The model's input normalisation.</param>
    /// <param name="options">Batch size and device; defaults when <see langword="null"/>.</param>
    /// <param name="progress">Told after every batch.</param>
    /// <param name="cancellationToken">Checked before every batch.</param>
    public static ExtractedFeatures Extract(
        LayerTapExtractor extractor,
        Tensor images,
        Tensor? labels,
        InputNormalization normalization,
        FeatureExtractionOptions? options = null,
        IProgress<ExtractionProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        var sink = new KeySink(extractor);
        Run(extractor, images, labels, normalization, options, sink, progress, cancellationToken);
        return sink.Finish();
    }

    /// <summary>
    /// Extracts composed keys for every image of <paramref name="source"/>, reading batch i + 1 on a background task while the network
    /// runs batch i (so a decoding source such as <see cref="ImageFileSource"/> keeps the network fed). Memory: two batches of pixels
    /// plus the results.
    /// </summary>
    /// <param name="extractor">The tapped model.</param>
    /// <param name="source">The images and their labels.</param>
    /// <param name="normalization">The model's input normalisation.</param>
    /// <param name="options">Batch size and device; defaults when <see langword="null"/>.</param>
    /// <param name="progress">Told after every batch.</param>
    /// <param name="cancellationToken">Checked before every batch.</param>
    public static ExtractedFeatures Extract(
        LayerTapExtractor extractor,
        IImageSource source,
        InputNormalization normalization,
        FeatureExtractionOptions? options = null,
        IProgress<ExtractionProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        var sink = new KeySink(extractor);
        Run(extractor, source, normalization, options, sink, progress, cancellationToken);
        return sink.Finish();
    }

    /// <summary>
    /// Each tapped layer's unit keys and norms, the probabilities and labels of every image of <paramref name="source"/>, read as in
    /// <see cref="Extract(LayerTapExtractor, IImageSource, InputNormalization, FeatureExtractionOptions?, IProgress{ExtractionProgress}?, CancellationToken)"/>.
    /// </summary>
    /// <param name="extractor">The tapped model (its layers are the candidates).</param>
    /// <param name="source">The images and their labels.</param>
    /// <param name="normalization">The model's input normalisation.</param>
    /// <param name="options">Batch size and device; defaults when <see langword="null"/>.</param>
    /// <param name="storage">Element type of the stored unit keys: float32 or float16.</param>
    /// <param name="progress">Told after every batch.</param>
    /// <param name="cancellationToken">Checked before every batch.</param>
    public static PerLayerKeys ExtractPerLayer(
        LayerTapExtractor extractor,
        IImageSource source,
        InputNormalization normalization,
        FeatureExtractionOptions? options = null,
        ScalarType storage = ScalarType.Float32,
        IProgress<ExtractionProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        var sink = new LayerSink(extractor, CheckStorage(storage));
        Run(extractor, source, normalization, options, sink, progress, cancellationToken);
        return sink.Finish();
    }

    /// <summary>
    /// One pass over <paramref name="source"/> for a layer search that does not hold the candidates' keys (read as in
    /// <see cref="Extract(LayerTapExtractor, IImageSource, InputNormalization, FeatureExtractionOptions?, IProgress{ExtractionProgress}?, CancellationToken)"/>):
    /// each tapped layer's float32 unit keys are appended to a file in <paramref name="folder"/> and, when <paramref name="validation"/>
    /// is given, multiplied with that layer's validation keys into its similarity matrix <c>[n, N]</c> (float16), batch by batch, which
    /// goes to a <see cref="SimilarityFile"/> in the same folder. Memory: one panel of each similarity matrix
    /// (<see cref="SearchPanelBytes"/>), the norms and probabilities, and one batch; a search that would not fit on the folder's disk is
    /// refused before the pass (<see cref="EnsureSearchFits"/>).
    /// </summary>
    /// <param name="extractor">The tapped model (its layers are the candidates).</param>
    /// <param name="source">The training images and their labels.</param>
    /// <param name="normalization">The model's input normalisation.</param>
    /// <param name="validation">The validation queries' per-layer keys (every tapped layer), or <see langword="null"/> for no similarities.</param>
    /// <param name="folder">A folder to create for the key files (it must not exist); deleted with the result.</param>
    /// <param name="options">Batch size and device; defaults when <see langword="null"/>.</param>
    /// <param name="progress">Told after every batch.</param>
    /// <param name="cancellationToken">Checked before every batch.</param>
    /// <param name="similarities">
    /// Files (written during the pass), or computed from the keys when the search reads them (the pass then only keeps float32
    /// copies of the validation keys); <see cref="SearchSimilarities.Auto"/>: files when they fit on the folder's disk beside the keys.
    /// </param>
    /// <param name="exactSimilarities">
    /// Also write each candidate's similarities in float32 (<see cref="LayerSearchKeys.ExactSimilarities"/>), from the same products,
    /// when the float16 ones go to files and both fit on the folder's disk: θ and λ of the chosen layers can then be searched without
    /// another product of the validation keys with the cache (<see cref="CacheFitOptions.TuneFromSimilarities"/>).
    /// </param>
    public static LayerSearchKeys ExtractForSearch(
        LayerTapExtractor extractor,
        IImageSource source,
        InputNormalization normalization,
        PerLayerKeys? validation,
        string folder,
        FeatureExtractionOptions? options = null,
        IProgress<ExtractionProgress>? progress = null,
        CancellationToken cancellationToken = default,
        SearchSimilarities similarities = SearchSimilarities.Auto,
        bool exactSimilarities = false)
    {
        ArgumentNullException.ThrowIfNull(extractor);
        ArgumentException.ThrowIfNullOrEmpty(folder);
        if (Directory.Exists(folder))
        {
            throw new ArgumentException($"The key folder {folder} exists already.", nameof(folder));
        }

        foreach (var layer in validation is null ? [] : extractor.Layers)
        {
            _ = validation!.Layer(layer); // a missing layer fails before the pass
        }

        var keyBytes = validation is null ? 0 : checked(extractor.Layers.Sum(l => validation.Layer(l).shape[1]) * source.Count * sizeof(float));
        var free = FreeDiskBytes(folder);
        var layers = validation is null ? 0 : extractor.Layers.Count;
        var searchBytes = SearchSimilarityBytes(layers, validation?.Count ?? 0, source.Count) + keyBytes;
        var files = validation is not null && similarities switch
        {
            SearchSimilarities.Files => true,
            SearchSimilarities.FromKeys => false,
            _ => free is not { } f || searchBytes <= f,
        };
        var exact = files && exactSimilarities
            && (free is not { } room || searchBytes + ExactSimilarityBytes(layers, validation!.Count, source.Count) <= room);
        EnsureSearchFits(files ? layers : 0, validation?.Count ?? 0, source.Count, keyBytes, folder, free, ProcessMemory.AvailableBytes(), exact);

        var sink = new SearchSink(extractor, validation, folder, files, exact);
        try
        {
            Run(extractor, source, normalization, options, sink, progress, cancellationToken);
            return sink.Finish();
        }
        catch
        {
            sink.Abandon();
            throw;
        }
    }

    /// <summary>Bytes of a layer search's similarity matrices: one float16 <c>[validation, training]</c> matrix per candidate layer (in files).</summary>
    public static long SearchSimilarityBytes(int layers, long validation, long training) =>
        checked(layers * validation * training * sizeof(ushort));

    /// <summary>Bytes of the float32 copies of a layer search's similarity matrices (<see cref="LayerSearchKeys.ExactSimilarities"/>).</summary>
    public static long ExactSimilarityBytes(int layers, long validation, long training) =>
        checked(layers * validation * training * sizeof(float));

    /// <summary>
    /// Bytes a layer search's similarity matrices hold in memory while they are written: one float16 panel <c>[validation, PanelWidth]</c>
    /// per candidate, and one float32 panel more with <paramref name="exact"/>.
    /// </summary>
    public static long SearchPanelBytes(int layers, long validation, bool exact = false) =>
        checked(layers * validation * SimilarityFile.PanelWidth * (sizeof(ushort) + (exact ? sizeof(float) : 0)));

    /// <summary>
    /// Refuses, before any image is read, a search whose files — the similarity matrices (<see cref="SearchSimilarityBytes"/>) and
    /// the training keys (<paramref name="keyBytes"/>) — exceed the free space of the disk holding <paramref name="folder"/>
    /// (<paramref name="freeDiskBytes"/>), or whose panels being written (<see cref="SearchPanelBytes"/>) exceed the available memory
    /// (<paramref name="availableBytes"/>): the pass would otherwise fail (disk full) or be killed (out of memory) hours in, instead
    /// of failing with a reason. An unknown amount (<see langword="null"/>) is not checked. With <paramref name="exact"/> the float32
    /// copies of the matrices (<see cref="ExactSimilarityBytes"/>) and their panels count too.
    /// </summary>
    /// <exception cref="InvalidOperationException">It does not fit; the message gives the sizes and what to change.</exception>
    public static void EnsureSearchFits(
        int layers, long validation, long training, long keyBytes, string folder, long? freeDiskBytes, long? availableBytes, bool exact = false)
    {
        const string Ways = "Fix the layers (scache evaluate --layers) to skip the search, search fewer candidates (--candidates), or use fewer " +
            "training images (--per-class, --max-train)";
        var similarities = SearchSimilarityBytes(layers, validation, training) + (exact ? ExactSimilarityBytes(layers, validation, training) : 0);
        var needed = similarities + keyBytes;
        if (freeDiskBytes is { } free && needed > free)
        {
            throw new InvalidOperationException(
                FormattableString.Invariant($"The layer search writes {needed / 1e9:F1} GB to {folder}: {similarities / 1e9:F1} GB of similarity matrices ") +
                FormattableString.Invariant($"({layers} candidate layers × {validation:N0} validation × {training:N0} training images, float16{(exact ? " and float32" : "")}) and ") +
                FormattableString.Invariant($"{keyBytes / 1e9:F1} GB of training keys (float32), but that disk has {free / 1e9:F1} GB free. ") +
                $"Point TMPDIR (or CacheFitOptions.KeyFolder) at a larger disk. {Ways}.");
        }

        var panels = SearchPanelBytes(layers, validation, exact);
        if (availableBytes is { } available && panels > available)
        {
            throw new InvalidOperationException(
                FormattableString.Invariant($"The layer search needs {panels / 1e9:F1} GB of memory for its similarity matrices' panels ({layers} candidate layers × ") +
                FormattableString.Invariant($"{validation:N0} validation images × {SimilarityFile.PanelWidth:N0} keys, float16{(exact ? " and float32" : "")}) but {available / 1e9:F1} GB ") +
                $"of memory is available. Use fewer validation images, or: {Ways}.");
        }
    }

    /// <summary>Free bytes of the disk that holds <paramref name="path"/> (or its nearest existing parent); <see langword="null"/> when unknown.</summary>
    public static long? FreeDiskBytes(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        try
        {
            var existing = Path.GetFullPath(path);
            while (!Directory.Exists(existing))
            {
                existing = Path.GetDirectoryName(existing);
                if (existing is null)
                {
                    return null;
                }
            }

            return new DriveInfo(existing).AvailableFreeSpace;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
        {
            return null;
        }
    }

    private static ScalarType CheckStorage(ScalarType storage) => storage is ScalarType.Float32 or ScalarType.Float16
        ? storage
        : throw new ArgumentException($"Per-layer keys are stored as Float32 or Float16, not {storage}.", nameof(storage));

    private static Tensor LabelTensor(IReadOnlyList<int> labels)
    {
        var longs = new long[labels.Count];
        for (var i = 0; i < longs.Length; i++)
        {
            longs[i] = labels[i];
        }

        return tensor(longs, [longs.Length]);
    }

    private static void Run(
        LayerTapExtractor extractor, IImageSource source, InputNormalization normalization, FeatureExtractionOptions? options, Sink sink,
        IProgress<ExtractionProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(extractor);
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(normalization);
        var shape = source.Shape;
        var count = source.Count;
        if (source.Labels.Count != count)
        {
            throw new ArgumentException($"{source.Labels.Count} labels for {count} images.", nameof(source));
        }

        var batchSize = sink.Start(normalization, shape.Channels, count, options);
        var wall = Stopwatch.StartNew();
        long readTicks = 0, waitTicks = 0;
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        sink.Labels = LabelTensor(source.Labels);
        var capacity = Math.Min(batchSize, count);
        byte[][] buffers = [new byte[(long)capacity * shape.Size], new byte[(long)capacity * shape.Size]];
        Task ReadAsync(int start, byte[] buffer) => Task.Run(
            () =>
            {
                var began = Stopwatch.GetTimestamp();
                source.Read(start, Math.Min(batchSize, count - start), buffer);
                readTicks += Stopwatch.GetTimestamp() - began; // one read in flight at a time; its completion publishes the sum
            },
            cancellationToken);

        var pending = ReadAsync(0, buffers[0]);
        try
        {
            for (int start = 0, i = 0; start < count; start += batchSize, i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var waitBegan = Stopwatch.GetTimestamp();
                pending.GetAwaiter().GetResult();
                waitTicks += Stopwatch.GetTimestamp() - waitBegan;
                var n = Math.Min(batchSize, count - start);
                var current = buffers[i % 2];
                var next = start + batchSize;
                pending = next < count ? ReadAsync(next, buffers[(i + 1) % 2]) : Task.CompletedTask;
                var batch = empty([n, shape.Channels, shape.Height, shape.Width], ScalarType.Byte);
                batch.bytes = current.AsSpan(0, n * shape.Size);
                sink.Add(batch, start, scope);
                progress?.Report(new ExtractionProgress(start + n, count));
            }
        }
        finally
        {
            // A read still in flight (after a failure or cancellation) must not outlive its buffer's owner unobserved.
            try
            {
                pending.Wait(CancellationToken.None);
            }
            catch (AggregateException)
            {
            }
        }

        sink.Detach(scope);
        sink.Throughput = new ExtractionThroughput(
            count, wall.Elapsed.TotalSeconds, (double)readTicks / Stopwatch.Frequency, (double)waitTicks / Stopwatch.Frequency);
    }

    private static void Run(
        LayerTapExtractor extractor, Tensor images, Tensor? labels, InputNormalization normalization, FeatureExtractionOptions? options,
        Sink sink, IProgress<ExtractionProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(extractor);
        ArgumentNullException.ThrowIfNull(images);
        ArgumentNullException.ThrowIfNull(normalization);
        if (images.dim() != 4)
        {
            throw new ArgumentException($"Expected images [N, C, H, W]; got [{string.Join(", ", images.shape)}].", nameof(images));
        }

        var count = images.shape[0];
        if (labels is not null && (labels.dim() != 1 || labels.shape[0] != count))
        {
            throw new ArgumentException($"Expected labels [{count}]; got [{string.Join(", ", labels.shape)}].", nameof(labels));
        }

        var batchSize = sink.Start(normalization, images.shape[1], count, options);
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        if (labels is not null)
        {
            sink.Labels = labels.to(ScalarType.Int64, CPU, copy: true);
        }

        for (long start = 0; start < count; start += batchSize)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var n = Math.Min(batchSize, count - start);
            sink.Add(images.narrow(0, start, n), start, scope);
            progress?.Report(new ExtractionProgress(start + n, count));
        }

        sink.Detach(scope);
    }

    /// <summary>Receives each batch's forward pass and copies what it keeps into tensors preallocated for the whole set.</summary>
    private abstract class Sink(LayerTapExtractor extractor)
    {
        private InputNormalization? _normalization;
        private Device? _device;

        protected LayerTapExtractor Extractor { get; } = extractor;

        protected long Count { get; private set; }

        public Tensor? Labels { get; set; }

        public ExtractionThroughput? Throughput { get; set; }

        protected Tensor? Probabilities { get; set; }

        public int Start(InputNormalization normalization, long channels, long count, FeatureExtractionOptions? options)
        {
            options ??= new FeatureExtractionOptions();
            ArgumentOutOfRangeException.ThrowIfNegativeOrZero(options.BatchSize, nameof(options));
            if (count == 0)
            {
                throw new ArgumentException("The data set has no images.", nameof(count));
            }

            if (channels != normalization.Channels)
            {
                throw new ArgumentException($"Images have {channels} channels but the normalisation has {normalization.Channels}.", nameof(normalization));
            }

            _normalization = normalization;
            _device = options.Device ?? Extractor.Model.ParameterDevice();
            Count = count;
            return options.BatchSize;
        }

        public void Add(Tensor batch, long start, DisposeScope scope)
        {
            var x = _normalization!.Normalize(batch, _device);
            var (logits, activations) = Extractor.ForwardActivations(x);
            var n = batch.shape[0];
            Probabilities ??= empty([Count, logits.shape[1]], ScalarType.Float32);
            Probabilities.narrow(0, start, n).copy_(nn.functional.softmax(logits, 1));
            Keep(logits, activations, start, n);
            scope.DisposeEverythingBut(Kept());
        }

        public void Detach(DisposeScope scope)
        {
            if (Probabilities is null)
            {
                throw new InvalidOperationException("No batch was extracted.");
            }

            foreach (var t in Kept())
            {
                scope.Detach(t);
            }
        }

        protected abstract void Keep(Tensor logits, Tensor[] activations, long start, long n);

        protected abstract IEnumerable<Tensor?> Results();

        private List<IDisposable> Kept() => [.. Results().Append(Probabilities).Append(Labels).OfType<Tensor>()];
    }

    /// <summary>Composed keys (the extractor's recipe) and logits.</summary>
    private sealed class KeySink(LayerTapExtractor extractor) : Sink(extractor)
    {
        private Tensor? _keys;
        private Tensor? _logits;

        public ExtractedFeatures Finish() => new(Extractor.Layers, _keys!, _logits!, Probabilities!, Labels) { Throughput = Throughput };

        protected override void Keep(Tensor logits, Tensor[] activations, long start, long n)
        {
            var keys = KeyRecipe.Compose(activations, Extractor.KeyNormalization);
            _keys ??= empty([Count, keys.shape[1]], ScalarType.Float32);
            _logits ??= empty([Count, logits.shape[1]], ScalarType.Float32);
            _keys.narrow(0, start, n).copy_(keys);
            _logits.narrow(0, start, n).copy_(logits);
        }

        protected override IEnumerable<Tensor?> Results() => [_keys, _logits];
    }

    /// <summary>Each layer's unit keys (in the storage type) and activation norms.</summary>
    private sealed class LayerSink(LayerTapExtractor extractor, ScalarType storage) : Sink(extractor)
    {
        private Tensor[]? _keys;
        private Tensor[]? _norms;

        public PerLayerKeys Finish()
        {
            var layers = Extractor.Layers;
            return new PerLayerKeys(
                layers.Select((l, i) => (l, _keys![i])).ToDictionary(p => p.l, p => p.Item2, StringComparer.Ordinal),
                layers.Select((l, i) => (l, _norms![i])).ToDictionary(p => p.l, p => p.Item2, StringComparer.Ordinal),
                Probabilities!,
                Labels!)
            {
                Throughput = Throughput,
            };
        }

        protected override void Keep(Tensor logits, Tensor[] activations, long start, long n)
        {
            _keys ??= [.. activations.Select(a => empty([Count, a.shape[1]], storage))];
            _norms ??= [.. activations.Select(_ => empty([Count], ScalarType.Float32))];
            for (var i = 0; i < activations.Length; i++)
            {
                var (unit, norm) = UnitKeys(activations[i]);
                _norms[i].narrow(0, start, n).copy_(norm);
                _keys[i].narrow(0, start, n).copy_(unit);
            }
        }

        protected override IEnumerable<Tensor?> Results() => [.. _keys ?? [], .. _norms ?? []];

        /// <summary>A flattened activation's L2-normalised rows (float32) and its row norms: what every per-layer key store keeps.</summary>
        public static (Tensor Unit, Tensor Norm) UnitKeys(Tensor activation) =>
            (nn.functional.normalize(activation, 2, 1, KeyRecipe.NormEpsilon), activation.norm(1));
    }

    /// <summary>Each layer's unit keys appended to its file, its norms, and its similarities to the validation keys.</summary>
    private sealed class SearchSink(LayerTapExtractor extractor, PerLayerKeys? validation, string folder, bool files, bool exact) : Sink(extractor)
    {
        private LayerSearchKeys.Writer? _writer;
        private Tensor[]? _norms;
        private SimilarityFile.Writer[]? _similarities;
        private SimilarityFile.Writer[]? _exact;
        private Tensor[]? _queries;
        private long[]? _dimensions;

        public LayerSearchKeys Finish()
        {
            _writer!.Dispose();
            SimilarityMatrix[]? similarities = null;
            SimilarityMatrix[]? exactSimilarities = null;
            Tensor[]? queries = null;
            if (_similarities is not null)
            {
                DisposeQueryCopies();
                similarities = [.. _similarities.Select(w => w.Complete())];
                exactSimilarities = _exact is null ? null : [.. _exact.Select(w => w.Complete())];
            }
            else if (validation is not null)
            {
                // Similarities from the keys: the search multiplies these owned float32 copies of the validation keys with the spilled keys.
                queries = [.. Extractor.Layers.Select(l => validation.Layer(l).to(ScalarType.Float32, CPU, copy: true).DetachFromDisposeScope())];
            }

            return new LayerSearchKeys(folder, [.. Extractor.Layers], _dimensions!, _norms!, Probabilities!, Labels!, similarities, queries, exactSimilarities) { Throughput = Throughput };
        }

        public void Abandon()
        {
            _writer?.Dispose();
            foreach (var w in (_similarities ?? []).Concat(_exact ?? []))
            {
                w.Dispose();
            }

            DisposeQueryCopies();
            LayerSearchKeys.DeleteFolder(folder);
        }

        protected override void Keep(Tensor logits, Tensor[] activations, long start, long n)
        {
            if (_writer is null)
            {
                _writer = new LayerSearchKeys.Writer(folder, activations.Length);
                _dimensions = [.. activations.Select(a => a.shape[1])];
                _norms = [.. activations.Select(_ => empty([Count], ScalarType.Float32))];
                if (validation is not null && files)
                {
                    // The queries as LayerCombinationSearch.Similarities multiplies them: float32 (a copy only when stored otherwise).
                    _queries = [.. Extractor.Layers.Select(l => validation.Layer(l))
                        .Select(q => q.dtype == ScalarType.Float32 && q.device_type == DeviceType.CPU ? q : q.to(ScalarType.Float32, CPU))];
                    _similarities = [.. _queries.Select((q, i) => new SimilarityFile.Writer(Path.Combine(folder, LayerSearchKeys.SimilarityFileName(i)), q.shape[0], Count))];
                    _exact = exact
                        ? [.. _queries.Select((q, i) => new SimilarityFile.Writer(Path.Combine(folder, LayerSearchKeys.ExactSimilarityFileName(i)), q.shape[0], Count, ScalarType.Float32))]
                        : null;
                }
            }

            // The tensor work first, on this thread; then the files' writes (each layer's keys, and the similarity panels this batch
            // filled) side by side, one file per thread: copying into the page cache is most of the writing, and one file's writes
            // run one at a time.
            var writes = new List<Action>();
            for (var i = 0; i < activations.Length; i++)
            {
                var (unit, norm) = LayerSink.UnitKeys(activations[i]);
                _norms![i].narrow(0, start, n).copy_(norm);
                var keys = unit.device_type == DeviceType.CPU ? unit : unit.cpu();
                var layer = i;
                writes.Add(() => _writer.Append(layer, keys));
                if (_similarities is not null)
                {
                    var product = _queries![i].mm(keys.t());
                    foreach (var file in _exact is null ? [_similarities[i]] : new[] { _similarities[i], _exact[i] })
                    {
                        if (file.AppendDeferringWrite(product)) // batches come in order
                        {
                            writes.Add(file.WritePanel);
                        }
                    }
                }
            }

            WriteSideBySide(writes);
        }

        private static void WriteSideBySide(List<Action> writes)
        {
            try
            {
                Parallel.Invoke(new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount }, [.. writes]);
            }
            catch (AggregateException e) when (e.InnerExceptions.Count > 0)
            {
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(e.InnerExceptions[0]); // e.g. the disk's IOException, as one write throws it
            }
        }

        protected override IEnumerable<Tensor?> Results() => [.. _norms ?? [], .. OwnedQueries()];

        private IEnumerable<Tensor> OwnedQueries() =>
            _queries is null ? [] : _queries.Where((q, i) => !ReferenceEquals(q, validation!.Layer(Extractor.Layers[i])));

        private void DisposeQueryCopies()
        {
            foreach (var q in OwnedQueries().ToList())
            {
                q.Dispose();
            }

            _queries = null;
        }
    }
}
