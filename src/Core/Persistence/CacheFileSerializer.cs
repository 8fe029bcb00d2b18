// ScalableCache cache file — format version 1
// ============================================
// A cache file holds one memory (any provider that implements IPersistentCacheMemory) plus the facts needed to use it
// (CacheFileHeader). Numbers and framing are MessagePack's (big-endian); blob contents are little-endian.
//
//   file      := signature record(header) record(chunk)* record(trailer)        — nothing may follow the trailer
//   signature := 53 43 41 43 48 45 1A 0A   ("SCACHE", Ctrl-Z, LF: text-mode transfers and non-cache files fail here)
//   record    := C6 len:uint32-BE content[len]  — one MessagePack bin 32 value, so after the signature the file is a
//                stream of MessagePack values; 32 ≤ len ≤ MaxRecordBytes (260 MiB)
//   content   := digest[32] body,  digest = SHA-256(body): each record is verified before its body is decoded
//
// Header body — plain MessagePack (never compressed, so any version of any reader can check the version), an array
// indexed by [Key(n)] of HeaderRecord. Keys are never reused; keys 0–2 never change meaning:
//    0 magic "scache"        1 format version (1)     2 minimum reader version (1)
//    3 provider              4 dimension d            5 count N                6 class count C
//    7 model name            8 checkpoint SHA-256 (hex, or nil)                9 checkpoint file name (or nil)
//   10 layers [str]         11 flip (bool)           12 normalisation (text)  13 θ (f64 or nil)   14 λ (f64 or nil)
//   15 created (MessagePack timestamp, UTC)          16 metadata {str: str}   17 payload bytes (sum of blob lengths)
//   18 state := [0 provider, 1 dimension, 2 count, 3 properties {str: str}, 4 blobs [[0 name, 1 length]], 5 children [state]]
//   19 key recipe := [0 layers [str], 1 key normalisation (0 per layer, 1 concatenated), 2 input mean [f32], 3 input std [f32],
//                     4 channels, 5 height, 6 width, 7 per-pixel input mean [f32], 8 per-pixel input std [f32]]
//                     (or nil: files written before the recipe was recorded). A per-pixel normalisation (C·H·W values each, in
//                     C, H, W order) leaves keys 2 and 3 empty, so a reader that predates keys 7–8 refuses the recipe instead of
//                     normalising wrongly; a per-channel one leaves keys 7 and 8 empty.
// The state is the provider's CacheState without its bytes (Exact: blobs labels, keys; Hnsw: labels, graph;
// RandomProjection: matrix, and its inner store's state as the only child). Blobs are numbered depth first (a state's
// blobs in order, then each child's) and their bytes follow in that order.
//
// Chunk body — MessagePack compressed with LZ4 block-array (MessagePackCompression.Lz4BlockArray, ext type 98) of
//   ChunkRecord [0 sequence (0, 1, …), 1 blob number, 2 byte offset in the blob, 3 data (bin)].
//   (Like MessagePack itself, a body under 64 bytes is left uncompressed; readers accept both.) The writer cuts each
//   blob into chunks of 64 MiB (the last one shorter); a reader accepts up to 256 MiB; an empty blob has no chunk.
//   Chunks are in blob order and offset order with no gaps.
//
// Trailer body — plain MessagePack TrailerRecord [0 chunk count, 1 payload bytes, 2 checksum (bin 32)], where
//   checksum = SHA-256(digest(header) ‖ digest(chunk 0) ‖ … ‖ digest(chunk n−1)): it covers the header and the whole
//   payload, in order, so a missing, repeated, reordered or altered record is caught.
//
// Versions. A reader reads keys 0–2 first and refuses a file whose minimum reader version exceeds its own format
// version. A writer adds fields under new keys (older readers skip unknown trailing keys) and raises the minimum reader
// version only for changes an older reader cannot ignore.
//
// Limits. The file and a blob are limited only by 64-bit lengths: keys of 1.28 M × 2048 float32 (10.5 GB) are ~160
// chunks; MessagePack's single byte[] (≤ 2 GB) only ever holds one chunk. A state's dimension is at most 2^20
// (MaxDimension), its count at most Array.MaxLength (labels are one int[] in every store), the class count at most 2^16
// (MaxClassCount), a key recipe's input image at most 2^24 values (MaxInputValues); the stores add theirs: an HNSW
// graph and a projection matrix are each one .NET array (< 2 GiB). The writer refuses what the reader would reject.
// Trust. A cache file may come from anywhere, and whoever changed it can recompute its digests, so the reader checks
// every field before it allocates for it or hands bytes to native code: the header's fields as CacheFileHeader.Validate
// checks them on save (model named, θ > 0 finite, λ ∈ [0, 1], the checkpoint digest 64 lower-case hex digits, the
// checkpoint file a plain file name, layers named) and the key recipe as KeyRecipe does; versions; the limits above; the
// payload against the file's size (LZ4 expands at most 255-fold, so payload bytes ≤ MaxExpansion × file length); each
// state against the header, and blob lengths against the payload. Each provider then checks its state against its own
// sizes before reading a blob: labels = N × 4 bytes, each label in [0, C); Exact keys = N × d × 4 bytes, finite, in the
// storage chunks its views property lists; a projection matrix = k × d × 4 bytes, finite; an HNSW graph's whole
// structure (vectors, head, levels, neighbour lists: USearchGraphLayout) before USearch sees it. Every problem is a
// CacheFileException (Inconsistent) whose message names the field.
// Memory. Saving holds one chunk (and its compressed copy) at a time. Loading streams: each chunk is verified and
// handed to the restoring store, which fills its own storage (peak ≈ the restored memory + a few chunks), as long as the
// store reads its blobs in the order it exported them (otherwise the skipped blobs are held in memory).
// Integrity, not authenticity: the digests catch damaged or truncated files, not deliberate forgeries; loading uses
// MessagePackSecurity.UntrustedData (LZ4 output capped at 257 MiB per chunk).
// Atomic save: the file is written as ".NAME.RANDOM.tmp" (RANDOM: 12 lower-case hex digits) in the target folder, held
// with FileShare.None while written, flushed to disk and renamed over NAME; a failed or cancelled save deletes the
// temporary file and leaves any previous NAME untouched. A killed writer leaves its temporary file behind, so each save of
// NAME first deletes the temporary files of NAME that match that pattern exactly, are plain files (not links), were last
// written at least StaleTemporaryAge (10 minutes) ago and can be opened exclusively (no live writer holds them); any
// other file is left alone.

using System.Buffers;
using System.Buffers.Binary;
using System.Security.Cryptography;
using MessagePack;
using MessagePack.Resolvers;

namespace ScalableCache.Core.Persistence;

/// <summary>Reads and writes the cache file format described at the top of this file.</summary>
internal static class CacheFileSerializer
{
    /// <summary>The value of header key 0.</summary>
    public const string Magic = "scache";

    /// <summary>Bytes of blob data per chunk the writer produces.</summary>
    public const int ChunkBytes = 64 << 20;

    /// <summary>Largest chunk data a reader accepts.</summary>
    public const int MaxChunkBytes = 256 << 20;

    /// <summary>Largest record a reader accepts (a chunk plus LZ4 and MessagePack overhead).</summary>
    public const int MaxRecordBytes = MaxChunkBytes + (4 << 20);

    /// <summary>Deepest nesting of states accepted.</summary>
    public const int MaxStateDepth = 8;

    /// <summary>Largest key dimension of a state (a key of 2^20 float32 values is 4 MiB).</summary>
    public const int MaxDimension = 1 << 20;

    /// <summary>Largest class count of a header.</summary>
    public const int MaxClassCount = 1 << 16;

    /// <summary>Largest input image of a key recipe, in values (channels × height × width): 2^24, e.g. a 2048 × 2048 RGB image.</summary>
    public const long MaxInputValues = 1L << 24;

    /// <summary>Bound on payload bytes per file byte: LZ4 expands a block at most 255-fold.</summary>
    public const int MaxExpansion = 256;

    /// <summary>How long an unlocked temporary file of a save must have been left unwritten before a later save deletes it.</summary>
    public static readonly TimeSpan StaleTemporaryAge = TimeSpan.FromMinutes(10);

    /// <summary>The digits of lower-case hexadecimal (checkpoint digests, temporary file names).</summary>
    public const string LowerHexDigits = "0123456789abcdef";

    private const byte Bin32 = 0xC6;
    private const int DigestBytes = 32;
    private const int TemporaryRandomBytes = 6;

    /// <summary>
    /// Uncompressed MessagePack (header, trailer). Untrusted-data security, with LZ4 output allowed up to a chunk's size
    /// (its default, 64 MiB, is below a full chunk with its framing).
    /// </summary>
    public static readonly MessagePackSerializerOptions Plain = MessagePackSerializerOptions.Standard
        .WithResolver(StandardResolverAllowPrivate.Instance)
        .WithSecurity(MessagePackSecurity.UntrustedData.WithMaximumDecompressedSize(MaxChunkBytes + (1 << 20)));

    /// <summary>LZ4 block-array compressed MessagePack (chunks).</summary>
    public static readonly MessagePackSerializerOptions Compressed = Plain.WithCompression(MessagePackCompression.Lz4BlockArray);

    /// <summary>The 8 bytes every cache file starts with.</summary>
    public static ReadOnlySpan<byte> Signature => "SCACHE\u001A\n"u8;

    /// <summary>Writes <paramref name="state"/> with <paramref name="header"/> to <paramref name="path"/> atomically.</summary>
    public static void Write(string path, HeaderRecord header, CacheState state, CancellationToken cancellationToken)
    {
        CacheBlob.ThrowIfBigEndian();
        var full = Path.GetFullPath(path);
        var folder = Path.GetDirectoryName(full) ?? throw new ArgumentException($"'{path}' has no folder.", nameof(path));
        var name = Path.GetFileName(full);
        var temp = Path.Combine(folder, $".{name}.{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(TemporaryRandomBytes))}.tmp");
        var blobs = Flatten(state);
        cancellationToken.ThrowIfCancellationRequested();
        DeleteStaleTemporaries(folder, name, DateTime.UtcNow);
        try
        {
            using (var file = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            using (var chain = IncrementalHash.CreateHash(HashAlgorithmName.SHA256))
            {
                var output = new ArrayBufferWriter<byte>(); // reused for every record
                file.Write(Signature);
                MessagePackSerializer.Serialize(output, header, Plain);
                WriteRecord(file, output, chain);

                var sequence = 0;
                long payload = 0;
                byte[]? buffer = null;
                for (var b = 0; b < blobs.Count; b++)
                {
                    var blob = blobs[b];
                    long offset = 0;
                    var filled = 0;
                    foreach (var piece in blob.Pieces())
                    {
                        var rest = piece.Span;
                        while (!rest.IsEmpty)
                        {
                            // Never more than the payload: a small cache does not allocate a whole chunk.
                            buffer ??= GC.AllocateUninitializedArray<byte>((int)Math.Clamp(header.PayloadBytes, 1, ChunkBytes));
                            var n = Math.Min(rest.Length, buffer.Length - filled);
                            rest[..n].CopyTo(buffer.AsSpan(filled));
                            filled += n;
                            rest = rest[n..];
                            if (filled == buffer.Length)
                            {
                                WriteChunk(file, output, chain, sequence++, b, offset, buffer.AsMemory(0, filled), cancellationToken);
                                offset += filled;
                                filled = 0;
                            }
                        }
                    }

                    if (filled > 0)
                    {
                        WriteChunk(file, output, chain, sequence++, b, offset, buffer.AsMemory(0, filled), cancellationToken);
                        offset += filled;
                    }

                    payload += offset;
                }

                if (payload != header.PayloadBytes)
                {
                    throw new InvalidOperationException($"The blobs held {payload} bytes; the header declared {header.PayloadBytes}.");
                }

                var trailer = new TrailerRecord { ChunkCount = sequence, PayloadBytes = payload, Checksum = chain.GetHashAndReset() };
                output.ResetWrittenCount();
                MessagePackSerializer.Serialize(output, trailer, Plain);
                WriteRecord(file, output, chain: null);
                file.Flush(flushToDisk: true);
            }

            cancellationToken.ThrowIfCancellationRequested();
            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            try
            {
                File.Delete(temp);
            }
            catch (IOException)
            {
                // Best effort: the temporary file is hidden and named as such.
            }
            catch (UnauthorizedAccessException)
            {
            }

            throw;
        }
    }

    /// <summary>
    /// Deletes the temporary files earlier saves of <paramref name="name"/> in <paramref name="folder"/> left behind: names
    /// <c>.NAME.RANDOM.tmp</c> exactly, plain files last written at least <see cref="StaleTemporaryAge"/> before
    /// <paramref name="nowUtc"/> that no writer holds open. Never fails: what cannot be deleted is left.
    /// </summary>
    public static void DeleteStaleTemporaries(string folder, string name, DateTime nowUtc)
    {
        var options = new EnumerationOptions { AttributesToSkip = 0, IgnoreInaccessible = true, MatchType = MatchType.Simple, RecurseSubdirectories = false };
        List<string> candidates;
        try
        {
            candidates = Directory.EnumerateFiles(folder, "*.tmp", options).Where(p => IsTemporaryOf(Path.GetFileName(p), name)).ToList();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return;
        }

        foreach (var candidate in candidates)
        {
            try
            {
                var info = new FileInfo(candidate);
                if (info.LinkTarget is not null || nowUtc - info.LastWriteTimeUtc < StaleTemporaryAge)
                {
                    continue;
                }

                // Exclusive access fails while a writer (which holds its file with FileShare.None) is still at work.
                using (new FileStream(candidate, FileMode.Open, FileAccess.ReadWrite, FileShare.None, 1, FileOptions.DeleteOnClose))
                {
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // In use, gone already, or not ours to delete: leave it.
            }
        }
    }

    /// <summary>Whether <paramref name="fileName"/> is a temporary file name <see cref="Write"/> uses for <paramref name="name"/>.</summary>
    public static bool IsTemporaryOf(string fileName, string name)
    {
        var prefix = $".{name}.";
        const string suffix = ".tmp";
        const int random = 2 * TemporaryRandomBytes;
        return fileName.Length == prefix.Length + random + suffix.Length
            && fileName.StartsWith(prefix, StringComparison.Ordinal)
            && fileName.EndsWith(suffix, StringComparison.Ordinal)
            && !fileName.AsSpan(prefix.Length, random).ContainsAnyExcept(LowerHexDigits);
    }

    /// <summary>What keeps a state of <paramref name="dimension"/> and <paramref name="count"/> out of this format, or null when it fits.</summary>
    public static string? ShapeProblem(int dimension, long count) =>
        dimension is < 1 or > MaxDimension ? $"dimension {dimension} is outside [1, {MaxDimension}]"
        : count < 0 || count > Array.MaxLength ? $"count {count} is outside [0, {Array.MaxLength}]"
        : null;

    /// <summary>What keeps a key recipe's input shape out of this format, or null when it fits.</summary>
    public static string? InputShapeProblem(Models.InputShape shape) =>
        shape.Channels < 1 || shape.Height < 1 || shape.Width < 1 || (long)shape.Channels * shape.Height * shape.Width > MaxInputValues
            ? $"input shape {shape} is not positive or holds more than {MaxInputValues} values"
            : null;

    /// <summary>What keeps <paramref name="classCount"/> out of this format, or null when it fits.</summary>
    public static string? ClassCountProblem(int classCount) =>
        classCount is < 1 or > MaxClassCount ? $"class count {classCount} is outside [1, {MaxClassCount}]" : null;

    /// <summary>The blobs of <paramref name="state"/> and its children, depth first.</summary>
    /// <exception cref="InvalidOperationException">The states are nested too deep.</exception>
    /// <exception cref="NotSupportedException">A state's shape exceeds the format's limits.</exception>
    public static List<CacheBlob> Flatten(CacheState state)
    {
        var result = new List<CacheBlob>();
        void Visit(CacheState s, int depth)
        {
            if (depth > MaxStateDepth)
            {
                throw new InvalidOperationException($"States are nested more than {MaxStateDepth} deep.");
            }

            if (ShapeProblem(s.Dimension, s.Count) is { } problem)
            {
                throw new NotSupportedException($"The '{s.Provider}' state cannot be saved: its {problem}.");
            }

            result.AddRange(s.Blobs);
            foreach (var child in s.Children)
            {
                Visit(child, depth + 1);
            }
        }

        Visit(state, 1);
        return result;
    }

    /// <summary>The wire form of a state (without blob bytes).</summary>
    public static StateRecord ToRecord(CacheState state) => new()
    {
        Provider = state.Provider,
        Dimension = state.Dimension,
        Count = state.Count,
        Properties = new Dictionary<string, string>(state.Properties, StringComparer.Ordinal),
        Blobs = [.. state.Blobs.Select(b => new BlobRecord { Name = b.Name, Length = b.Length })],
        Children = [.. state.Children.Select(ToRecord)],
    };

    private static void WriteChunk(
        FileStream file, ArrayBufferWriter<byte> output, IncrementalHash chain, int sequence, int blob, long offset, ReadOnlyMemory<byte> data,
        CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var record = new ChunkWriteRecord { Sequence = sequence, Blob = blob, Offset = offset, Data = data };
        output.ResetWrittenCount();
        MessagePackSerializer.Serialize(output, record, Compressed);
        WriteRecord(file, output, chain);
    }

    private static void WriteRecord(Stream file, ArrayBufferWriter<byte> output, IncrementalHash? chain)
    {
        var body = output.WrittenSpan;
        if ((long)body.Length + DigestBytes > MaxRecordBytes)
        {
            throw new InvalidOperationException($"A record of {body.Length} bytes exceeds the format's limit of {MaxRecordBytes}.");
        }

        Span<byte> prefix = stackalloc byte[5 + DigestBytes];
        prefix[0] = Bin32;
        BinaryPrimitives.WriteUInt32BigEndian(prefix[1..5], (uint)(body.Length + DigestBytes));
        SHA256.HashData(body, prefix[5..]);
        chain?.AppendData(prefix[5..]);
        file.Write(prefix);
        file.Write(body);
    }

    /// <summary>Reads the signature and header of an open file; the stream is left at the first chunk.</summary>
    public static (HeaderRecord Header, byte[] Digest) ReadHeader(Stream file, string path)
    {
        Span<byte> signature = stackalloc byte[8];
        var read = file.ReadAtLeast(signature, signature.Length, throwOnEndOfStream: false);
        if (read < signature.Length && read > 0 && signature[..read].SequenceEqual(Signature[..read]))
        {
            throw new CacheFileException(path, CacheFileProblem.Truncated, $"truncated: the file is only {read} bytes long.");
        }

        if (read < signature.Length || !signature.SequenceEqual(Signature))
        {
            throw new CacheFileException(path, CacheFileProblem.NotACacheFile,
                "not a cache file (bad magic: it does not start with the 8-byte signature \"SCACHE\\x1A\\n\").");
        }

        var buffer = Array.Empty<byte>();
        var (body, digest) = ReadRecord(file, path, "the header", ref buffer);
        VersionProbe probe;
        try
        {
            probe = MessagePackSerializer.Deserialize<VersionProbe>(body, Plain);
        }
        catch (MessagePackSerializationException e)
        {
            throw new CacheFileException(path, CacheFileProblem.NotACacheFile, "not a cache file (its header is not a MessagePack cache header).", e);
        }

        if (probe.Magic != Magic)
        {
            throw new CacheFileException(path, CacheFileProblem.NotACacheFile, $"not a cache file (bad magic '{probe.Magic}' in its header; expected '{Magic}').");
        }

        if (probe.MinimumReaderVersion > CacheFile.FormatVersion || probe.FormatVersion < 1)
        {
            throw new CacheFileException(path, CacheFileProblem.UnsupportedVersion,
                $"format version {probe.FormatVersion} needs a reader of version {probe.MinimumReaderVersion} or newer; this build reads version " +
                $"{CacheFile.FormatVersion}. Update scache, or rebuild the cache with `scache build`.");
        }

        try
        {
            return (MessagePackSerializer.Deserialize<HeaderRecord>(body, Plain), digest);
        }
        catch (MessagePackSerializationException e)
        {
            throw new CacheFileException(path, CacheFileProblem.Inconsistent, "the header cannot be decoded: " + e.Message, e);
        }
    }

    /// <summary>
    /// Reads one record into <paramref name="buffer"/> (grown as needed, reused between records); returns its body, valid
    /// until the buffer is reused, and its digest, after checking the digest.
    /// </summary>
    public static (ReadOnlyMemory<byte> Body, byte[] Digest) ReadRecord(Stream file, string path, string what, ref byte[] buffer)
    {
        var start = file.Position;
        var total = file.Length;
        Span<byte> prefix = stackalloc byte[5];
        var read = file.ReadAtLeast(prefix, prefix.Length, throwOnEndOfStream: false);
        if (read < prefix.Length)
        {
            throw new CacheFileException(path, CacheFileProblem.Truncated, $"truncated: the file ends at byte {total}, before {what}.");
        }

        if (prefix[0] != Bin32)
        {
            throw new CacheFileException(path, CacheFileProblem.Inconsistent,
                $"corrupt: {what} at byte {start} does not start with a MessagePack bin 32 marker (0xC6; found 0x{prefix[0]:X2}).");
        }

        var length = BinaryPrimitives.ReadUInt32BigEndian(prefix[1..]);
        if (length is < DigestBytes or > MaxRecordBytes)
        {
            throw new CacheFileException(path, CacheFileProblem.Inconsistent,
                $"corrupt: {what} at byte {start} declares {length} bytes (a record holds {DigestBytes}–{MaxRecordBytes}).");
        }

        if (start + 5 + length > total)
        {
            throw new CacheFileException(path, CacheFileProblem.Truncated,
                $"truncated: {what} at byte {start} needs {length} bytes but the file ends at byte {total}.");
        }

        if (buffer.Length < length)
        {
            buffer = GC.AllocateUninitializedArray<byte>((int)Math.Max(length, Math.Min(2L * buffer.Length, MaxRecordBytes)));
        }

        var content = buffer.AsMemory(0, (int)length);
        file.ReadExactly(content.Span);
        var digest = content.Span[..DigestBytes].ToArray();
        var body = content[DigestBytes..];
        if (!SHA256.HashData(body.Span).AsSpan().SequenceEqual(digest))
        {
            throw new CacheFileException(path, CacheFileProblem.ChecksumMismatch,
                $"checksum mismatch: {what} (bytes {start}–{start + 5 + length}) does not match its SHA-256; the file is damaged.");
        }

        return (body, digest);
    }
}

/// <summary>Header keys 0–2, read before anything else.</summary>
[MessagePackObject]
internal sealed class VersionProbe
{
    [Key(0)]
    public string? Magic { get; set; }

    [Key(1)]
    public int FormatVersion { get; set; }

    [Key(2)]
    public int MinimumReaderVersion { get; set; }
}

/// <summary>The header record (see the format description).</summary>
[MessagePackObject]
internal sealed class HeaderRecord
{
    [Key(0)]
    public string Magic { get; set; } = CacheFileSerializer.Magic;

    [Key(1)]
    public int FormatVersion { get; set; } = CacheFile.FormatVersion;

    [Key(2)]
    public int MinimumReaderVersion { get; set; } = CacheFile.FormatVersion;

    [Key(3)]
    public string Provider { get; set; } = "";

    [Key(4)]
    public int Dimension { get; set; }

    [Key(5)]
    public long Count { get; set; }

    [Key(6)]
    public int ClassCount { get; set; }

    [Key(7)]
    public string ModelName { get; set; } = "";

    [Key(8)]
    public string? CheckpointSha256 { get; set; }

    [Key(9)]
    public string? CheckpointFile { get; set; }

    [Key(10)]
    public string[] Layers { get; set; } = [];

    [Key(11)]
    public bool Flip { get; set; }

    [Key(12)]
    public string Normalization { get; set; } = "";

    [Key(13)]
    public double? Theta { get; set; }

    [Key(14)]
    public double? Lambda { get; set; }

    [Key(15)]
    public DateTime CreatedUtc { get; set; }

    [Key(16)]
    public Dictionary<string, string> Metadata { get; set; } = [];

    [Key(17)]
    public long PayloadBytes { get; set; }

    [Key(18)]
    public StateRecord? State { get; set; }

    [Key(19)]
    public KeyRecipeRecord? Recipe { get; set; }
}

/// <summary>A <see cref="KeyRecipe"/> as data (header key 19).</summary>
[MessagePackObject]
internal sealed class KeyRecipeRecord
{
    [Key(0)]
    public string[] Layers { get; set; } = [];

    [Key(1)]
    public int Normalization { get; set; }

    [Key(2)]
    public float[] Mean { get; set; } = [];

    [Key(3)]
    public float[] Std { get; set; } = [];

    [Key(4)]
    public int Channels { get; set; }

    [Key(5)]
    public int Height { get; set; }

    [Key(6)]
    public int Width { get; set; }

    [Key(7)]
    public float[] PixelMean { get; set; } = [];

    [Key(8)]
    public float[] PixelStd { get; set; } = [];

    public static KeyRecipeRecord From(KeyRecipe recipe)
    {
        var perPixel = recipe.Input.IsPerPixel;
        return new()
        {
            Layers = [.. recipe.Layers],
            Normalization = (int)recipe.Normalization,
            Mean = perPixel ? [] : [.. recipe.Input.Mean],
            Std = perPixel ? [] : [.. recipe.Input.Std],
            Channels = recipe.InputShape.Channels,
            Height = recipe.InputShape.Height,
            Width = recipe.InputShape.Width,
            PixelMean = perPixel ? [.. recipe.Input.Mean] : [],
            PixelStd = perPixel ? [.. recipe.Input.Std] : [],
        };
    }

    /// <summary>The recipe; an <see cref="ArgumentException"/> names what is invalid.</summary>
    public KeyRecipe ToRecipe()
    {
        var shape = new Models.InputShape(Channels, Height, Width);
        var input = PixelMean is { Length: > 0 } || PixelStd is { Length: > 0 }
            ? Models.InputNormalization.PerPixel(PixelMean ?? [], PixelStd ?? [], shape)
            : new Models.InputNormalization(Mean ?? [], Std ?? []);
        return new(Layers ?? [], input, shape, (KeyNormalization)Normalization);
    }
}

/// <summary>A <see cref="CacheState"/> without its blob bytes.</summary>
[MessagePackObject]
internal sealed class StateRecord
{
    [Key(0)]
    public string Provider { get; set; } = "";

    [Key(1)]
    public int Dimension { get; set; }

    [Key(2)]
    public long Count { get; set; }

    [Key(3)]
    public Dictionary<string, string> Properties { get; set; } = [];

    [Key(4)]
    public BlobRecord[] Blobs { get; set; } = [];

    [Key(5)]
    public StateRecord[] Children { get; set; } = [];
}

/// <summary>A blob's name and length.</summary>
[MessagePackObject]
internal sealed class BlobRecord
{
    [Key(0)]
    public string Name { get; set; } = "";

    [Key(1)]
    public long Length { get; set; }
}

/// <summary>A chunk as written (data is a slice of the writer's buffer).</summary>
[MessagePackObject]
internal sealed class ChunkWriteRecord
{
    [Key(0)]
    public int Sequence { get; set; }

    [Key(1)]
    public int Blob { get; set; }

    [Key(2)]
    public long Offset { get; set; }

    [Key(3)]
    public ReadOnlyMemory<byte> Data { get; set; }
}

/// <summary>A chunk as read.</summary>
[MessagePackObject]
internal sealed class ChunkRecord
{
    [Key(0)]
    public int Sequence { get; set; }

    [Key(1)]
    public int Blob { get; set; }

    [Key(2)]
    public long Offset { get; set; }

    [Key(3)]
    public byte[]? Data { get; set; }
}

/// <summary>The trailer record.</summary>
[MessagePackObject]
internal sealed class TrailerRecord
{
    [Key(0)]
    public int ChunkCount { get; set; }

    [Key(1)]
    public long PayloadBytes { get; set; }

    [Key(2)]
    public byte[]? Checksum { get; set; }
}
