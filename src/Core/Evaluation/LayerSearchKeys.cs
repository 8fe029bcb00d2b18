using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Evaluation;

/// <summary>
/// The training images' per-layer keys for a greedy layer search that never holds every candidate's <c>N × D</c> keys at once
/// (<see cref="Features.DatasetFeatureExtractor.ExtractForSearch"/>): each candidate's similarities to the validation queries
/// (<c>[n, N]</c> float16, the values <see cref="LayerCombinationSearch.Similarities"/> gives) go to one
/// <see cref="SimilarityFile"/> per layer, read tile by tile by the search, and the float32 unit keys to one file per layer, read
/// back, bit for bit, for the chosen layers only (<c>Compose</c>); only the activation norms, probabilities and labels stay in
/// memory. Owns its tensors and its folder, which <see cref="Dispose"/> deletes.
/// </summary>
public sealed class LayerSearchKeys : IDisposable
{
    private readonly string _folder;
    private readonly string[] _layers;
    private readonly long[] _dimensions;
    private Dictionary<string, SimilarityMatrix>? _similarities;
    private Dictionary<string, SimilarityMatrix>? _exact;
    private bool _disposed;

    internal LayerSearchKeys(
        string folder, string[] layers, long[] dimensions, Tensor[] norms, Tensor probabilities, Tensor labels, SimilarityMatrix[]? similarities,
        Tensor[]? queries = null, SimilarityMatrix[]? exactSimilarities = null)
    {
        _folder = folder;
        _layers = layers;
        _dimensions = dimensions;
        Norms = layers.Select((l, i) => (l, norms[i])).ToDictionary(p => p.l, p => p.Item2, StringComparer.Ordinal);
        Probabilities = probabilities;
        Labels = labels;
        similarities ??= queries?.Select((q, i) => (SimilarityMatrix)new KeySimilarities(this, i, q)).ToArray();
        _similarities = similarities?.Select((s, i) => (layers[i], s)).ToDictionary(p => p.Item1, p => p.s, StringComparer.Ordinal);
        _exact = exactSimilarities?.Select((s, i) => (layers[i], s)).ToDictionary(p => p.Item1, p => p.s, StringComparer.Ordinal);
    }

    /// <summary>The extracted layers, in tap order.</summary>
    public IReadOnlyList<string> Layers => _layers;

    /// <summary>Layer name → L2 norms <c>[N]</c> (float32) of the flattened activations.</summary>
    public IReadOnlyDictionary<string, Tensor> Norms { get; }

    /// <summary>
    /// Layer name → validation-query × training-key similarities <c>[n, N]</c> (float16): in files, or computed from the spilled keys
    /// tile by tile (<see cref="SearchSimilarities"/>); <see langword="null"/> when no validation keys were given or after
    /// <see cref="ReleaseSimilarities"/>.
    /// </summary>
    public IReadOnlyDictionary<string, SimilarityMatrix>? Similarities => _similarities;

    /// <summary>
    /// Layer name → the same similarities in float32 (files written from the same products as <see cref="Similarities"/>), from
    /// which θ and λ of the chosen layers are searched without a second product; <see langword="null"/> when they were not written
    /// (<see cref="CacheFitOptions.TuneFromSimilarities"/>, or no room on disk) or after <see cref="ReleaseExactSimilarities"/>.
    /// </summary>
    public IReadOnlyDictionary<string, SimilarityMatrix>? ExactSimilarities => _exact;

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

    /// <summary>Frees the float16 similarity matrices (once the search is done); the keys, and any <see cref="ExactSimilarities"/>, stay.</summary>
    public void ReleaseSimilarities() => Release(ref _similarities);

    /// <summary>Frees the float32 similarity matrices (once θ and λ are chosen); the keys stay readable.</summary>
    public void ReleaseExactSimilarities() => Release(ref _exact);

    /// <summary>The float32 unit keys <c>[count, D]</c> of rows <c>[start, start + count)</c> of <paramref name="layer"/>, as extracted.</summary>
    public Tensor ReadLayer(string layer, long start, long count)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var i = IndexOf(layer);
        CheckRows(start, count);
        var result = empty([count, _dimensions[i]], ScalarType.Float32);
        ReadInto(i, start, count, result, 0);
        return result;
    }

    /// <summary>Reads rows <c>[start, start + count)</c> of layer <paramref name="index"/> into columns from <paramref name="column"/> of <paramref name="target"/> (contiguous float32).</summary>
    private unsafe void ReadInto(int index, long start, long count, Tensor target, long column)
    {
        var width = _dimensions[index];
        var stride = target.shape[1];
        using var file = new FileStream(PathOf(index), FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        file.Seek(start * width * sizeof(float), SeekOrigin.Begin);
        using var storage = target.storage<float>();
        var address = (byte*)storage.data_ptr() + (target.storage_offset() * sizeof(float));
        if (stride == width)
        {
            for (long done = 0, total = count * width * sizeof(float); done < total;)
            {
                var part = (int)Math.Min(1 << 30, total - done);
                file.ReadExactly(new Span<byte>(address + done, part));
                done += part;
            }

            return;
        }

        for (long r = 0; r < count; r++)
        {
            file.ReadExactly(new Span<byte>(address + (((r * stride) + column) * sizeof(float)), checked((int)(width * sizeof(float)))));
        }
    }

    /// <summary>The rows at <paramref name="rows"/> of layer <paramref name="index"/> as a new <c>[rows, D]</c> float32 tensor, each read from the file alone.</summary>
    private Tensor ReadRows(int index, IReadOnlyList<int> rows)
    {
        var result = empty([rows.Count, _dimensions[index]], ScalarType.Float32);
        ReadRowsInto(index, rows, result, 0);
        return result;
    }

    /// <summary>
    /// Reads the rows at <paramref name="rows"/> of layer <paramref name="index"/>, each from the file alone, into columns
    /// <c>[column, column + D)</c> of <paramref name="target"/> (contiguous float32 <c>[rows, ≥ D]</c>).
    /// </summary>
    private unsafe void ReadRowsInto(int index, IReadOnlyList<int> rows, Tensor target, long column)
    {
        var width = _dimensions[index];
        var bytes = checked((int)(width * sizeof(float)));
        var stride = target.shape[1];
        using var file = File.OpenHandle(PathOf(index), FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.RandomAccess);
        using var storage = target.storage<float>();
        var address = (byte*)storage.data_ptr() + (target.storage_offset() * sizeof(float));
        for (var r = 0; r < rows.Count; r++)
        {
            if ((uint)rows[r] >= (ulong)Count)
            {
                throw new ArgumentOutOfRangeException(nameof(rows), $"Row {rows[r]} of {Count}.");
            }

            var row = new Span<byte>(address + ((((long)r * stride) + column) * sizeof(float)), bytes);
            for (long position = (long)rows[r] * bytes; row.Length > 0;)
            {
                var read = RandomAccess.Read(file, row, position);
                if (read <= 0)
                {
                    throw new EndOfStreamException($"Key file {PathOf(index)} ended at byte {position}.");
                }

                row = row[read..];
                position += read;
            }
        }
    }

    private void CheckRows(long start, long count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(start);
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if (start + count > Count)
        {
            throw new ArgumentOutOfRangeException(nameof(count), $"Rows [{start}, {start + count}) of {Count}.");
        }
    }

    /// <summary>
    /// The cache keys of <paramref name="layers"/> for rows <c>[start, start + count)</c>, composed as
    /// <see cref="PerLayerKeys.Compose"/> composes them (bit for bit), with their probabilities and labels.
    /// </summary>
    /// <remarks>
    /// Each layer's rows are read from its file straight into their columns of the one <c>[count, D]</c> result, composed by the
    /// key recipe in place (<see cref="KeyRecipe.ComposeColumns"/>, as <see cref="KeyRecipe.ComposeUnitParts"/> composes): one
    /// <c>[count, D]</c> tensor instead of three.
    /// </remarks>
    public FeatureTable Compose(IReadOnlyList<string> layers, long start, long count, KeyNormalization normalization = KeyNormalization.PerLayer)
    {
        ArgumentNullException.ThrowIfNull(layers);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (layers.Count == 0)
        {
            throw new ArgumentException("At least one layer is needed.", nameof(layers));
        }

        CheckRows(start, count);
        return Compose(layers, count, t => t.narrow(0, start, count).clone(), (index, target, column) => ReadInto(index, start, count, target, column), normalization);
    }

    /// <summary>
    /// The cache keys of <paramref name="layers"/> for the rows at <paramref name="rows"/> (e.g. the report half of a test pass),
    /// composed as <see cref="PerLayerKeys.Compose"/> composes them (bit for bit), with their probabilities and labels: each row is
    /// read from each layer's file straight into its columns of the one <c>[rows, D]</c> result and composed there
    /// (<see cref="KeyRecipe.ComposeColumns"/>), so no per-layer copy of the rows is held beside it.
    /// </summary>
    public FeatureTable Compose(IReadOnlyList<string> layers, IReadOnlyList<int> rows, KeyNormalization normalization = KeyNormalization.PerLayer)
    {
        ArgumentNullException.ThrowIfNull(layers);
        ArgumentNullException.ThrowIfNull(rows);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (layers.Count == 0)
        {
            throw new ArgumentException("At least one layer is needed.", nameof(layers));
        }

        using var index = tensor(rows.Select(r => (long)r).ToArray());
        return Compose(layers, rows.Count, t => t.index_select(0, index), (layer, target, column) => ReadRowsInto(layer, rows, target, column), normalization);
    }

    /// <summary>
    /// The shared composition of <c>count</c> rows: <paramref name="take"/> selects them (as new tensors) from any per-row tensor (norms,
    /// probabilities, labels), <paramref name="read"/> <c>(layer index, target, column)</c> reads a layer's rows into its columns of the
    /// one <c>[count, D]</c> result, which the key recipe then composes in place (<see cref="KeyRecipe.ComposeColumns"/>).
    /// </summary>
    private FeatureTable Compose(
        IReadOnlyList<string> layers, long count, Func<Tensor, Tensor> take, Action<int, Tensor, long> read, KeyNormalization normalization)
    {
        using var scope = NewDisposeScope();
        var indices = layers.Select(IndexOf).ToArray();
        var keys = KeyRecipe.ComposeColumns(
            count, [.. indices.Select(i => _dimensions[i])], [.. indices.Select(i => take(Norms[_layers[i]]))], normalization,
            (layer, target, column) => read(indices[layer], target, column));
        var table = new FeatureTable(keys, take(Probabilities), take(Labels), layers);
        table.Keys.DetachFromDisposeScope();
        table.Probabilities.DetachFromDisposeScope();
        table.Labels.DetachFromDisposeScope();
        return table;
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
            unit[layer] = ReadRows(IndexOf(layer), rows).DetachFromDisposeScope();
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
        ReleaseExactSimilarities();
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

    internal static string SimilarityFileName(int index) => $"similarities{index}.f16";

    internal static string ExactSimilarityFileName(int index) => $"similarities{index}.f32";

    private static void Release(ref Dictionary<string, SimilarityMatrix>? matrices)
    {
        foreach (var s in matrices?.Values ?? Enumerable.Empty<SimilarityMatrix>())
        {
            s.Dispose();
        }

        matrices = null;
    }

    private string PathOf(int index) => Path.Combine(_folder, FileName(index));

    private int IndexOf(string layer)
    {
        var i = Array.IndexOf(_layers, layer);
        return i >= 0
            ? i
            : throw new ArgumentException($"Layer '{layer}' was not extracted; have {string.Join(", ", _layers)}.", nameof(layer));
    }

    /// <summary>
    /// One layer's similarities computed from the keys: each tile is the held float32 validation keys of its queries times the
    /// spilled training keys of its columns (read from the layer's file), rounded to float16 as <see cref="SimilarityFile.Writer"/>
    /// rounds. Owns the validation keys. Its tiles may differ from the training pass's products in the last float32 bit (another
    /// product shape), so by at most one float16 step.
    /// </summary>
    private sealed class KeySimilarities(LayerSearchKeys owner, int index, Tensor queries) : SimilarityMatrix(queries.shape[0], owner.Count)
    {
        private Tensor? _keys;
        private long _keyOffset = -1;
        private Tensor? _buffer;

        public override long ResidentBytes =>
            (queries.numel() * sizeof(float)) + ((_keys?.numel() ?? 0) * sizeof(float)) + ((_buffer?.numel() ?? 0) * sizeof(ushort));

        /// <summary>Enough queries per tile that the training keys are read a few times per scored set, not once per 512 queries.</summary>
        internal override int PreferredRowBlock => 4096;

        public override ScalarType ElementType => ScalarType.Float16;

        public override Tensor ToTensor()
        {
            using var scope = NewDisposeScope();
            var result = empty([Rows, Columns], ScalarType.Float16);
            for (long offset = 0; offset < Columns; offset += SimilarityFile.PanelWidth)
            {
                var count = (int)Math.Min(SimilarityFile.PanelWidth, Columns - offset);
                using var keys = owner.ReadLayer(owner._layers[index], offset, count);
                result.narrow(1, offset, count).copy_(queries.mm(keys.t()));
            }

            return result.MoveToOuterDisposeScope();
        }

        internal override bool Direct(int len) => true;

        internal override (nint Address, long Stride) Tile(long start, int len, long offset, int count)
        {
            ObjectDisposedException.ThrowIf(owner._disposed, owner);
            CheckTile(start, len, offset, count);
            if (_keyOffset != offset || _keys!.shape[0] != count)
            {
                _keys?.Dispose();
                _keys = null;
                _keys = owner.ReadLayer(owner._layers[index], offset, count).DetachFromDisposeScope();
                _keyOffset = offset;
            }

            using var scope = NewDisposeScope();
            var elements = (long)len * count;
            if (_buffer is null || _buffer.numel() < elements)
            {
                _buffer?.Dispose();
                _buffer = empty([elements], ScalarType.Float16).DetachFromDisposeScope();
            }

            var tile = _buffer.narrow(0, 0, elements).view(len, count);
            tile.copy_(queries.narrow(0, start, len).mm(_keys.t()));
            return (LayerCombinationSearch.Address(tile), count);
        }

        protected override void Dispose(bool disposing)
        {
            _keys?.Dispose();
            _buffer?.Dispose();
            queries.Dispose();
            _keys = null;
            _buffer = null;
        }
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
