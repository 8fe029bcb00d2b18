// ScalableCache memory log — format version 1
// ===========================================
// An append-only log of the keys and labels added to a memory since its last snapshot (a cache file). It lives in numbered
// segment files beside the snapshot, BASE.000001, BASE.000002, …; a snapshot starts a new segment and, once the snapshot is on
// disk, the segments before it are deleted. All numbers are little-endian.
//
//   segment := header record*
//   header  := signature "SCMLOG\x1A\n" (8) | format version u32 (1) | dimension d u32 | class count C u32 | segment number u32
//              | log id (16 bytes, the same in every segment of one log) | first 8 bytes of SHA-256(bytes 0–39)     — 48 bytes
//   record  := length L u32 | body[L] | SHA-256(length ‖ body) (32)
//   body    := offset i64 | n i32 | labels i32[n] | keys f32[n·d]        so L = 12 + 4n + 4nd, n ≥ 1, L ≤ 1 GiB
//
// The offset is the memory's key count before the record's rows were added: offsets are contiguous (each record starts where
// the previous one ended, across segments), so replaying a log over a snapshot of N keys skips the records that end at or
// before N and applies the rest — a record is never applied twice, and a gap is detected.
//
// Durability. An append writes its records with one write and one fsync (group commit: the caller batches concurrent adds);
// a new segment's header is fsynced, and so is the folder after a segment is created or deleted. A failed append truncates the
// segment back to where it was, so a later append never follows a partial record.
//
// Recovery. Opening the log reads every segment and checks each record's length, checksum, shape and labels. A record of the
// last segment that is incomplete or fails its checksum is a torn tail (a crash during an append that was never acknowledged):
// it and everything after it are dropped (the segment is truncated) with a warning. The same damage in an earlier segment, or a
// sound record that breaks the offset chain, is corruption: opening fails with a MemoryLogException.

using System.Buffers;
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace ScalableCache.Core.Persistence;

/// <summary>One record of a <see cref="MemoryLog"/>: rows added to a memory that held <see cref="Offset"/> keys before them.</summary>
/// <param name="Offset">The memory's key count before these rows (the index of the first row).</param>
/// <param name="Labels">One label per row, in <c>[0, ClassCount)</c>.</param>
/// <param name="Keys">The rows' keys, row-major <c>[Labels.Length × Dimension]</c> float32.</param>
public sealed record MemoryLogEntry(long Offset, int[] Labels, float[] Keys)
{
    /// <summary>Rows in the record.</summary>
    public int Count => Labels.Length;

    /// <summary>The key count after the record: <see cref="Offset"/> + <see cref="Count"/>.</summary>
    public long End => Offset + Labels.Length;
}

/// <summary>Settings of a <see cref="MemoryLog"/>.</summary>
public sealed class MemoryLogOptions
{
    /// <summary>
    /// Whether each append is flushed to the disk (fsync) before it returns (default). Turning it off keeps the order and the
    /// checksums but an append survives only a process crash, not a power loss.
    /// </summary>
    public bool FlushToDisk { get; set; } = true;
}

/// <summary>What <see cref="MemoryLog.Open"/> found.</summary>
/// <param name="Segments">Segment files read.</param>
/// <param name="Records">Sound records read (and handed to the replay callback).</param>
/// <param name="Keys">Rows in those records.</param>
/// <param name="DroppedBytes">Bytes of a torn tail dropped from the last segment (0 when the log was intact).</param>
/// <param name="DropReason">Why the tail was dropped, or <see langword="null"/>.</param>
public sealed record MemoryLogRecovery(int Segments, long Records, long Keys, long DroppedBytes, string? DropReason);

/// <summary>A memory log is damaged other than by a torn tail, or does not fit the memory it is opened for.</summary>
public sealed class MemoryLogException : IOException
{
    /// <summary>Creates the exception; the message is "<c>Memory log 'PATH': DETAIL</c>".</summary>
    public MemoryLogException(string path, string detail, Exception? innerException = null)
        : base($"Memory log '{path}': {detail}", innerException)
    {
        FilePath = path;
        Detail = detail;
    }

    /// <summary>The segment file (or the log's base path).</summary>
    public string FilePath { get; }

    /// <summary>The problem in words, without the path.</summary>
    public string Detail { get; }
}

/// <summary>
/// An append-only, checksummed log of keys and labels added to a memory (format at the top of this file): the durable half of
/// <see cref="DurableCacheClassifier"/>, usable on its own.
/// </summary>
/// <remarks>
/// <para><b>Thread-safety.</b> Every member may be called from any thread; appends, rotations and deletions are serialised.</para>
/// <para><b>Ownership.</b> The log keeps its current segment open until <see cref="Dispose"/>. One process at a time may open a log.</para>
/// </remarks>
public sealed partial class MemoryLog : IDisposable
{
    /// <summary>The format version this build writes and reads.</summary>
    public const int FormatVersion = 1;

    /// <summary>Largest record body accepted, in bytes (1 GiB).</summary>
    public const int MaxRecordBytes = 1 << 30;

    /// <summary>Bytes of a segment header (a segment without records is this long).</summary>
    public const int HeaderBytes = 48;

    internal const int DigestBytes = 32;
    private const int SegmentDigits = 6;

    private readonly Lock _gate = new();
    private readonly MemoryLogOptions _options;
    private readonly string _folder;
    private readonly string _name;
    private readonly SortedDictionary<int, long> _segments = []; // segment number → bytes
    private FileStream _current;
    private int _currentNumber;
    private long? _next;
    private bool _faulted;
    private bool _disposed;

    private MemoryLog(string path, int dimension, int classCount, MemoryLogOptions options)
    {
        Path = path;
        Dimension = dimension;
        ClassCount = classCount;
        _options = options;
        _folder = System.IO.Path.GetDirectoryName(path) ?? throw new ArgumentException($"'{path}' has no folder.", nameof(path));
        _name = System.IO.Path.GetFileName(path);
        _current = null!;
    }

    /// <summary>The log's base path; segments are <c>PATH.000001</c>, <c>PATH.000002</c>, ….</summary>
    public string Path { get; }

    /// <summary>Key dimension d of every record.</summary>
    public int Dimension { get; }

    /// <summary>Number of classes C; labels lie in <c>[0, C)</c>.</summary>
    public int ClassCount { get; }

    /// <summary>
    /// The log's identity, written in every segment header: a snapshot records it, so a log is never replayed over another
    /// snapshot. Chosen at random when the log is created (unless given to <see cref="Open"/>).
    /// </summary>
    public Guid Id { get; private set; }

    /// <summary>What opening the log found.</summary>
    public MemoryLogRecovery Recovery { get; private set; } = new(0, 0, 0, 0, null);

    /// <summary>The offset the next record must have (the end of the last one), or <see langword="null"/> while the log holds none.</summary>
    public long? NextOffset
    {
        get
        {
            lock (_gate)
            {
                return _next;
            }
        }
    }

    /// <summary>The number of the segment appends go to.</summary>
    public int CurrentSegment
    {
        get
        {
            lock (_gate)
            {
                return _currentNumber;
            }
        }
    }

    /// <summary>Bytes in all segments on disk.</summary>
    public long Bytes
    {
        get
        {
            lock (_gate)
            {
                return _segments.Values.Sum();
            }
        }
    }

    /// <summary>The segment numbers on disk, in order.</summary>
    public IReadOnlyList<int> Segments
    {
        get
        {
            lock (_gate)
            {
                return [.. _segments.Keys];
            }
        }
    }

    /// <summary>The path of segment <paramref name="number"/> of the log at <paramref name="path"/>.</summary>
    public static string SegmentPath(string path, int number) =>
        $"{path}.{number.ToString($"D{SegmentDigits}", System.Globalization.CultureInfo.InvariantCulture)}";

    /// <summary>The segment files of the log at <paramref name="path"/> that exist, by number.</summary>
    public static IReadOnlyList<(int Number, string File)> FindSegments(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        var full = System.IO.Path.GetFullPath(path);
        var folder = System.IO.Path.GetDirectoryName(full)!;
        var name = System.IO.Path.GetFileName(full);
        if (!Directory.Exists(folder))
        {
            return [];
        }

        var result = new List<(int, string)>();
        foreach (var file in Directory.EnumerateFiles(folder, name + ".*"))
        {
            var suffix = System.IO.Path.GetFileName(file)[(name.Length + 1)..];
            if (suffix.Length >= SegmentDigits && suffix.All(char.IsAsciiDigit) &&
                int.TryParse(suffix, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var number) && number > 0)
            {
                result.Add((number, file));
            }
        }

        result.Sort((a, b) => a.Item1.CompareTo(b.Item1));
        return result;
    }

    /// <summary>
    /// Opens (or creates) the log at <paramref name="path"/>: reads every segment in order, hands each sound record to
    /// <paramref name="replay"/>, drops a torn tail of the last segment (with a warning to <paramref name="logger"/>), and opens
    /// the last segment for appending. With <paramref name="id"/>, existing segments must carry it (a new log gets it); without,
    /// a new log gets a random one.
    /// </summary>
    /// <exception cref="MemoryLogException">A segment is of another dimension or class count, of a newer version, damaged before
    /// its last record, or its offsets are not contiguous.</exception>
    public static MemoryLog Open(
        string path, int dimension, int classCount, Action<MemoryLogEntry>? replay = null, MemoryLogOptions? options = null, ILogger? logger = null,
        Guid? id = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentOutOfRangeException.ThrowIfLessThan(dimension, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(classCount, 1);
        logger ??= NullLogger.Instance;
        var log = new MemoryLog(System.IO.Path.GetFullPath(path), dimension, classCount, options ?? new MemoryLogOptions()) { Id = id ?? Guid.Empty };
        try
        {
            log.Recover(replay, logger);
            return log;
        }
        catch
        {
            log.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Appends <paramref name="entries"/> with one write and (with <see cref="MemoryLogOptions.FlushToDisk"/>) one fsync: when this
    /// returns they are durable. Their offsets must continue the log (<see cref="NextOffset"/>) and each other.
    /// </summary>
    /// <exception cref="ArgumentException">An entry is malformed (shape, labels, non-finite keys) or breaks the offset chain; nothing was written.</exception>
    /// <exception cref="IOException">The write failed; the segment was truncated back and nothing was appended (if even that failed,
    /// the log refuses further appends).</exception>
    public void Append(IReadOnlyList<MemoryLogEntry> entries)
    {
        ArgumentNullException.ThrowIfNull(entries);
        if (entries.Count == 0)
        {
            return;
        }

        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_faulted)
            {
                throw new InvalidOperationException($"Memory log '{Path}' failed an earlier append and could not undo it; reopen it to recover.");
            }

            long total = 0;
            var next = _next;
            foreach (var entry in entries)
            {
                Check(entry, next);
                next = entry.End;
                total += 4L + BodyBytes(entry.Count) + DigestBytes;
            }

            var origin = _current.Length;
            var buffer = ArrayPool<byte>.Shared.Rent((int)Math.Min(total, int.MaxValue));
            try
            {
                _current.Position = origin;
                var filled = 0L;
                foreach (var entry in entries)
                {
                    if (filled + 4 + BodyBytes(entry.Count) + DigestBytes > buffer.Length)
                    {
                        Undoable(origin, () => _current.Write(buffer, 0, (int)filled));
                        filled = 0;
                    }

                    filled += Encode(entry, buffer.AsSpan((int)filled));
                }

                Undoable(origin, () =>
                {
                    _current.Write(buffer, 0, (int)filled);
                    Flush();
                });
                _segments[_currentNumber] = _current.Length;
                _next = next;
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }
    }

    /// <summary>
    /// Starts a new segment (its header fsynced) and returns its number: appends go there from now on. Segments before it may be
    /// deleted (<see cref="DeleteSegmentsBefore"/>) once a snapshot holds every record in them.
    /// </summary>
    public int Rotate()
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            Flush();
            var number = _currentNumber + 1;
            var fresh = CreateSegment(number);
            _current.Dispose();
            _current = fresh;
            _currentNumber = number;
            _segments[number] = HeaderBytes;
            return number;
        }
    }

    /// <summary>Deletes the segments numbered below <paramref name="segment"/> (never the current one) and fsyncs the folder.</summary>
    public void DeleteSegmentsBefore(int segment)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var old = _segments.Keys.Where(n => n < segment && n != _currentNumber).ToList();
            foreach (var number in old)
            {
                File.Delete(SegmentPath(Path, number));
                _segments.Remove(number);
            }

            if (old.Count > 0)
            {
                FlushFolder(_folder);
            }
        }
    }

    /// <summary>Closes the current segment (flushed).</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            if (_current is not null)
            {
                try
                {
                    if (!_faulted)
                    {
                        Flush();
                    }
                }
                finally
                {
                    _current.Dispose();
                }
            }
        }
    }

    /// <summary>Body bytes of a record of <paramref name="rows"/> rows.</summary>
    internal long BodyBytes(int rows) => 12L + (4L * rows) + (4L * rows * Dimension);

    /// <summary>Writes one record (length, body, checksum) into <paramref name="target"/>; returns its size.</summary>
    internal static int Encode(MemoryLogEntry entry, Span<byte> target)
    {
        var length = (int)(12L + (4L * entry.Count) + (4L * entry.Keys.Length));
        BinaryPrimitives.WriteInt32LittleEndian(target, length);
        var body = target.Slice(4, length);
        BinaryPrimitives.WriteInt64LittleEndian(body, entry.Offset);
        BinaryPrimitives.WriteInt32LittleEndian(body[8..], entry.Count);
        var labels = body.Slice(12, 4 * entry.Count);
        var keys = body[(12 + (4 * entry.Count))..];
        if (BitConverter.IsLittleEndian)
        {
            MemoryMarshal.AsBytes(entry.Labels.AsSpan()).CopyTo(labels);
            MemoryMarshal.AsBytes(entry.Keys.AsSpan()).CopyTo(keys);
        }
        else
        {
            for (var i = 0; i < entry.Count; i++)
            {
                BinaryPrimitives.WriteInt32LittleEndian(labels[(4 * i)..], entry.Labels[i]);
            }

            for (var i = 0; i < entry.Keys.Length; i++)
            {
                BinaryPrimitives.WriteSingleLittleEndian(keys[(4 * i)..], entry.Keys[i]);
            }
        }

        SHA256.HashData(target[..(4 + length)], target.Slice(4 + length, DigestBytes));
        return 4 + length + DigestBytes;
    }

    private void Check(MemoryLogEntry entry, long? next)
    {
        ArgumentNullException.ThrowIfNull(entry);
        if (entry.Count == 0)
        {
            throw new ArgumentException("A log entry holds at least one row.", nameof(entry));
        }

        if ((long)entry.Count * Dimension != entry.Keys.Length)
        {
            throw new ArgumentException($"A log entry of {entry.Count} rows has {entry.Keys.Length} key values; expected {(long)entry.Count * Dimension} ({entry.Count} × {Dimension}).", nameof(entry));
        }

        if (BodyBytes(entry.Count) > MaxRecordBytes)
        {
            throw new ArgumentException($"A log entry of {entry.Count} rows of dimension {Dimension} exceeds the record limit of {MaxRecordBytes} bytes.", nameof(entry));
        }

        if (entry.Offset < 0 || (next is { } expected && entry.Offset != expected))
        {
            throw new ArgumentException($"A log entry at offset {entry.Offset} does not continue the log, which ends at {next?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "any offset"}.", nameof(entry));
        }

        for (var i = 0; i < entry.Labels.Length; i++)
        {
            if ((uint)entry.Labels[i] >= (uint)ClassCount)
            {
                throw new ArgumentException($"Row {i} of a log entry has label {entry.Labels[i]}, outside [0, {ClassCount}).", nameof(entry));
            }
        }

        foreach (var value in entry.Keys)
        {
            if (!float.IsFinite(value))
            {
                throw new ArgumentException("A log entry holds a non-finite key value (NaN or ±∞).", nameof(entry));
            }
        }
    }

    /// <summary>Runs a write; when it fails, truncates the segment back to <paramref name="origin"/> (faulting the log if even that fails).</summary>
    private void Undoable(long origin, Action write)
    {
        try
        {
            write();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            try
            {
                _current.SetLength(origin);
                Flush();
                _current.Position = origin;
            }
            catch (Exception undo) when (undo is IOException or UnauthorizedAccessException)
            {
                _faulted = true;
                throw new IOException($"Memory log '{Path}': an append failed and could not be undone; the log refuses further appends.", new AggregateException(e, undo));
            }

            throw;
        }
    }

    private void Flush()
    {
        _current.Flush(flushToDisk: _options.FlushToDisk);
    }

    private void Recover(Action<MemoryLogEntry>? replay, ILogger logger)
    {
        Directory.CreateDirectory(_folder);
        var found = FindSegments(Path);
        long records = 0, keys = 0, dropped = 0;
        string? reason = null;
        for (var i = 0; i < found.Count; i++)
        {
            var (number, file) = found[i];
            var last = i == found.Count - 1;
            var scan = Scan(file, number, last, replay, ref records, ref keys);
            if (scan.Torn is { } torn)
            {
                dropped = scan.Length - scan.GoodLength;
                reason = torn;
                logger.LogWarning(
                    "Memory log {File}: dropped a torn tail of {Bytes} bytes at byte {Offset} ({Reason}); an append interrupted by a crash was never acknowledged",
                    file, dropped, scan.GoodLength, torn);
                using var truncate = new FileStream(file, FileMode.Open, FileAccess.Write, FileShare.None);
                if (scan.GoodLength < HeaderBytes)
                {
                    if (Id == Guid.Empty)
                    {
                        Id = Guid.NewGuid();
                    }

                    truncate.SetLength(0);
                    WriteHeader(truncate, number);
                }
                else
                {
                    truncate.SetLength(scan.GoodLength);
                }

                truncate.Flush(flushToDisk: true);
            }

            _segments[number] = Math.Max(scan.GoodLength, HeaderBytes);
        }

        Recovery = new MemoryLogRecovery(found.Count, records, keys, dropped, reason);
        if (found.Count == 0)
        {
            if (Id == Guid.Empty)
            {
                Id = Guid.NewGuid();
            }

            _current = CreateSegment(1);
            _currentNumber = 1;
            _segments[1] = HeaderBytes;
        }
        else
        {
            _currentNumber = found[^1].Number;
            _current = new FileStream(found[^1].File, FileMode.Open, FileAccess.ReadWrite, FileShare.Read, bufferSize: 0);
            _current.Position = _current.Length;
        }
    }

    private ScanResult Scan(string file, int number, bool last, Action<MemoryLogEntry>? replay, ref long records, ref long keys)
    {
        using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        var length = stream.Length;
        ScanResult Torn(long good, string why) =>
            last ? new ScanResult(length, good, why) : throw new MemoryLogException(file, $"{why} at byte {good}, in a segment that is not the last one: the log is damaged.");

        Span<byte> header = stackalloc byte[HeaderBytes];
        if (stream.ReadAtLeast(header, HeaderBytes, throwOnEndOfStream: false) < HeaderBytes)
        {
            return Torn(0, "the segment header is incomplete");
        }

        CheckHeader(file, number, header, out var headerSound);
        if (!headerSound)
        {
            return Torn(0, "the segment header fails its checksum");
        }

        var position = (long)HeaderBytes;
        var buffer = Array.Empty<byte>();
        Span<byte> prefix = stackalloc byte[4];
        Span<byte> digest = stackalloc byte[DigestBytes];
        while (position < length)
        {
            if (length - position < 4)
            {
                return Torn(position, "an incomplete record length");
            }

            stream.ReadExactly(prefix);
            var bodyLength = BinaryPrimitives.ReadUInt32LittleEndian(prefix);
            var rowBytes = 4L + (4L * Dimension);
            if (bodyLength < 12 + rowBytes || bodyLength > MaxRecordBytes || (bodyLength - 12) % rowBytes != 0)
            {
                return Torn(position, $"a record length of {bodyLength} bytes that no record of dimension {Dimension} has");
            }

            if (position + 4 + bodyLength + DigestBytes > length)
            {
                return Torn(position, $"an incomplete record ({bodyLength} bytes declared, {length - position - 4} left)");
            }

            var size = 4 + (int)bodyLength + DigestBytes;
            if (buffer.Length < size)
            {
                buffer = GC.AllocateUninitializedArray<byte>(size);
            }

            prefix.CopyTo(buffer);
            stream.ReadExactly(buffer, 4, size - 4);
            var content = buffer.AsSpan(0, 4 + (int)bodyLength);
            SHA256.HashData(content, digest);
            if (!digest.SequenceEqual(buffer.AsSpan(4 + (int)bodyLength, DigestBytes)))
            {
                return Torn(position, "a record that fails its checksum");
            }

            var entry = Decode(file, position, content[4..]);
            if (_next is { } expected && entry.Offset != expected)
            {
                throw new MemoryLogException(file,
                    $"the record at byte {position} starts at key {entry.Offset}, but the log before it ends at key {expected}: records are missing or repeated.");
            }

            _next = entry.End;
            records++;
            keys += entry.Count;
            replay?.Invoke(entry);
            position += size;
        }

        return new ScanResult(length, length, null);
    }

    private MemoryLogEntry Decode(string file, long position, ReadOnlySpan<byte> body)
    {
        var offset = BinaryPrimitives.ReadInt64LittleEndian(body);
        var n = BinaryPrimitives.ReadInt32LittleEndian(body[8..]);
        if (n < 1 || BodyBytes(n) != body.Length || offset < 0)
        {
            throw new MemoryLogException(file, $"the record at byte {position} declares {n} rows at offset {offset}, which its length of {body.Length} bytes contradicts.");
        }

        var labels = new int[n];
        var keys = new float[(long)n * Dimension];
        var labelBytes = body.Slice(12, 4 * n);
        var keyBytes = body[(12 + (4 * n))..];
        if (BitConverter.IsLittleEndian)
        {
            labelBytes.CopyTo(MemoryMarshal.AsBytes(labels.AsSpan()));
            keyBytes.CopyTo(MemoryMarshal.AsBytes(keys.AsSpan()));
        }
        else
        {
            for (var i = 0; i < n; i++)
            {
                labels[i] = BinaryPrimitives.ReadInt32LittleEndian(labelBytes[(4 * i)..]);
            }

            for (var i = 0; i < keys.Length; i++)
            {
                keys[i] = BinaryPrimitives.ReadSingleLittleEndian(keyBytes[(4 * i)..]);
            }
        }

        for (var i = 0; i < n; i++)
        {
            if ((uint)labels[i] >= (uint)ClassCount)
            {
                throw new MemoryLogException(file, $"row {i} of the record at byte {position} has label {labels[i]}, outside [0, {ClassCount}).");
            }
        }

        return new MemoryLogEntry(offset, labels, keys);
    }

    private void CheckHeader(string file, int number, ReadOnlySpan<byte> header, out bool sound)
    {
        Span<byte> digest = stackalloc byte[DigestBytes];
        SHA256.HashData(header[..40], digest);
        sound = digest[..8].SequenceEqual(header[40..48]);
        if (!sound)
        {
            return;
        }

        if (!header[..8].SequenceEqual(Signature))
        {
            throw new MemoryLogException(file, "not a memory log segment (bad signature).");
        }

        var version = BinaryPrimitives.ReadInt32LittleEndian(header[8..]);
        var dimension = BinaryPrimitives.ReadInt32LittleEndian(header[12..]);
        var classes = BinaryPrimitives.ReadInt32LittleEndian(header[16..]);
        var stored = BinaryPrimitives.ReadInt32LittleEndian(header[20..]);
        var id = new Guid(header.Slice(24, 16));
        if (version != FormatVersion)
        {
            throw new MemoryLogException(file, $"format version {version}; this build reads version {FormatVersion}.");
        }

        if (dimension != Dimension || classes != ClassCount)
        {
            throw new MemoryLogException(file,
                $"the log holds keys of dimension {dimension} for {classes} classes, but the memory has dimension {Dimension} and {ClassCount} classes.");
        }

        if (stored != number)
        {
            throw new MemoryLogException(file, $"the segment header says it is segment {stored}, but its file name says {number}.");
        }

        if (Id != Guid.Empty && id != Id)
        {
            throw new MemoryLogException(file, $"the segment belongs to log {id:N}, not {Id:N} (the log of another snapshot, or segments of two logs mixed).");
        }

        Id = id;
    }

    private FileStream CreateSegment(int number)
    {
        var file = SegmentPath(Path, number);
        var stream = new FileStream(file, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.Read, bufferSize: 0);
        try
        {
            WriteHeader(stream, number);
            stream.Flush(flushToDisk: _options.FlushToDisk);
            if (_options.FlushToDisk)
            {
                FlushFolder(_folder);
            }

            return stream;
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    private void WriteHeader(Stream stream, int number)
    {
        Span<byte> header = stackalloc byte[HeaderBytes];
        Signature.CopyTo(header);
        BinaryPrimitives.WriteInt32LittleEndian(header[8..], FormatVersion);
        BinaryPrimitives.WriteInt32LittleEndian(header[12..], Dimension);
        BinaryPrimitives.WriteInt32LittleEndian(header[16..], ClassCount);
        BinaryPrimitives.WriteInt32LittleEndian(header[20..], number);
        if (!Id.TryWriteBytes(header.Slice(24, 16)))
        {
            throw new InvalidOperationException("A log id takes 16 bytes.");
        }

        Span<byte> digest = stackalloc byte[DigestBytes];
        SHA256.HashData(header[..40], digest);
        digest[..8].CopyTo(header[40..]);
        stream.Write(header);
    }

    private static ReadOnlySpan<byte> Signature => "SCMLOG\u001A\n"u8;

    /// <summary>fsyncs a folder, so that files created, renamed or deleted in it survive a power loss (Linux and macOS; elsewhere a no-op).</summary>
    public static void FlushFolder(string folder)
    {
        if (!(OperatingSystem.IsLinux() || OperatingSystem.IsMacOS()))
        {
            return;
        }

        var fd = OpenFolder(folder, 0 /* O_RDONLY */, 0);
        if (fd < 0)
        {
            throw new IOException($"Could not open folder '{folder}' to flush it (errno {Marshal.GetLastPInvokeError()}).");
        }

        try
        {
            if (FlushDescriptor(fd) != 0)
            {
                throw new IOException($"Could not flush folder '{folder}' (errno {Marshal.GetLastPInvokeError()}).");
            }
        }
        finally
        {
            _ = CloseDescriptor(fd);
        }
    }

    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int OpenFolder(string path, int flags, int mode);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int FlushDescriptor(int fd);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int CloseDescriptor(int fd);

    private readonly record struct ScanResult(long Length, long GoodLength, string? Torn);
}
