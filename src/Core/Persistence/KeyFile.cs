// ScalableCache key file — format version 1
// ==========================================
// A key file holds labelled keys as raw, page-aligned rows, so a store can memory-map them instead of reading them, and
// a build can write them chunk by chunk and resume after the last complete chunk. All numbers are little-endian.
//
//   file    := header chunk* trailer                      — the file ends exactly at the end of the trailer
//   header  := one 4096-byte page:
//                0 signature 53 43 4B 45 59 53 1A 0A ("SCKEYS", Ctrl-Z, LF)     8 format version u32 (1)
//               12 scalar u32 (0 float32, 1 float16 IEEE half, 2 bfloat16)       16 dimension d u32
//               20 class count C u32                                             24 rows per chunk R u32
//               28..4063 zero                                                    4064 SHA-256 of bytes 0..4063
//   chunk   := page labels keys, each part starting on a 4096-byte boundary (pad with zeros):
//              page (4096 bytes):  0 "SCKCHUNK"   8 chunk index u32   12 rows n u32 (1 ≤ n ≤ R)   16 first row u64
//                                 24 largest key norm f64 (float32 norms of the stored keys)
//                                 32 SHA-256 of labels ‖ keys (unpadded)     64 SHA-256 of bytes 0..63 of the page
//              labels: n × int32 in [0, C);   keys: n × d scalars, row-major (what is mapped)
//   trailer := one 4096-byte page:  0 "SCKTRAIL"  8 chunk count u32  16 rows u64
//                                 24 SHA-256 of the chunks' payload digests in order   56 SHA-256 of bytes 0..55
// Every chunk but the last holds exactly R rows. A file without its trailer is an unfinished build: KeyFile.Open refuses
// it (Truncated), KeyFileWriter.Open resumes it. The writer writes a chunk's labels and keys, flushes them to disk, then
// its page (and flushes again), so a chunk whose page is valid has durable contents; a resumed writer drops everything
// after the last valid page (a torn chunk) and checks the last chunk's payload digest.
// Trust. Opening checks the header, every chunk page, the labels (always: they index per-class sums) and, unless
// KeyFileOpenOptions.VerifyKeys is off, each chunk's payload digest, that every key is finite and the saved largest norm.
// Every problem is a CacheFileException naming the field; nothing outside the file's length is ever touched.

using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace ScalableCache.Core.Persistence;

/// <summary>Settings for <see cref="KeyFile.Open"/>.</summary>
public sealed class KeyFileOpenOptions
{
    /// <summary>
    /// Whether opening reads every key once to check the chunk digests, that keys are finite and the saved largest norms
    /// (default <see langword="true"/>). Off, opening reads only the pages and labels (seconds at 1.28 M keys, not a full pass),
    /// and a damaged key changes answers instead of failing the open.
    /// </summary>
    public bool VerifyKeys { get; set; } = true;
}

/// <summary>One chunk of a key file: <see cref="Rows"/> keys starting at row <see cref="FirstRow"/>.</summary>
/// <param name="Index">Chunk number.</param>
/// <param name="FirstRow">Row of the file the chunk starts at.</param>
/// <param name="Rows">Keys in the chunk.</param>
/// <param name="MaxKeyNorm">The largest key norm in the chunk (float32 norms of the stored keys).</param>
public readonly record struct KeyFileChunk(int Index, long FirstRow, int Rows, double MaxKeyNorm);

/// <summary>
/// A finished key file (format at the top of this file), memory-mapped read-only. Keys are served per block with
/// <see cref="CopyKeys"/>, which copies rows out of the mapping and then drops those pages from this process's resident set
/// (Linux: <c>madvise(MADV_DONTNEED)</c>; the page cache keeps them), so resident memory stays near one block however large
/// the file. Thread-safe for reading; <see cref="Dispose"/> must not race with other calls.
/// </summary>
public sealed unsafe partial class KeyFile : IDisposable
{
    /// <summary>Bytes of the header, of each chunk page and of the trailer; parts start on multiples of it.</summary>
    public const int PageBytes = 4096;

    /// <summary>Format version this build reads and writes.</summary>
    public const int FormatVersion = 1;

    /// <summary>The usual file name extension.</summary>
    public const string Extension = ".skeys";

    internal const int DigestBytes = 32;
    internal const int HeaderDigestOffset = PageBytes - DigestBytes;
    internal const int ChunkPageDigestOffset = 64;
    internal const int TrailerDigestOffset = 56;

    /// <summary>Largest chunk payload accepted, in bytes (labels plus keys).</summary>
    public const long MaxChunkBytes = 1L << 30;

    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private readonly byte* _base;
    private readonly long _length;
    private readonly long[] _keyOffsets;
    private bool _disposed;

    private KeyFile(string path, KeyFileLayout layout, MemoryMappedFile map, MemoryMappedViewAccessor view, byte* basePointer, long length,
        KeyFileChunk[] chunks, long[] keyOffsets, int[] labels, byte[] checksum)
    {
        Checksum = Convert.ToHexStringLower(checksum);
        Path = path;
        Layout = layout;
        _map = map;
        _view = view;
        _base = basePointer;
        _length = length;
        Chunks = chunks;
        _keyOffsets = keyOffsets;
        Labels = labels;
    }

    /// <summary>The file.</summary>
    public string Path { get; }

    /// <summary>
    /// The trailer's checksum over every chunk (lower-case hex SHA-256 of the chunks' payload digests, in order): two key files with
    /// the same checksum hold the same keys and labels. A cache file that references a key file records it.
    /// </summary>
    public string Checksum { get; }

    /// <summary>Dimension, class count, scalar type and rows per chunk.</summary>
    public KeyFileLayout Layout { get; }

    /// <summary>Keys in the file.</summary>
    public long Count => Labels.LongLength;

    /// <summary>The chunks, in row order.</summary>
    public IReadOnlyList<KeyFileChunk> Chunks { get; }

    /// <summary>Every key's label, in row order (read into memory on open: 4 bytes a key).</summary>
    public int[] Labels { get; }

    /// <summary>The largest key norm of the file.</summary>
    public double MaxKeyNorm => Chunks.Count == 0 ? 0 : Chunks.Max(c => c.MaxKeyNorm);

    /// <summary>
    /// Opens and checks a finished key file (see the format's <em>Trust</em> paragraph) and maps it read-only.
    /// </summary>
    /// <exception cref="CacheFileException">The file is not a key file, unfinished, damaged or inconsistent; the message says which.</exception>
    public static KeyFile Open(string path, KeyFileOpenOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        options ??= new KeyFileOpenOptions();
        var full = System.IO.Path.GetFullPath(path);
        CacheBlob.ThrowIfBigEndian();
        FileStream stream;
        try
        {
            stream = new FileStream(full, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.RandomAccess);
        }
        catch (FileNotFoundException e)
        {
            throw new FileNotFoundException($"Key file '{full}' does not exist.", full, e);
        }

        var length = stream.Length;
        if (length < 2 * PageBytes)
        {
            var signatureOk = length >= 8 && HasSignature(stream);
            stream.Dispose();
            throw new CacheFileException(full, signatureOk ? CacheFileProblem.Truncated : CacheFileProblem.NotACacheFile,
                signatureOk
                    ? $"truncated: a key file of {length} bytes cannot hold its header and trailer ({2 * PageBytes} bytes)."
                    : "not a key file (bad magic: it does not start with the 8-byte signature \"SCKEYS\\x1A\\n\").");
        }

        MemoryMappedFile map;
        try
        {
            map = MemoryMappedFile.CreateFromFile(stream, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
        }
        catch
        {
            stream.Dispose();
            throw;
        }

        MemoryMappedViewAccessor? view = null;
        var acquired = false;
        try
        {
            view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            byte* pointer = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
            acquired = true;
            pointer += view.PointerOffset;
            var span = new ReadOnlySpan<byte>(pointer, (int)Math.Min(length, PageBytes));
            var layout = KeyFileFormat.ReadHeader(span, full);
            var scan = KeyFileFormat.ReadChunks(pointer, length, layout, full, options.VerifyKeys, complete: true);
            var (chunks, keyOffsets, labels) = scan.ToResult();
            return new KeyFile(full, layout, map, view, pointer, length, chunks, keyOffsets, labels, scan.Checksum);
        }
        catch
        {
            if (acquired)
            {
                view!.SafeMemoryMappedViewHandle.ReleasePointer();
            }

            view?.Dispose();
            map.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Copies rows <c>[offset, offset + rows)</c> of chunk <paramref name="chunk"/> (scalars of <see cref="KeyFileLayout.ScalarType"/>,
    /// row-major) into <paramref name="destination"/>, then releases those pages from this process's resident memory.
    /// </summary>
    public void CopyKeys(int chunk, int offset, int rows, Span<byte> destination)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var info = Chunks[chunk];
        if (offset < 0 || rows < 0 || offset + rows > info.Rows)
        {
            throw new ArgumentOutOfRangeException(nameof(rows), $"Rows [{offset}, {offset + rows}) are outside chunk {chunk}'s {info.Rows}.");
        }

        var bytes = (long)rows * Layout.RowBytes;
        if (destination.Length < bytes)
        {
            throw new ArgumentException($"The destination holds {destination.Length} bytes; {bytes} are needed.", nameof(destination));
        }

        var start = _keyOffsets[chunk] + ((long)offset * Layout.RowBytes);
        new ReadOnlySpan<byte>(_base + start, checked((int)bytes)).CopyTo(destination);
        Release(start, bytes);
    }

    /// <summary>
    /// Rows <c>[firstRow, firstRow + rows)</c> of the file (they may span chunks) as new CPU tensors owned by the caller (they join
    /// the caller's dispose scope): float32 keys <c>[rows, d]</c>, converted from the file's scalar type, and int64 labels
    /// <c>[rows]</c>. The rows are copied out of the mapping with <see cref="CopyKeys"/>, which releases their pages, so memory
    /// holds this block and nothing else of the file. Keys are as stored: opened without <see cref="KeyFileOpenOptions.VerifyKeys"/>,
    /// a damaged key is returned as it is.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The rows are outside the file, or one block would exceed 2 GiB.</exception>
    public (Tensor Keys, Tensor Labels) ReadKeys(long firstRow, int rows)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (firstRow < 0 || rows < 0 || firstRow + rows > Count)
        {
            throw new ArgumentOutOfRangeException(nameof(rows), $"Rows [{firstRow}, {firstRow + rows}) are outside the {Count} keys of '{Path}'.");
        }

        if ((long)rows * Layout.Dimension * sizeof(float) > int.MaxValue)
        {
            throw new ArgumentOutOfRangeException(nameof(rows), $"{rows} rows of {Layout.Dimension} float32 components exceed 2 GiB; read fewer rows at a time.");
        }

        using var scope = NewDisposeScope();
        var stage = empty(rows, Layout.Dimension, dtype: Layout.ScalarType);
        var bytes = stage.bytes;
        var perChunk = Layout.EffectiveRowsPerChunk;
        var done = 0;
        while (done < rows)
        {
            var row = firstRow + done;
            var chunk = (int)(row / perChunk); // every chunk but the last holds exactly R rows
            var info = Chunks[chunk];
            var offset = (int)(row - info.FirstRow);
            var n = Math.Min(info.Rows - offset, rows - done);
            CopyKeys(chunk, offset, n, bytes[checked((int)(done * Layout.RowBytes))..]);
            done += n;
        }

        var labels = new long[rows];
        var source = Labels.AsSpan(checked((int)firstRow), rows);
        for (var i = 0; i < rows; i++)
        {
            labels[i] = source[i];
        }

        var keys = Layout.ScalarType == ScalarType.Float32 ? stage : stage.to_type(ScalarType.Float32);
        return (keys.MoveToOuterDisposeScope(), tensor(labels).MoveToOuterDisposeScope());
    }

    /// <summary>Unmaps the file.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
    }

    /// <summary>Drops mapped pages of <c>[start, start + bytes)</c> from the resident set (they stay in the page cache).</summary>
    private void Release(long start, long bytes) => Release(_base, _length, start, bytes);

    /// <summary>
    /// Drops the pages of <c>[start, start + bytes)</c> of a read-only file mapping at <paramref name="mapping"/> from this
    /// process's resident set (Linux <c>madvise(MADV_DONTNEED)</c>: the page cache keeps them, a later read maps them again).
    /// </summary>
    internal static void Release(byte* mapping, long length, long start, long bytes)
    {
        if (!OperatingSystem.IsLinux() || bytes <= 0)
        {
            return;
        }

        var page = Environment.SystemPageSize;
        var first = start / page * page;
        var end = Math.Min(length, start + bytes);
        try
        {
            _ = Madvise((nint)(mapping + first), (nuint)(end - first), MadviseDontNeed);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            // Not glibc: the kernel evicts mapped pages under pressure on its own.
        }
    }

    private static bool HasSignature(FileStream stream)
    {
        Span<byte> signature = stackalloc byte[8];
        stream.Position = 0;
        return stream.Read(signature) == 8 && signature.SequenceEqual(KeyFileFormat.Signature);
    }

    private const int MadviseDontNeed = 4;

    [LibraryImport("libc", EntryPoint = "madvise")]
    private static partial int Madvise(nint address, nuint length, int advice);
}

/// <summary>The shape of a key file: key dimension, class count, on-disk scalar type and rows per chunk.</summary>
/// <param name="Dimension">Components per key.</param>
/// <param name="ClassCount">Labels lie in <c>[0, ClassCount)</c>.</param>
/// <param name="ScalarType">Float32, Float16 or BFloat16.</param>
/// <param name="RowsPerChunk">Keys per chunk (0: about 64 MiB of keys per chunk); a build resumes at a multiple of it.</param>
public sealed record KeyFileLayout(int Dimension, int ClassCount, ScalarType ScalarType, int RowsPerChunk = 0)
{
    /// <summary>Keys per chunk when <see cref="RowsPerChunk"/> is 0: this many bytes of keys.</summary>
    public const long DefaultChunkKeyBytes = 64L << 20;

    /// <summary>Bytes per scalar.</summary>
    public int ScalarBytes => ScalarType == ScalarType.Float32 ? 4 : 2;

    /// <summary>Bytes per key row.</summary>
    public long RowBytes => (long)Dimension * ScalarBytes;

    /// <summary>Rows per chunk, with 0 resolved.</summary>
    public int EffectiveRowsPerChunk => RowsPerChunk > 0 ? RowsPerChunk : (int)Math.Clamp(DefaultChunkKeyBytes / RowBytes, 1, 1 << 24);

    /// <summary>Every problem with this layout, naming the field; empty when it is valid.</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (Dimension is < 1 or > CacheFileSerializer.MaxDimension)
        {
            errors.Add($"dimension {Dimension} is outside [1, {CacheFileSerializer.MaxDimension}]");
        }

        if (CacheFileSerializer.ClassCountProblem(ClassCount) is { } classes)
        {
            errors.Add(classes);
        }

        if (ScalarType is not (ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16))
        {
            errors.Add($"scalar type {ScalarType} is not Float32, Float16 or BFloat16");
        }

        if (RowsPerChunk < 0 || (errors.Count == 0 && (long)EffectiveRowsPerChunk * (RowBytes + 4) > KeyFile.MaxChunkBytes))
        {
            errors.Add($"rows per chunk {RowsPerChunk} is negative or makes a chunk larger than {KeyFile.MaxChunkBytes} bytes");
        }

        return errors;
    }
}
