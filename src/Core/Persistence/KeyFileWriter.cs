using System.IO.MemoryMappedFiles;
using System.Security.Cryptography;
using System.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Persistence;

/// <summary>
/// Writes a key file (format: top of <c>KeyFile.cs</c>) as keys arrive: <see cref="Append"/> converts rows to the file's scalar
/// type into one chunk buffer and writes each full chunk to disk (flushed), so memory stays at one chunk however many keys;
/// <see cref="Complete"/> writes the last, shorter chunk and the trailer. A writer opened with <see cref="Open"/> on an
/// unfinished file of the same layout and identity continues after its last complete chunk: <see cref="Count"/> says how
/// many keys are already there, and the caller appends from that row on. Not thread-safe.
/// </summary>
public sealed class KeyFileWriter : IDisposable
{
    private readonly FileStream _file;
    private readonly IncrementalHash _chain = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    private readonly byte[] _keys;
    private readonly int[] _labels;
    private readonly int _perChunk;
    private int _buffered;
    private double _bufferedNorm;
    private int _chunks;
    private long _durable;
    private bool _disposed;

    private KeyFileWriter(string path, KeyFileLayout layout, FileStream file, KeyFileFormat.Scan? resumed)
    {
        Path = path;
        Layout = layout;
        _file = file;
        _perChunk = layout.EffectiveRowsPerChunk;
        if (resumed is not null)
        {
            foreach (var digest in resumed.Digests)
            {
                _chain.AppendData(digest);
            }

            _chunks = resumed.Chunks.Count;
            _durable = resumed.Rows;
            IsComplete = resumed.Complete;
            ResumedCount = resumed.Rows;
        }

        _keys = IsComplete ? [] : GC.AllocateUninitializedArray<byte>(checked((int)(_perChunk * layout.RowBytes)));
        _labels = IsComplete ? [] : new int[_perChunk];
    }

    /// <summary>The file.</summary>
    public string Path { get; }

    /// <summary>The layout the file is written with.</summary>
    public KeyFileLayout Layout { get; }

    /// <summary>Keys appended so far, those found in a resumed file included.</summary>
    public long Count => _durable + _buffered;

    /// <summary>Keys on disk in complete chunks (what a resumed build would find).</summary>
    public long DurableCount => _durable;

    /// <summary>Keys a resumed file already held when this writer opened it (0 for a new file).</summary>
    public long ResumedCount { get; }

    /// <summary>Whether the file is finished (after <see cref="Complete"/>, or when <see cref="Open"/> found a finished file).</summary>
    public bool IsComplete { get; private set; }

    /// <summary>
    /// Opens <paramref name="path"/> for writing: a new file (an existing one is replaced) unless <paramref name="resume"/> is
    /// set and an unfinished or finished key file is there, which is then continued (see the class remarks).
    /// <paramref name="identity"/> (e.g. the build's model, checkpoint digest, layers and data) is recorded as a SHA-256, and
    /// resuming a file written under another identity or layout fails instead of mixing keys.
    /// </summary>
    /// <exception cref="ArgumentException">The layout is invalid.</exception>
    /// <exception cref="CacheFileException">The file to resume is not a key file of this layout and identity, or damaged.</exception>
    public static KeyFileWriter Open(string path, KeyFileLayout layout, string? identity = null, bool resume = false)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        ArgumentNullException.ThrowIfNull(layout);
        var problems = layout.Validate();
        if (problems.Count > 0)
        {
            throw new ArgumentException("Invalid key file layout: " + string.Join("; ", problems) + ".", nameof(layout));
        }

        CacheBlob.ThrowIfBigEndian();
        layout = layout with { RowsPerChunk = layout.EffectiveRowsPerChunk };
        var full = System.IO.Path.GetFullPath(path);
        var identityDigest = identity is null ? new byte[KeyFile.DigestBytes] : SHA256.HashData(Encoding.UTF8.GetBytes(identity));
        var header = KeyFileFormat.Header(layout, identityDigest);
        if (resume && File.Exists(full) && new FileInfo(full).Length > 0)
        {
            var scan = ScanExisting(full, header, layout);
            var file = new FileStream(full, FileMode.Open, FileAccess.ReadWrite, FileShare.None, 1 << 20);
            try
            {
                if (!scan.Complete)
                {
                    file.SetLength(scan.End); // drops a torn chunk
                }

                file.Position = scan.End;
                return new KeyFileWriter(full, layout, file, scan);
            }
            catch
            {
                file.Dispose();
                throw;
            }
        }

        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(full)!);
        var created = new FileStream(full, FileMode.Create, FileAccess.ReadWrite, FileShare.None, 1 << 20);
        try
        {
            created.Write(header);
            created.Flush(flushToDisk: true);
            return new KeyFileWriter(full, layout, created, null);
        }
        catch
        {
            created.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Appends keys <c>[n, d]</c> (float32, on any device) with labels <c>[n]</c> (int64 or int32), stored in the file's scalar type.
    /// Rejects non-finite keys, a wrong dimension and labels outside <c>[0, ClassCount)</c> (as <see cref="ICacheMemory.Add"/> does).
    /// </summary>
    public void Append(Tensor keys, Tensor labels)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (IsComplete)
        {
            throw new InvalidOperationException($"The key file '{Path}' is complete; nothing more can be appended.");
        }

        var n = CacheInputs.CheckAddShapes(keys, labels, Layout.Dimension);
        if (n == 0)
        {
            return;
        }

        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        CacheInputs.ThrowIfNonFinite(keys, nameof(keys), "; nothing was appended");
        var y = CacheInputs.CheckedLabels(labels, Layout.ClassCount).to_type(ScalarType.Int32).data<int>().ToArray();
        var stored = keys.detach().to(Layout.ScalarType, CPU).contiguous();
        var norms = stored.to_type(ScalarType.Float32).norm(1).data<float>().ToArray();
        var bytes = stored.bytes;
        var rowBytes = (int)Layout.RowBytes;
        var row = 0;
        while (row < n)
        {
            var take = (int)Math.Min(n - row, _perChunk - _buffered);
            bytes.Slice(row * rowBytes, take * rowBytes).CopyTo(_keys.AsSpan(_buffered * rowBytes));
            y.AsSpan(row, take).CopyTo(_labels.AsSpan(_buffered));
            for (var k = row; k < row + take; k++)
            {
                _bufferedNorm = Math.Max(_bufferedNorm, norms[k]);
            }

            _buffered += take;
            row += take;
            if (_buffered == _perChunk)
            {
                WriteChunk();
            }
        }
    }

    /// <summary>Writes the buffered keys as the last chunk, then the trailer, and flushes the file to disk.</summary>
    public void Complete()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (IsComplete)
        {
            return;
        }

        if (_buffered > 0)
        {
            WriteChunk();
        }

        _file.Write(KeyFileFormat.TrailerPage(_chunks, _durable, _chain.GetHashAndReset()));
        _file.Flush(flushToDisk: true);
        IsComplete = true;
    }

    /// <summary>Closes the file. Keys not yet in a complete chunk are lost; an unfinished file can be resumed.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _file.Dispose();
        _chain.Dispose();
    }

    private void WriteChunk()
    {
        var rows = _buffered;
        var labelBytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(_labels.AsSpan(0, rows));
        var keyBytes = _keys.AsSpan(0, checked((int)(rows * Layout.RowBytes)));
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(labelBytes);
        hash.AppendData(keyBytes);
        var digest = hash.GetHashAndReset();

        // Contents first, flushed, then the page: a valid page means durable contents.
        var pageAt = _file.Position;
        _file.Position = pageAt + KeyFile.PageBytes;
        WritePadded(labelBytes);
        WritePadded(keyBytes);
        var end = _file.Position;
        _file.Flush(flushToDisk: true);
        _file.Position = pageAt;
        _file.Write(KeyFileFormat.ChunkPage(_chunks, rows, _durable, _bufferedNorm, digest));
        _file.Flush(flushToDisk: true);
        _file.Position = end;

        _chain.AppendData(digest);
        _chunks++;
        _durable += rows;
        _buffered = 0;
        _bufferedNorm = 0;
    }

    private void WritePadded(ReadOnlySpan<byte> bytes)
    {
        _file.Write(bytes);
        var pad = (int)(KeyFileFormat.Pad(bytes.Length) - bytes.Length);
        if (pad > 0)
        {
            _file.Write(new byte[pad]);
        }
    }

    private static unsafe KeyFileFormat.Scan ScanExisting(string path, byte[] header, KeyFileLayout layout)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1);
        var length = stream.Length;
        using var map = MemoryMappedFile.CreateFromFile(stream, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: true);
        using var view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        byte* pointer = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
        try
        {
            pointer += view.PointerOffset;
            var existing = KeyFileFormat.ReadHeader(new ReadOnlySpan<byte>(pointer, (int)Math.Min(length, KeyFile.PageBytes)), path);
            if (!new ReadOnlySpan<byte>(pointer, KeyFile.PageBytes).SequenceEqual(header))
            {
                throw new CacheFileException(path, CacheFileProblem.Mismatch,
                    $"cannot resume: the existing key file was written with {Describe(existing)} or another build identity; this build writes " +
                    $"{Describe(layout)}. Delete it, or rerun with the arguments it was started with.");
            }

            return KeyFileFormat.ReadChunks(pointer, length, existing, path, verifyKeys: false, complete: false);
        }
        finally
        {
            view.SafeMemoryMappedViewHandle.ReleasePointer();
        }
    }

    private static string Describe(KeyFileLayout l) =>
        $"{l.Dimension}-d {l.ScalarType} keys of {l.ClassCount} classes in chunks of {l.EffectiveRowsPerChunk}";
}
