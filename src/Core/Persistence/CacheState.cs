using System.Globalization;
using System.Runtime.InteropServices;

namespace ScalableCache.Core.Persistence;

/// <summary>
/// The saved form of one memory, as its provider describes it: small named properties (invariant-culture text), named
/// binary <see cref="Blobs"/> (any size; streamed, never held as one array) and the states of memories it wraps
/// (<see cref="Children"/>). <see cref="IPersistentCacheMemory.ExportState"/> makes one,
/// <see cref="IPersistentCacheMemoryFactory.Restore"/> reads one, <see cref="CacheFile"/> stores one.
/// </summary>
/// <remarks>
/// Blob contents are little-endian. A state read from a file streams its blobs from the file: reading them in the order
/// they were exported (this state's blobs in list order, then each child's, depth first) keeps memory flat; any other order
/// works but holds the skipped blobs in memory. Each blob can be read once.
/// </remarks>
public sealed class CacheState
{
    /// <summary>Creates an empty state of <paramref name="provider"/> for <paramref name="count"/> keys of <paramref name="dimension"/>.</summary>
    public CacheState(string provider, int dimension, long count)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(provider);
        ArgumentOutOfRangeException.ThrowIfLessThan(dimension, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        Provider = provider;
        Dimension = dimension;
        Count = count;
    }

    /// <summary>The provider that exported the state and restores it.</summary>
    public string Provider { get; }

    /// <summary>Dimension of the keys the memory accepts.</summary>
    public int Dimension { get; }

    /// <summary>Number of keys.</summary>
    public long Count { get; }

    /// <summary>Provider-specific settings and facts, by name (ordinal); values are invariant-culture text.</summary>
    public IDictionary<string, string> Properties { get; } = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>Provider-specific binary parts, in the order they are written.</summary>
    public IList<CacheBlob> Blobs { get; } = [];

    /// <summary>States of the memories this one wraps (a random projection's inner store), in order.</summary>
    public IList<CacheState> Children { get; } = [];

    /// <summary>Fails unless the state was exported by <paramref name="provider"/>.</summary>
    /// <exception cref="ArgumentException">The state belongs to another provider.</exception>
    public void EnsureProvider(string provider)
    {
        if (!string.Equals(Provider, provider, StringComparison.OrdinalIgnoreCase))
        {
            throw new ArgumentException(
                $"The state was exported by the '{Provider}' cache provider; the '{provider}' provider cannot restore it.", nameof(provider));
        }
    }

    /// <summary>The blob named <paramref name="name"/>.</summary>
    /// <exception cref="ArgumentException">There is none.</exception>
    public CacheBlob Blob(string name) =>
        Blobs.FirstOrDefault(b => b.Name == name)
        ?? throw new ArgumentException($"The '{Provider}' state has no '{name}' blob (it has: {Describe(Blobs.Select(b => b.Name))}).", nameof(name));

    /// <summary>The property named <paramref name="name"/>.</summary>
    /// <exception cref="ArgumentException">There is none.</exception>
    public string Property(string name) =>
        Properties.TryGetValue(name, out var value)
            ? value
            : throw new ArgumentException($"The '{Provider}' state has no '{name}' property (it has: {Describe(Properties.Keys)}).", nameof(name));

    /// <summary>An integer property.</summary>
    /// <exception cref="ArgumentException">It is missing or not an integer.</exception>
    public long Int64Property(string name) =>
        long.TryParse(Property(name), NumberStyles.Integer, CultureInfo.InvariantCulture, out var value)
            ? value
            : throw new ArgumentException($"The '{Provider}' state's '{name}' property '{Property(name)}' is not an integer.", nameof(name));

    /// <summary>A floating-point property (round-trip text, <c>"R"</c>).</summary>
    /// <exception cref="ArgumentException">It is missing or not a number.</exception>
    public double DoubleProperty(string name) =>
        double.TryParse(Property(name), NumberStyles.Float, CultureInfo.InvariantCulture, out var value)
            ? value
            : throw new ArgumentException($"The '{Provider}' state's '{name}' property '{Property(name)}' is not a number.", nameof(name));

    /// <summary>Sets a property from a formattable value, in the invariant culture (doubles round-trip).</summary>
    public void SetProperty(string name, IFormattable value)
    {
        ArgumentNullException.ThrowIfNull(value);
        Properties[name] = value is double or float ? value.ToString("R", CultureInfo.InvariantCulture) : value.ToString(null, CultureInfo.InvariantCulture);
    }

    private static string Describe(IEnumerable<string> names)
    {
        var list = names.ToList();
        return list.Count == 0 ? "none" : string.Join(", ", list);
    }
}

/// <summary>
/// A named binary part of a <see cref="CacheState"/> of known length. An exported blob produces its bytes when read
/// (piece by piece, so a 10 GB key store is never copied into one array); a blob read from a file streams from the file.
/// </summary>
public sealed class CacheBlob
{
    private readonly Func<IEnumerable<ReadOnlyMemory<byte>>>? _produce;
    private readonly Func<Stream>? _open;

    private CacheBlob(string name, long length, Func<IEnumerable<ReadOnlyMemory<byte>>>? produce, Func<Stream>? open)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentOutOfRangeException.ThrowIfNegative(length);
        Name = name;
        Length = length;
        _produce = produce;
        _open = open;
    }

    /// <summary>Name, unique within its state.</summary>
    public string Name { get; }

    /// <summary>Length in bytes.</summary>
    public long Length { get; }

    /// <summary>A blob holding <paramref name="bytes"/> (not copied: do not change them afterwards).</summary>
    public static CacheBlob FromBytes(string name, byte[] bytes)
    {
        ArgumentNullException.ThrowIfNull(bytes);
        return new CacheBlob(name, bytes.LongLength, () => [bytes], null);
    }

    /// <summary>A blob of 32-bit integers, little-endian.</summary>
    public static CacheBlob FromInt32s(string name, ReadOnlySpan<int> values)
    {
        ThrowIfBigEndian();
        return FromBytes(name, MemoryMarshal.AsBytes(values).ToArray());
    }

    /// <summary>
    /// A blob of <paramref name="length"/> bytes that <paramref name="produce"/> yields in pieces of any size when the blob
    /// is read (each read calls it again). Producing more or fewer bytes than <paramref name="length"/> fails the read.
    /// </summary>
    public static CacheBlob FromPieces(string name, long length, Func<IEnumerable<ReadOnlyMemory<byte>>> produce)
    {
        ArgumentNullException.ThrowIfNull(produce);
        return new CacheBlob(name, length, produce, null);
    }

    /// <summary>A blob whose bytes <paramref name="open"/> streams (used when reading files).</summary>
    internal static CacheBlob FromStream(string name, long length, Func<Stream> open) => new(name, length, null, open);

    /// <summary>A sequential read-only stream of exactly <see cref="Length"/> bytes.</summary>
    /// <exception cref="InvalidOperationException">A blob read from a file was already read.</exception>
    public Stream OpenRead() => _open is not null ? _open() : new PieceStream(this, Pieces());

    /// <summary>All bytes in one array.</summary>
    /// <exception cref="NotSupportedException">The blob is longer than one array can hold.</exception>
    public byte[] ReadAllBytes()
    {
        if (Length > Array.MaxLength)
        {
            throw new NotSupportedException($"Blob '{Name}' is {Length} bytes, more than one array holds ({Array.MaxLength}).");
        }

        var bytes = GC.AllocateUninitializedArray<byte>((int)Length);
        using var stream = OpenRead();
        stream.ReadExactly(bytes);
        return bytes;
    }

    /// <summary>The blob as little-endian 32-bit integers.</summary>
    /// <exception cref="ArgumentException">Its length is not a multiple of 4.</exception>
    public int[] ReadInt32s()
    {
        ThrowIfBigEndian();
        if (Length % 4 != 0)
        {
            throw new ArgumentException($"Blob '{Name}' is {Length} bytes, not a whole number of 32-bit integers.");
        }

        if (Length / 4 > Array.MaxLength)
        {
            throw new NotSupportedException($"Blob '{Name}' holds {Length / 4} integers, more than one array holds.");
        }

        var values = GC.AllocateUninitializedArray<int>((int)(Length / 4));
        using var stream = OpenRead();
        stream.ReadExactly(MemoryMarshal.AsBytes(values.AsSpan()));
        return values;
    }

    /// <summary>The bytes in pieces (exported blobs only), checked against <see cref="Length"/>.</summary>
    internal IEnumerable<ReadOnlyMemory<byte>> Pieces()
    {
        if (_produce is null)
        {
            using var stream = _open!();
            var buffer = new byte[Math.Min(Length, 1 << 20)];
            int read;
            while ((read = stream.Read(buffer)) > 0)
            {
                yield return buffer.AsMemory(0, read);
            }

            yield break;
        }

        long total = 0;
        foreach (var piece in _produce())
        {
            total += piece.Length;
            if (total > Length)
            {
                throw new InvalidOperationException($"Blob '{Name}' produced more than its declared {Length} bytes.");
            }

            if (!piece.IsEmpty)
            {
                yield return piece;
            }
        }

        if (total != Length)
        {
            throw new InvalidOperationException($"Blob '{Name}' produced {total} bytes; it declared {Length}.");
        }
    }

    internal static void ThrowIfBigEndian()
    {
        if (!BitConverter.IsLittleEndian)
        {
            throw new PlatformNotSupportedException("Cache states are little-endian; this platform is big-endian.");
        }
    }

    /// <summary>Reads a sequence of pieces as one stream.</summary>
    private sealed class PieceStream(CacheBlob blob, IEnumerable<ReadOnlyMemory<byte>> pieces) : Stream
    {
        private readonly IEnumerator<ReadOnlyMemory<byte>> _pieces = pieces.GetEnumerator();
        private ReadOnlyMemory<byte> _current;
        private long _position;

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => blob.Length;

        public override long Position
        {
            get => _position;
            set => throw new NotSupportedException();
        }

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            while (_current.IsEmpty)
            {
                if (!_pieces.MoveNext())
                {
                    return 0;
                }

                _current = _pieces.Current;
            }

            var n = Math.Min(buffer.Length, _current.Length);
            _current.Span[..n].CopyTo(buffer);
            _current = _current[n..];
            _position += n;
            return n;
        }

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                _pieces.Dispose();
            }

            base.Dispose(disposing);
        }
    }
}
