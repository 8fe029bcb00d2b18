using System.Security.Cryptography;
using MessagePack;

namespace ScalableCache.Core.Persistence;

/// <summary>
/// Loads one cache file (format: see <see cref="CacheFileSerializer"/>): the header, then the provider restores its state
/// while this reader streams the blobs' chunks from the file, verifying each before it is decoded; then the trailer's
/// checksum is checked. Blobs opened in file order stream; a blob opened later than its turn is held in memory until read.
/// </summary>
internal sealed class CacheFileReader : IDisposable
{
    private readonly FileStream _file;
    private readonly string _path;
    private readonly CancellationToken _cancellationToken;
    private readonly IncrementalHash _chain = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    private readonly List<Slot> _slots = [];
    private int _cursor; // the blob whose bytes come next in the file
    private long _cursorOffset; // bytes of that blob already read from the file
    private int _sequence; // the next chunk's sequence number
    private byte[] _record = []; // the current record's bytes, reused
    private long _payloadBytes; // the header's payload bytes, once checked against the file's length

    private CacheFileReader(string path, CancellationToken cancellationToken)
    {
        _path = path;
        _cancellationToken = cancellationToken;
        _file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.SequentialScan);
    }

    /// <summary>Reads only the header (the payload is not read or verified).</summary>
    public static CacheFileHeader ReadHeader(string path)
    {
        using var reader = new CacheFileReader(path, CancellationToken.None);
        var (record, _) = CacheFileSerializer.ReadHeader(reader._file, path);
        return reader.ReadState(record).Header;
    }

    /// <summary>Loads the file, restoring its memory through the factories <paramref name="context"/> finds.</summary>
    public static LoadedCacheFile Load(string path, Func<int, CacheRestoreContext> context, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        using var reader = new CacheFileReader(path, cancellationToken);
        var (record, digest) = CacheFileSerializer.ReadHeader(reader._file, path);
        reader._chain.AppendData(digest);
        var (state, header) = reader.ReadState(record);
        var restore = context(header.ClassCount);
        try
        {
            restore.Find(state.Provider);
        }
        catch (UnknownProviderException e)
        {
            throw reader.UnknownProvider(state.Provider, e);
        }

        ICacheMemory? memory = null;
        try
        {
            memory = reader.Restore(restore, state);
            reader.Finish(record.PayloadBytes);
            if (!string.Equals(memory.Provider, header.Provider, StringComparison.OrdinalIgnoreCase) || memory.Dimension != header.Dimension
                || memory.Count != header.Count || memory.ClassCount != header.ClassCount)
            {
                throw reader.Inconsistent(
                    $"the header describes {header.Count} keys of dimension {header.Dimension} and {header.ClassCount} classes (provider " +
                    $"{header.Provider}), but the payload restored {memory.Count} keys of dimension {memory.Dimension} and {memory.ClassCount} " +
                    $"classes (provider {memory.Provider}).");
            }

            return new LoadedCacheFile(header, memory);
        }
        catch
        {
            memory?.Dispose();
            throw;
        }
    }

    public void Dispose()
    {
        _chain.Dispose();
        _file.Dispose();
    }

    private CacheFileHeader ToHeader(HeaderRecord r) => new()
    {
        FormatVersion = r.FormatVersion,
        MinimumReaderVersion = r.MinimumReaderVersion,
        Provider = r.Provider,
        Dimension = r.Dimension,
        Count = r.Count,
        ClassCount = r.ClassCount,
        Model = new CacheModelId(r.ModelName, r.CheckpointSha256, r.CheckpointFile),
        Layers = r.Layers ?? [],
        Flip = r.Flip,
        Normalization = r.Normalization ?? "",
        Theta = r.Theta,
        Lambda = r.Lambda,
        CreatedUtc = DateTime.SpecifyKind(r.CreatedUtc, DateTimeKind.Utc),
        Metadata = r.Metadata ?? [],
        Recipe = ReadRecipe(r),
    };

    private KeyRecipe? ReadRecipe(HeaderRecord r)
    {
        if (r.Recipe is null)
        {
            return null;
        }

        KeyRecipe recipe;
        try
        {
            recipe = r.Recipe.ToRecipe();
        }
        catch (ArgumentException e)
        {
            throw InvalidHeader($"its key recipe (key 19) is invalid: {e.Message}");
        }

        if (CacheFileSerializer.InputShapeProblem(recipe.InputShape) is { } problem)
        {
            throw InvalidHeader($"its key recipe's (key 19) {problem}.");
        }

        return recipe.Layers.SequenceEqual(r.Layers ?? [], StringComparer.Ordinal)
            ? recipe
            : throw InvalidHeader($"its key recipe's layers [{string.Join(", ", recipe.Layers)}] (key 19) differ from its layers [{string.Join(", ", r.Layers ?? [])}] (key 10).");
    }

    private ICacheMemory Restore(CacheRestoreContext context, CacheState state)
    {
        try
        {
            return context.Restore(state);
        }
        catch (UnknownProviderException e)
        {
            throw UnknownProvider(e.Provider, e);
        }
        catch (NotSupportedException e)
        {
            throw new CacheFileException(_path, CacheFileProblem.UnknownProvider, e.Message, e);
        }
        catch (Exception e) when (e is ArgumentException or InvalidDataException or FormatException or OverflowException)
        {
            throw Inconsistent($"the stored '{state.Provider}' state does not restore: {e.Message}", e);
        }
    }

    /// <summary>
    /// Checks the header's fields and builds the state tree from it, checking each state against the header's shape, the
    /// format's limits and the file's size, before anything is allocated for the payload.
    /// </summary>
    private (CacheState State, CacheFileHeader Header) ReadState(HeaderRecord record)
    {
        if (record.MinimumReaderVersion < 1 || record.MinimumReaderVersion > record.FormatVersion)
        {
            throw InvalidHeader($"its minimum reader version (key 2) {record.MinimumReaderVersion} is outside [1, {record.FormatVersion}].");
        }

        if (CacheFileSerializer.ClassCountProblem(record.ClassCount) is { } classProblem)
        {
            throw InvalidHeader($"its {classProblem} (key 6).");
        }

        if (CacheFileSerializer.ShapeProblem(record.Dimension, record.Count) is { } shapeProblem)
        {
            throw InvalidHeader($"its {shapeProblem} (keys 4, 5).");
        }

        if (record.CheckpointSha256 is { } sha && sha.AsSpan().ContainsAnyExcept(CacheFileSerializer.LowerHexDigits))
        {
            throw InvalidHeader($"its checkpoint SHA-256 (key 8) '{sha}' is not 64 lower-case hexadecimal digits.");
        }

        if (record.Metadata?.FirstOrDefault(m => m.Value is null) is { Key: { } nullValue })
        {
            throw InvalidHeader($"its metadata (key 16) has no value for '{nullValue}'.");
        }

        if (record.PayloadBytes < 0 || record.PayloadBytes / CacheFileSerializer.MaxExpansion > _file.Length)
        {
            throw InvalidHeader(
                $"it declares {record.PayloadBytes} payload bytes (key 17); a file of {_file.Length} bytes holds at most " +
                $"{CacheFileSerializer.MaxExpansion} × as many (LZ4 expands at most 255-fold).");
        }

        var header = ToHeader(record);
        var invalid = header.Validate();
        if (invalid.Count > 0)
        {
            throw InvalidHeader(string.Join(" ", invalid));
        }

        if (record.State is null)
        {
            throw Inconsistent("the header has no state.");
        }

        if (!string.Equals(record.State.Provider, record.Provider, StringComparison.Ordinal) || record.State.Dimension != record.Dimension
            || record.State.Count != record.Count)
        {
            throw Inconsistent(
                $"the header describes {record.Count} keys of dimension {record.Dimension} (provider {record.Provider}) but its state holds " +
                $"{record.State.Count} keys of dimension {record.State.Dimension} (provider {record.State.Provider}).");
        }

        _payloadBytes = record.PayloadBytes;
        var state = Build(record.State, 1);
        var sum = _slots.Sum(s => s.Length);
        if (sum != record.PayloadBytes)
        {
            throw Inconsistent($"the header declares {record.PayloadBytes} payload bytes but its blobs add up to {sum}.");
        }

        Advance();
        return (state, header);
    }

    private CacheState Build(StateRecord record, int depth)
    {
        if (depth > CacheFileSerializer.MaxStateDepth)
        {
            throw Inconsistent($"its states are nested more than {CacheFileSerializer.MaxStateDepth} deep.");
        }

        if (string.IsNullOrWhiteSpace(record.Provider))
        {
            throw Inconsistent($"a stored state has no provider (provider '{record.Provider}').");
        }

        if (CacheFileSerializer.ShapeProblem(record.Dimension, record.Count) is { } problem)
        {
            throw Inconsistent($"the stored '{record.Provider}' state's {problem}.");
        }

        var state = new CacheState(record.Provider, record.Dimension, record.Count);
        foreach (var (name, value) in record.Properties ?? [])
        {
            if (value is null)
            {
                throw Inconsistent($"the stored '{record.Provider}' state's property '{name}' has no value.");
            }

            state.Properties[name] = value;
        }

        foreach (var blob in record.Blobs ?? [])
        {
            if (blob is null)
            {
                throw Inconsistent($"the stored '{record.Provider}' state lists an empty blob entry.");
            }

            if (string.IsNullOrWhiteSpace(blob.Name) || blob.Length < 0 || blob.Length > _payloadBytes || state.Blobs.Any(b => b.Name == blob.Name))
            {
                throw Inconsistent($"the '{record.Provider}' state has an invalid or repeated blob '{blob.Name}' of {blob.Length} bytes.");
            }

            var index = _slots.Count;
            _slots.Add(new Slot(blob.Name, blob.Length));
            state.Blobs.Add(CacheBlob.FromStream(blob.Name, blob.Length, () => Open(index)));
        }

        foreach (var child in record.Children ?? [])
        {
            state.Children.Add(Build(child ?? throw Inconsistent($"the stored '{record.Provider}' state lists an empty child state."), depth + 1));
        }

        return state;
    }

    /// <summary>A stream over blob <paramref name="index"/>: from the file if it is next, else from its buffered chunks.</summary>
    private Stream Open(int index)
    {
        var slot = _slots[index];
        if (slot.Opened)
        {
            throw new InvalidOperationException($"Blob '{slot.Name}' was already read; each blob of a loaded state can be read once.");
        }

        slot.Opened = true;
        if (slot.Buffered is { } buffered)
        {
            slot.Buffered = null;
            return new BufferedBlobStream(buffered, slot.Length);
        }

        while (_cursor < index)
        {
            Drain(_cursor);
        }

        return _cursor > index ? new BufferedBlobStream([], 0) : new FileBlobStream(this, index);
    }

    /// <summary>Reads the rest of the cursor blob: kept for later if nobody opened it, discarded if its reader moved on.</summary>
    private void Drain(int index)
    {
        var slot = _slots[index];
        var keep = slot.Opened ? null : new List<byte[]>();
        while (_cursor == index)
        {
            var data = NextChunk(index);
            keep?.Add(data);
        }

        slot.Buffered = keep;
    }

    /// <summary>Reads, verifies and decodes the next chunk, which must belong to blob <paramref name="index"/>.</summary>
    private byte[] NextChunk(int index)
    {
        _cancellationToken.ThrowIfCancellationRequested();
        var slot = _slots[index];
        var (body, digest) = CacheFileSerializer.ReadRecord(_file, _path, $"chunk {_sequence} (blob '{slot.Name}' from byte {_cursorOffset})", ref _record);
        _chain.AppendData(digest);
        ChunkRecord chunk;
        try
        {
            chunk = MessagePackSerializer.Deserialize<ChunkRecord>(body, CacheFileSerializer.Compressed);
        }
        catch (MessagePackSerializationException e)
        {
            throw Inconsistent($"chunk {_sequence} cannot be decoded: {e.Message}", e);
        }

        var remaining = slot.Length - _cursorOffset;
        if (chunk.Sequence != _sequence || chunk.Blob != index || chunk.Offset != _cursorOffset || chunk.Data is null || chunk.Data.Length == 0
            || chunk.Data.Length > remaining || chunk.Data.Length > CacheFileSerializer.MaxChunkBytes)
        {
            throw Inconsistent(
                $"chunk {chunk.Sequence} holds {chunk.Data?.Length ?? 0} bytes of blob {chunk.Blob} from byte {chunk.Offset}; expected chunk " +
                $"{_sequence} of blob {index} ('{slot.Name}') from byte {_cursorOffset}, at most {remaining} bytes.");
        }

        _sequence++;
        _cursorOffset += chunk.Data.Length;
        Advance();
        return chunk.Data;
    }

    /// <summary>Moves the cursor past blobs whose bytes have all been read (and empty ones).</summary>
    private void Advance()
    {
        while (_cursor < _slots.Count && _cursorOffset == _slots[_cursor].Length)
        {
            _cursor++;
            _cursorOffset = 0;
        }
    }

    /// <summary>Reads what the provider left, then the trailer, and checks the checksum and the end of the file.</summary>
    private void Finish(long payloadBytes)
    {
        while (_cursor < _slots.Count)
        {
            _slots[_cursor].Opened = true; // nobody will read it now: verify and discard
            Drain(_cursor);
        }

        var (body, _) = CacheFileSerializer.ReadRecord(_file, _path, "the trailer", ref _record);
        TrailerRecord trailer;
        try
        {
            trailer = MessagePackSerializer.Deserialize<TrailerRecord>(body, CacheFileSerializer.Plain);
        }
        catch (MessagePackSerializationException e)
        {
            throw Inconsistent($"the record after the last chunk is not a trailer: {e.Message}", e);
        }

        if (trailer.ChunkCount != _sequence || trailer.PayloadBytes != payloadBytes)
        {
            throw Inconsistent($"the trailer counts {trailer.ChunkCount} chunks and {trailer.PayloadBytes} payload bytes; the file holds {_sequence} and {payloadBytes}.");
        }

        if (trailer.Checksum is null || !trailer.Checksum.AsSpan().SequenceEqual(_chain.GetHashAndReset()))
        {
            throw new CacheFileException(_path, CacheFileProblem.ChecksumMismatch,
                "checksum mismatch: the SHA-256 over the header and payload records does not match the trailer's; records were altered, lost or reordered.");
        }

        if (_file.Position != _file.Length)
        {
            throw Inconsistent($"{_file.Length - _file.Position} bytes follow the trailer.");
        }
    }

    private CacheFileException Inconsistent(string detail, Exception? inner = null) =>
        new(_path, CacheFileProblem.Inconsistent, "header and payload are inconsistent: " + detail, inner);

    private CacheFileException InvalidHeader(string detail) => new(_path, CacheFileProblem.Inconsistent, "invalid header: " + detail);

    private CacheFileException UnknownProvider(string provider, UnknownProviderException e) =>
        new(_path, CacheFileProblem.UnknownProvider,
            $"it was written by the '{provider}' cache provider, which is not registered here (registered: " +
            (e.Registered.Count == 0 ? "none" : string.Join(", ", e.Registered)) + ").", e);

    private sealed class Slot(string name, long length)
    {
        public string Name { get; } = name;

        public long Length { get; } = length;

        public bool Opened { get; set; }

        public List<byte[]>? Buffered { get; set; }
    }

    /// <summary>Streams one blob's chunks from the file as they are needed.</summary>
    private sealed class FileBlobStream(CacheFileReader reader, int index) : ReadOnlyBlobStream(reader._slots[index].Length)
    {
        private byte[] _chunk = [];
        private int _offset;

        protected override int ReadCore(Span<byte> buffer)
        {
            if (_offset == _chunk.Length)
            {
                if (reader._cursor != index)
                {
                    throw new InvalidOperationException(
                        $"Blob '{reader._slots[index].Name}' was left unfinished when a later blob was opened; read blobs one at a time.");
                }

                _chunk = reader.NextChunk(index);
                _offset = 0;
            }

            var n = Math.Min(buffer.Length, _chunk.Length - _offset);
            _chunk.AsSpan(_offset, n).CopyTo(buffer);
            _offset += n;
            if (_offset == _chunk.Length)
            {
                _chunk = []; // let the chunk go before the next one is read
                _offset = 0;
            }

            return n;
        }
    }

    /// <summary>Reads chunks held in memory, releasing each once read.</summary>
    private sealed class BufferedBlobStream(List<byte[]> chunks, long length) : ReadOnlyBlobStream(length)
    {
        private int _index;
        private int _offset;

        protected override int ReadCore(Span<byte> buffer)
        {
            var chunk = chunks[_index];
            var n = Math.Min(buffer.Length, chunk.Length - _offset);
            chunk.AsSpan(_offset, n).CopyTo(buffer);
            _offset += n;
            if (_offset == chunk.Length)
            {
                chunks[_index++] = [];
                _offset = 0;
            }

            return n;
        }
    }

    /// <summary>A forward-only stream of a known length.</summary>
    private abstract class ReadOnlyBlobStream(long length) : Stream
    {
        private long _position;

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => length;

        public override long Position
        {
            get => _position;
            set => throw new NotSupportedException();
        }

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            if (buffer.IsEmpty || _position == length)
            {
                return 0;
            }

            var n = ReadCore(buffer[..(int)Math.Min(buffer.Length, length - _position)]);
            _position += n;
            return n;
        }

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        protected abstract int ReadCore(Span<byte> buffer);
    }
}
