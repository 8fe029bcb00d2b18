using ScalableCache.Core.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Features;

/// <summary>Settings of a whole-data-set extraction.</summary>
public sealed class FeatureExtractionOptions
{
    /// <summary>Images per forward pass.</summary>
    public int BatchSize { get; set; } = 256;

    /// <summary>Device the batches are sent to; the model's own device when <see langword="null"/> (the model must already be there).</summary>
    public Device? Device { get; set; }
}

/// <summary>Progress of an extraction: images done so far, out of the total.</summary>
/// <param name="Processed">Images processed.</param>
/// <param name="Total">Images in the data set.</param>
public readonly record struct ExtractionProgress(long Processed, long Total);

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
/// Runs a <see cref="LayerTapExtractor"/> over a whole data set in batches: uint8 NCHW pixels (or a tensor) are normalised per batch,
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
    /// <summary>Extracts keys for <c>pixels.Length / shape.Size</c> uint8 images stored NCHW (image-major, then channel, row, column).</summary>
    /// <param name="extractor">The tapped model.</param>
    /// <param name="pixels">All images, <c>N · C · H · W</c> bytes.</param>
    /// <param name="labels">One label per image, or empty for none.</param>
    /// <param name="shape">Shape of one image.</param>
    /// <param name="normalization">The model's input normalisation.</param>
    /// <param name="options">Batch size and device; defaults when <see langword="null"/>.</param>
    /// <param name="progress">Told after every batch.</param>
    /// <param name="cancellationToken">Checked before every batch.</param>
    public static ExtractedFeatures Extract(
        LayerTapExtractor extractor,
        ReadOnlySpan<byte> pixels,
        ReadOnlySpan<int> labels,
        InputShape shape,
        InputNormalization normalization,
        FeatureExtractionOptions? options = null,
        IProgress<ExtractionProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(extractor);
        ArgumentNullException.ThrowIfNull(normalization);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(shape.Size, nameof(shape));
        if (pixels.Length % shape.Size != 0)
        {
            throw new ArgumentException($"{pixels.Length} pixel bytes are not a whole number of {shape} images.", nameof(pixels));
        }

        var count = pixels.Length / shape.Size;
        if (!labels.IsEmpty && labels.Length != count)
        {
            throw new ArgumentException($"{labels.Length} labels for {count} images.", nameof(labels));
        }

        var run = new Run(extractor, normalization, shape.Channels, count, options);
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        if (!labels.IsEmpty)
        {
            var longs = new long[count];
            for (var i = 0; i < count; i++)
            {
                longs[i] = labels[i];
            }

            run.Labels = tensor(longs, [count]);
        }

        var buffer = new byte[Math.Min(run.BatchSize, Math.Max(count, 1)) * shape.Size];
        for (var start = 0; start < count; start += run.BatchSize)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var n = Math.Min(run.BatchSize, count - start);
            pixels.Slice(start * shape.Size, n * shape.Size).CopyTo(buffer);
            var batch = empty([n, shape.Channels, shape.Height, shape.Width], ScalarType.Byte);
            batch.bytes = buffer.AsSpan(0, n * shape.Size);
            run.Add(batch, start, scope);
            progress?.Report(new ExtractionProgress(start + n, count));
        }

        return run.Finish(scope);
    }

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

        var run = new Run(extractor, normalization, images.shape[1], count, options);
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        if (labels is not null)
        {
            run.Labels = labels.to(ScalarType.Int64, CPU, copy: true);
        }

        for (long start = 0; start < count; start += run.BatchSize)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var n = Math.Min(run.BatchSize, count - start);
            run.Add(images.narrow(0, start, n), start, scope);
            progress?.Report(new ExtractionProgress(start + n, count));
        }

        return run.Finish(scope);
    }

    private sealed class Run
    {
        private readonly LayerTapExtractor _extractor;
        private readonly InputNormalization _normalization;
        private readonly Device _device;
        private readonly long _count;
        private Tensor? _keys;
        private Tensor? _logits;
        private Tensor? _probabilities;

        public Run(LayerTapExtractor extractor, InputNormalization normalization, long channels, long count, FeatureExtractionOptions? options)
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

            _extractor = extractor;
            _normalization = normalization;
            _device = options.Device ?? extractor.Model.ParameterDevice;
            _count = count;
            BatchSize = options.BatchSize;
        }

        public int BatchSize { get; }

        public Tensor? Labels { get; set; }

        public void Add(Tensor batch, long start, DisposeScope scope)
        {
            var x = _normalization.Normalize(batch, _device);
            using var result = _extractor.Extract(x);
            if (_keys is null)
            {
                _keys = empty([_count, result.Keys.shape[1]], ScalarType.Float32);
                _logits = empty([_count, result.Logits.shape[1]], ScalarType.Float32);
                _probabilities = empty([_count, result.Logits.shape[1]], ScalarType.Float32);
            }

            var n = batch.shape[0];
            _keys.narrow(0, start, n).copy_(result.Keys);
            _logits!.narrow(0, start, n).copy_(result.Logits);
            _probabilities!.narrow(0, start, n).copy_(result.Probabilities);
            scope.DisposeEverythingBut(Kept());
        }

        public ExtractedFeatures Finish(DisposeScope scope)
        {
            if (_keys is null)
            {
                throw new InvalidOperationException("No batch was extracted.");
            }

            foreach (var t in Kept())
            {
                scope.Detach(t);
            }

            return new ExtractedFeatures(_extractor.Layers, _keys, _logits!, _probabilities!, Labels);
        }

        private List<IDisposable> Kept()
        {
            var kept = new List<IDisposable>(4);
            foreach (var t in new[] { _keys, _logits, _probabilities, Labels })
            {
                if (t is not null)
                {
                    kept.Add(t);
                }
            }

            return kept;
        }
    }
}
