using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Evaluation;

/// <summary>
/// One candidate layer's validation-query × training-key cosine similarities <c>[n, N]</c> as the greedy layer search reads them:
/// tile by tile (a block of queries by a block of keys), from memory (<see cref="InMemory"/>) or from a file (<see cref="SimilarityFile"/>),
/// so the search never needs every candidate's matrix in memory at once.
/// </summary>
/// <remarks>Not thread-safe: one search reads a matrix at a time. Disposing a file-backed matrix deletes its file.</remarks>
public abstract class SimilarityMatrix : IDisposable
{
    private protected SimilarityMatrix(long rows, long columns)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        ArgumentOutOfRangeException.ThrowIfNegative(columns);
        Rows = rows;
        Columns = columns;
    }

    /// <summary>Validation queries n (rows).</summary>
    public long Rows { get; }

    /// <summary>Training keys N (columns).</summary>
    public long Columns { get; }

    /// <summary>Bytes the matrix holds in memory (a file-backed one: its read buffer only).</summary>
    public abstract long ResidentBytes { get; }

    /// <summary>
    /// The type of the stored similarities: float16 (what the search reads) or float32 (the exact values, for choosing θ and λ
    /// without another product of the chosen keys).
    /// </summary>
    public abstract ScalarType ElementType { get; }

    /// <summary>
    /// A matrix held in memory: <paramref name="similarities"/> <c>[n, N]</c> (float16 as the search stores them, or float32). The
    /// matrix views the tensor (the caller keeps owning it: <see cref="Dispose()"/> does not dispose it).
    /// </summary>
    public static SimilarityMatrix InMemory(Tensor similarities)
    {
        ArgumentNullException.ThrowIfNull(similarities);
        return similarities.shape.Length == 2
            ? new Held(similarities)
            : throw new ArgumentException($"Similarities have shape [{string.Join(", ", similarities.shape)}]; expected [n, N].", nameof(similarities));
    }

    /// <summary>The whole matrix <c>[n, N]</c> as a new tensor of <see cref="ElementType"/> (for checks and small matrices: it is the size of the matrix).</summary>
    public abstract Tensor ToTensor();

    /// <inheritdoc />
    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    /// <summary>Releases what the matrix owns.</summary>
    protected virtual void Dispose(bool disposing)
    {
    }

    /// <summary>
    /// Whether <see cref="Tile"/> can give the tiles of <paramref name="len"/>-query blocks directly; otherwise the search
    /// combines the held tensor through tensor operations (<see cref="HeldTensor"/>).
    /// </summary>
    internal abstract bool Direct(int len);

    /// <summary>Queries per tile the matrix is best read in (the search reads at least this many at a time), else 0.</summary>
    internal virtual int PreferredRowBlock => 0;

    /// <summary>The held tensor of an in-memory matrix, else <see langword="null"/>.</summary>
    internal virtual Tensor? HeldTensor => null;

    /// <summary>
    /// The similarities (of <see cref="ElementType"/>) of queries <c>[start, start + len)</c> and keys <c>[offset, offset + count)</c>: the address of the
    /// first (query <paramref name="start"/>, key <paramref name="offset"/>) and the distance between queries, in elements. Valid
    /// until the next call or the matrix is disposed. Only when <see cref="Direct"/>.
    /// </summary>
    internal abstract (nint Address, long Stride) Tile(long start, int len, long offset, int count);

    /// <summary>Checks a tile's bounds.</summary>
    private protected void CheckTile(long start, int len, long offset, int count)
    {
        if (start < 0 || len < 0 || start + len > Rows || offset < 0 || count < 0 || offset + count > Columns)
        {
            throw new ArgumentOutOfRangeException(
                nameof(start), FormattableString.Invariant($"Tile rows [{start}, {start + len}) × columns [{offset}, {offset + count}) of a [{Rows}, {Columns}] matrix."));
        }
    }

    private sealed class Held(Tensor similarities) : SimilarityMatrix(similarities.shape[0], similarities.shape[1])
    {
        public override long ResidentBytes => similarities.numel() * similarities.element_size();

        internal override Tensor? HeldTensor => similarities;

        public override ScalarType ElementType => similarities.dtype == ScalarType.Float32 ? ScalarType.Float32 : ScalarType.Float16;

        public override Tensor ToTensor() => similarities.to(ElementType, CPU, copy: true);

        internal override bool Direct(int len) =>
            similarities.dtype is ScalarType.Float16 or ScalarType.Float32 && similarities.device_type == DeviceType.CPU && similarities.is_contiguous()
            && similarities.element_size() * len * Columns <= int.MaxValue;

        internal override (nint Address, long Stride) Tile(long start, int len, long offset, int count)
        {
            CheckTile(start, len, offset, count);
            using var rows = similarities.narrow(0, start, len); // a view: the memory is the held tensor's
            return (LayerCombinationSearch.Address(rows) + (nint)(offset * similarities.element_size()), Columns);
        }
    }
}

/// <summary>
/// A similarity matrix <c>[n, N]</c> (float16, or float32 for the exact values) in a file, written column panel by column panel as the training keys are extracted
/// (<see cref="Writer"/>) and read tile by tile: the file holds panels of <see cref="PanelWidth"/> keys (the last one narrower), each
/// panel <c>[n, width]</c> row-major, so the search's tile of a query block and a panel is one contiguous read. Its memory is one
/// read buffer; the pages it reads stay in the operating system's file cache, which gives them back under memory pressure.
/// Owns its file: <see cref="SimilarityMatrix.Dispose()"/> deletes it.
/// </summary>
public sealed class SimilarityFile : SimilarityMatrix
{
    /// <summary>Keys per panel: the search's key block, so each tile the search reads lies in one panel.</summary>
    public const int PanelWidth = LayerCombinationSearch.KeyBlock;

    private readonly SafeFileHandle _file;
    private readonly int _elementSize;
    private byte[] _buffer = [];
    private bool _disposed;

    private SimilarityFile(string path, long rows, long columns, ScalarType elementType) : base(rows, columns)
    {
        Path = path;
        ElementType = elementType;
        _elementSize = ElementSize(elementType);
        var expected = checked(rows * columns * _elementSize);
        _file = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read, FileOptions.RandomAccess);
        var length = RandomAccess.GetLength(_file);
        if (length != expected)
        {
            _file.Dispose();
            throw new InvalidDataException(FormattableString.Invariant($"Similarity file {path} has {length} bytes; a [{rows}, {columns}] {Name(elementType)} matrix has {expected}."));
        }
    }

    /// <summary>The file.</summary>
    public string Path { get; }

    /// <inheritdoc />
    public override ScalarType ElementType { get; }

    /// <inheritdoc />
    public override long ResidentBytes => _buffer.LongLength;

    /// <inheritdoc />
    public override unsafe Tensor ToTensor()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var scope = NewDisposeScope();
        var result = empty([Rows, Columns], ElementType);
        for (long offset = 0; offset < Columns; offset += PanelWidth)
        {
            var width = (int)Math.Min(PanelWidth, Columns - offset);
            for (long start = 0; start < Rows; start += Math.Max(1, (1 << 24) / width))
            {
                var len = (int)Math.Min(Math.Max(1, (1 << 24) / width), Rows - start);
                var (address, _) = Tile(start, len, offset, width);
                var tile = zeros([len, width], ElementType);
                var bytes = len * width * _elementSize;
                new ReadOnlySpan<byte>((void*)address, bytes).CopyTo(new Span<byte>((void*)LayerCombinationSearch.Address(tile), bytes));
                result.narrow(0, start, len).narrow(1, offset, width).copy_(tile);
            }
        }

        return result.MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    internal override bool Direct(int len) => true;

    /// <inheritdoc />
    internal override unsafe (nint Address, long Stride) Tile(long start, int len, long offset, int count)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CheckTile(start, len, offset, count);
        var panel = offset / PanelWidth;
        var width = (int)Math.Min(PanelWidth, Columns - (panel * PanelWidth));
        var within = offset - (panel * PanelWidth);
        if (within + count > width)
        {
            throw new ArgumentOutOfRangeException(nameof(count), FormattableString.Invariant($"Columns [{offset}, {offset + count}) cross a panel of {PanelWidth} keys."));
        }

        var size = _elementSize;
        var bytes = checked((int)((long)len * count * size));
        if (_buffer.Length < bytes)
        {
            _buffer = GC.AllocateUninitializedArray<byte>(bytes, pinned: true);
        }

        var panelStart = panel * PanelWidth * Rows * size;
        var target = _buffer.AsSpan(0, bytes);
        if (count == width)
        {
            Read(panelStart + (start * width * size), target); // whole panel rows: one read
        }
        else
        {
            for (var q = 0; q < len; q++)
            {
                Read(panelStart + ((((start + q) * width) + within) * size), target.Slice(q * count * size, count * size));
            }
        }

        fixed (byte* address = _buffer)
        {
            return ((nint)address, count); // pinned: the address stays valid
        }
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _file.Dispose();
        _buffer = [];
        try
        {
            File.Delete(Path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // A temporary file left behind is not worth failing a finished search for.
        }
    }

    private void Read(long position, Span<byte> target)
    {
        while (target.Length > 0)
        {
            var read = RandomAccess.Read(_file, target, position);
            if (read <= 0)
            {
                throw new EndOfStreamException(FormattableString.Invariant($"Similarity file {Path} ended at byte {position}."));
            }

            target = target[read..];
            position += read;
        }
    }

    /// <summary>Bytes per similarity of <paramref name="elementType"/>: 2 (float16) or 4 (float32).</summary>
    public static int ElementSize(ScalarType elementType) => elementType switch
    {
        ScalarType.Float16 => sizeof(ushort),
        ScalarType.Float32 => sizeof(float),
        _ => throw new ArgumentOutOfRangeException(nameof(elementType), elementType, "Similarity files hold float16 or float32."),
    };

    private static string Name(ScalarType elementType) => elementType == ScalarType.Float32 ? "float32" : "float16";

    /// <summary>
    /// Writes a similarity file from column blocks given in order (<see cref="Append"/>): the blocks fill a panel of
    /// <see cref="PanelWidth"/> columns in memory (<c>n × PanelWidth</c> values), written out when full.
    /// </summary>
    public sealed class Writer : IDisposable
    {
        private readonly FileStream _file;
        private readonly Tensor _panel;
        private readonly ScalarType _elementType;
        private long _written;
        private int _filled;
        private bool _done;

        /// <summary>Creates <paramref name="path"/> (which must not exist) for a <c>[rows, columns]</c> matrix of <paramref name="elementType"/> (float16 or float32).</summary>
        public Writer(string path, long rows, long columns, ScalarType elementType = ScalarType.Float16)
        {
            _ = ElementSize(elementType);
            _elementType = elementType;
            ArgumentException.ThrowIfNullOrEmpty(path);
            ArgumentOutOfRangeException.ThrowIfNegative(rows);
            ArgumentOutOfRangeException.ThrowIfNegative(columns);
            Path = path;
            Rows = rows;
            Columns = columns;
            _file = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);
            _panel = empty([rows, Math.Min(PanelWidth, Math.Max(1, columns))], elementType).DetachFromDisposeScope(); // outlives the caller's batches
        }

        /// <summary>The file.</summary>
        public string Path { get; }

        /// <summary>Rows n.</summary>
        public long Rows { get; }

        /// <summary>Columns N.</summary>
        public long Columns { get; }

        /// <summary>
        /// Appends the next columns: <paramref name="block"/> <c>[n, b]</c> (any floating type; converted to the file's type as
        /// <see cref="Tensor.copy_"/> converts).
        /// </summary>
        public void Append(Tensor block)
        {
            if (AppendDeferringWrite(block))
            {
                WritePanel();
            }
        }

        /// <summary>
        /// Appends the next columns as <see cref="Append"/> does, except that a panel the block fills exactly is left for the caller to
        /// write with <see cref="WritePanel"/> (else the next append writes it first), e.g. on another thread beside other files' writes: returns
        /// whether one waits. A panel filled before the end of the block is written here, as <see cref="Append"/> writes it.
        /// </summary>
        public bool AppendDeferringWrite(Tensor block)
        {
            ArgumentNullException.ThrowIfNull(block);
            ObjectDisposedException.ThrowIf(_done, this);
            if (block.shape.Length != 2 || block.shape[0] != Rows || _written + _filled + block.shape[1] > Columns)
            {
                throw new ArgumentException(
                    FormattableString.Invariant($"A block of shape [{string.Join(", ", block.shape)}] after {_written + _filled} of {Columns} columns of a {Rows}-row matrix."), nameof(block));
            }

            using var scope = NewDisposeScope();
            for (long taken = 0, b = block.shape[1]; taken < b;)
            {
                var width = PanelCapacity;
                var part = Math.Min(b - taken, width - _filled);
                _panel.narrow(1, _filled, part).copy_(block.narrow(1, taken, part));
                _filled += (int)part;
                taken += part;
                if (_filled == width)
                {
                    if (taken == b)
                    {
                        return true;
                    }

                    Flush();
                }
            }

            return false;
        }

        /// <summary>
        /// Writes the panel <see cref="AppendDeferringWrite"/> left full. Writers of different files may write their panels at the same
        /// time: a full-width panel is written as it is (file I/O only); the last, narrower one is first copied to a contiguous tensor.
        /// </summary>
        public void WritePanel()
        {
            ObjectDisposedException.ThrowIf(_done, this);
            if (_filled == 0 || _filled != PanelCapacity)
            {
                throw new InvalidOperationException(FormattableString.Invariant($"The panel holds {_filled} of {PanelCapacity} columns; only a full panel is written."));
            }

            Flush();
        }

        /// <summary>Writes the last panel and opens the file for reading; every column must have been appended.</summary>
        public SimilarityFile Complete()
        {
            ObjectDisposedException.ThrowIf(_done, this);
            if (_written + _filled != Columns)
            {
                throw new InvalidOperationException(FormattableString.Invariant($"{_written + _filled} of {Columns} columns were appended."));
            }

            if (_filled > 0)
            {
                Flush();
            }

            _file.Flush();
            _file.Dispose();
            _panel.Dispose();
            _done = true;
            return new SimilarityFile(Path, Rows, Columns, _elementType);
        }

        /// <summary>Closes the file without completing it (deleting it).</summary>
        public void Dispose()
        {
            if (_done)
            {
                return;
            }

            _done = true;
            _file.Dispose();
            _panel.Dispose();
            try
            {
                File.Delete(Path);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Left for the folder's owner to delete.
            }
        }

        /// <summary>Columns of the panel being filled (the last panel may be narrower).</summary>
        private int PanelCapacity => (int)Math.Min(PanelWidth, Columns - _written);

        private unsafe void Flush()
        {
            using var scope = NewDisposeScope();
            var data = _filled == _panel.shape[1] ? _panel : _panel.narrow(1, 0, _filled).contiguous();
            var bytes = Rows * _filled * _panel.element_size();
            var address = (byte*)LayerCombinationSearch.Address(data);
            for (long done = 0; done < bytes;)
            {
                var part = (int)Math.Min(1 << 30, bytes - done);
                _file.Write(new ReadOnlySpan<byte>(address + done, part));
                done += part;
            }

            GC.KeepAlive(data);
            _written += _filled;
            _filled = 0;
        }
    }
}
