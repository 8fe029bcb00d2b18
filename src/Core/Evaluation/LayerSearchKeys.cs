using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Evaluation;

/// <summary>
/// The training images' per-layer keys for a greedy layer search that never holds every candidate's <c>N × D</c> keys at once
/// (<see cref="Features.DatasetFeatureExtractor.ExtractForSearch"/>): each candidate's similarities to the validation queries
/// (<c>[n, N]</c> float16, the values <see cref="LayerCombinationSearch.Similarities"/> gives) and the activation norms stay in
/// memory, while the float32 unit keys go to one file per layer and are read back, bit for bit, for the chosen layers only
/// (<see cref="Compose"/>). Owns its tensors and its folder, which <see cref="Dispose"/> deletes.
/// </summary>
public sealed class LayerSearchKeys : IDisposable
{
    private readonly string _folder;
    private readonly string[] _layers;
    private readonly long[] _dimensions;
    private Dictionary<string, Tensor>? _similarities;
    private bool _disposed;

    internal LayerSearchKeys(
        string folder, string[] layers, long[] dimensions, Tensor[] norms, Tensor probabilities, Tensor labels, Tensor[]? similarities)
    {
        _folder = folder;
        _layers = layers;
        _dimensions = dimensions;
        Norms = layers.Select((l, i) => (l, norms[i])).ToDictionary(p => p.l, p => p.Item2, StringComparer.Ordinal);
        _similarities = similarities?.Select((s, i) => (layers[i], s)).ToDictionary(p => p.Item1, p => p.s, StringComparer.Ordinal);
        Probabilities = probabilities;
        Labels = labels;
    }

    /// <summary>The extracted layers, in tap order.</summary>
    public IReadOnlyList<string> Layers => _layers;

    /// <summary>Layer name → L2 norms <c>[N]</c> (float32) of the flattened activations.</summary>
    public IReadOnlyDictionary<string, Tensor> Norms { get; }

    /// <summary>
    /// Layer name → validation-query × training-key similarities <c>[n, N]</c> (float16); <see langword="null"/> when no validation
    /// keys were given or after <see cref="ReleaseSimilarities"/>.
    /// </summary>
    public IReadOnlyDictionary<string, Tensor>? Similarities => _similarities;

    /// <summary><c>p_net</c> <c>[N, C]</c> (float32).</summary>
    public Tensor Probabilities { get; }

    /// <summary>Labels <c>[N]</c> (int64).</summary>
    public Tensor Labels { get; }

    /// <summary>Number of training rows N.</summary>
    public long Count => Labels.shape[0];

    /// <summary>How fast the pass ran (images/s with the network, the loader beside it, waits); set by the extractor.</summary>
    public Features.ExtractionThroughput? Throughput { get; internal set; }

    /// <summary>Number of classes C.</summary>
    public int ClassCount => (int)Probabilities.shape[1];

    /// <summary>Bytes of unit keys on disk (all layers).</summary>
    public long SpilledBytes => _dimensions.Sum() * Count * sizeof(float);

    /// <summary>The flattened width of <paramref name="layer"/>.</summary>
    public long Dimension(string layer) => _dimensions[IndexOf(layer)];

    /// <summary>Frees the similarity matrices (once the search is done); the keys stay readable.</summary>
    public void ReleaseSimilarities()
    {
        foreach (var s in _similarities?.Values ?? Enumerable.Empty<Tensor>())
        {
            s.Dispose();
        }

        _similarities = null;
    }

    /// <summary>The float32 unit keys <c>[count, D]</c> of rows <c>[start, start + count)</c> of <paramref name="layer"/>, as extracted.</summary>
    public unsafe Tensor ReadLayer(string layer, long start, long count)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var i = IndexOf(layer);
        ArgumentOutOfRangeException.ThrowIfNegative(start);
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if (start + count > Count)
        {
            throw new ArgumentOutOfRangeException(nameof(count), $"Rows [{start}, {start + count}) of {Count}.");
        }

        var width = _dimensions[i];
        var result = empty([count, width], ScalarType.Float32);
        using var file = new FileStream(PathOf(i), FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        file.Seek(start * width * sizeof(float), SeekOrigin.Begin);
        using var storage = result.storage<float>();
        var address = (byte*)storage.data_ptr();
        for (long done = 0, total = count * width * sizeof(float); done < total;)
        {
            var part = (int)Math.Min(1 << 30, total - done);
            file.ReadExactly(new Span<byte>(address + done, part));
            done += part;
        }

        return result;
    }

    /// <summary>
    /// The cache keys of <paramref name="layers"/> for rows <c>[start, start + count)</c>, composed as
    /// <see cref="PerLayerKeys.Compose"/> composes them (bit for bit), with their probabilities and labels.
    /// </summary>
    public FeatureTable Compose(IReadOnlyList<string> layers, long start, long count, KeyNormalization normalization = KeyNormalization.PerLayer)
    {
        ArgumentNullException.ThrowIfNull(layers);
        using var scope = NewDisposeScope();
        return PerLayerKeys.ComposeTable(
            layers, [.. layers.Select(l => ReadLayer(l, start, count))], [.. layers.Select(l => Norms[IndexedName(l)].narrow(0, start, count))],
            Probabilities.narrow(0, start, count), Labels.narrow(0, start, count), normalization);
    }

    /// <summary>
    /// The rows at <paramref name="rows"/> of every layer (or of <paramref name="layers"/> only) as in-memory per-layer keys, the
    /// values <see cref="PerLayerKeys.Rows"/> gives of the same extraction; one layer is read at a time. With
    /// <paramref name="keys"/> false no file is read: the result holds the layers' norms, the probabilities and the labels, and no
    /// keys (what a search over precomputed similarities needs of its queries).
    /// </summary>
    public PerLayerKeys Rows(IReadOnlyList<int> rows, IReadOnlyList<string>? layers = null, bool keys = true)
    {
        ArgumentNullException.ThrowIfNull(rows);
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var scope = NewDisposeScope();
        var index = tensor(rows.Select(r => (long)r).ToArray());
        var names = layers ?? _layers;
        Tensor Take(Tensor t) => t.index_select(0, index).DetachFromDisposeScope();
        var unit = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var layer in keys ? names : [])
        {
            using var inner = NewDisposeScope();
            unit[layer] = Take(ReadLayer(layer, 0, Count));
        }

        return new PerLayerKeys(
            unit,
            names.ToDictionary(l => l, l => Take(Norms[l]), StringComparer.Ordinal),
            Take(Probabilities),
            Take(Labels));
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        ReleaseSimilarities();
        foreach (var t in Norms.Values)
        {
            t.Dispose();
        }

        Probabilities.Dispose();
        Labels.Dispose();
        DeleteFolder(_folder);
    }

    internal static void DeleteFolder(string folder)
    {
        try
        {
            Directory.Delete(folder, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // A temporary folder left behind is not worth failing a finished job for.
        }
    }

    internal static string FileName(int index) => $"layer{index}.f32";

    private string PathOf(int index) => Path.Combine(_folder, FileName(index));

    private string IndexedName(string layer) => _layers[IndexOf(layer)];

    private int IndexOf(string layer)
    {
        var i = Array.IndexOf(_layers, layer);
        return i >= 0
            ? i
            : throw new ArgumentException($"Layer '{layer}' was not extracted; have {string.Join(", ", _layers)}.", nameof(layer));
    }

    /// <summary>Appends each batch's unit keys to the layers' files.</summary>
    internal sealed class Writer : IDisposable
    {
        private readonly FileStream[] _files;

        public Writer(string folder, int layers)
        {
            Folder = folder;
            Directory.CreateDirectory(folder);
            _files = new FileStream[layers];
            for (var i = 0; i < layers; i++)
            {
                _files[i] = new FileStream(Path.Combine(folder, FileName(i)), FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);
            }
        }

        public string Folder { get; }

        /// <summary>Appends <paramref name="unit"/> (float32, on the CPU) to layer <paramref name="index"/>'s file.</summary>
        public unsafe void Append(int index, Tensor unit)
        {
            using var scope = NewDisposeScope();
            var t = unit.dtype == ScalarType.Float32 && unit.device_type == DeviceType.CPU ? unit.contiguous() : unit.to(ScalarType.Float32, CPU).contiguous();
            using var storage = t.storage<float>();
            var address = (byte*)storage.data_ptr() + t.storage_offset() * sizeof(float);
            var total = t.numel() * sizeof(float);
            for (long done = 0; done < total;)
            {
                var part = (int)Math.Min(1 << 30, total - done);
                _files[index].Write(new ReadOnlySpan<byte>(address + done, part));
                done += part;
            }

            GC.KeepAlive(t);
        }

        public void Dispose()
        {
            foreach (var f in _files)
            {
                f.Dispose();
            }
        }
    }
}
