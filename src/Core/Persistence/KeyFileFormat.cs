using System.Buffers.Binary;
using System.Security.Cryptography;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Persistence;

/// <summary>Encoding and checking of the key file's pages (format: top of <c>KeyFile.cs</c>).</summary>
internal static unsafe class KeyFileFormat
{
    public static ReadOnlySpan<byte> Signature => "SCKEYS\u001A\n"u8;

    public static ReadOnlySpan<byte> ChunkMagic => "SCKCHUNK"u8;

    public static ReadOnlySpan<byte> TrailerMagic => "SCKTRAIL"u8;

    /// <summary>Header offset of the SHA-256 of the writer's identity (zeros: none).</summary>
    public const int IdentityOffset = 32;

    /// <summary>Keys checked per step when verifying (bounded temporary tensors).</summary>
    private const int VerifyRows = 8192;

    public static long Pad(long bytes) => (bytes + KeyFile.PageBytes - 1) / KeyFile.PageBytes * KeyFile.PageBytes;

    public static uint ScalarCode(ScalarType type) => type switch
    {
        ScalarType.Float32 => 0,
        ScalarType.Float16 => 1,
        ScalarType.BFloat16 => 2,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "Key files hold Float32, Float16 or BFloat16 keys."),
    };

    public static byte[] Header(KeyFileLayout layout, ReadOnlySpan<byte> identity)
    {
        var page = new byte[KeyFile.PageBytes];
        Signature.CopyTo(page);
        BinaryPrimitives.WriteUInt32LittleEndian(page.AsSpan(8), KeyFile.FormatVersion);
        BinaryPrimitives.WriteUInt32LittleEndian(page.AsSpan(12), ScalarCode(layout.ScalarType));
        BinaryPrimitives.WriteUInt32LittleEndian(page.AsSpan(16), (uint)layout.Dimension);
        BinaryPrimitives.WriteUInt32LittleEndian(page.AsSpan(20), (uint)layout.ClassCount);
        BinaryPrimitives.WriteUInt32LittleEndian(page.AsSpan(24), (uint)layout.EffectiveRowsPerChunk);
        identity.CopyTo(page.AsSpan(IdentityOffset));
        SHA256.HashData(page.AsSpan(0, KeyFile.HeaderDigestOffset), page.AsSpan(KeyFile.HeaderDigestOffset));
        return page;
    }

    /// <summary>The layout of a header page, after checking it.</summary>
    public static KeyFileLayout ReadHeader(ReadOnlySpan<byte> page, string path)
    {
        if (page.Length < 8 || !page[..8].SequenceEqual(Signature))
        {
            throw new CacheFileException(path, CacheFileProblem.NotACacheFile,
                "not a key file (bad magic: it does not start with the 8-byte signature \"SCKEYS\\x1A\\n\").");
        }

        if (page.Length < KeyFile.PageBytes)
        {
            throw new CacheFileException(path, CacheFileProblem.Truncated, $"truncated: the file ends inside its {KeyFile.PageBytes}-byte header.");
        }

        if (!SHA256.HashData(page[..KeyFile.HeaderDigestOffset]).AsSpan().SequenceEqual(page[KeyFile.HeaderDigestOffset..KeyFile.PageBytes]))
        {
            throw new CacheFileException(path, CacheFileProblem.ChecksumMismatch, "checksum mismatch: the key file's header does not match its SHA-256.");
        }

        var version = BinaryPrimitives.ReadUInt32LittleEndian(page[8..]);
        if (version != KeyFile.FormatVersion)
        {
            throw new CacheFileException(path, CacheFileProblem.UnsupportedVersion,
                $"key file format version {version}; this build reads version {KeyFile.FormatVersion}.");
        }

        var scalar = BinaryPrimitives.ReadUInt32LittleEndian(page[12..]) switch
        {
            0 => ScalarType.Float32,
            1 => ScalarType.Float16,
            2 => ScalarType.BFloat16,
            var other => throw new CacheFileException(path, CacheFileProblem.Inconsistent, $"the header's scalar code {other} is not 0 (float32), 1 (float16) or 2 (bfloat16)."),
        };
        var dimension = BinaryPrimitives.ReadUInt32LittleEndian(page[16..]);
        var classes = BinaryPrimitives.ReadUInt32LittleEndian(page[20..]);
        var rowsPerChunk = BinaryPrimitives.ReadUInt32LittleEndian(page[24..]);
        if (dimension > int.MaxValue || classes > int.MaxValue || rowsPerChunk is 0 or > int.MaxValue)
        {
            throw new CacheFileException(path, CacheFileProblem.Inconsistent,
                $"the header's dimension {dimension}, class count {classes} or rows per chunk {rowsPerChunk} is out of range.");
        }

        var layout = new KeyFileLayout((int)dimension, (int)classes, scalar, (int)rowsPerChunk);
        var problems = layout.Validate();
        return problems.Count == 0
            ? layout
            : throw new CacheFileException(path, CacheFileProblem.Inconsistent, "the header is invalid: " + string.Join("; ", problems) + ".");
    }

    public static byte[] ChunkPage(int index, int rows, long firstRow, double maxNorm, ReadOnlySpan<byte> payloadDigest)
    {
        var page = new byte[KeyFile.PageBytes];
        ChunkMagic.CopyTo(page);
        BinaryPrimitives.WriteInt32LittleEndian(page.AsSpan(8), index);
        BinaryPrimitives.WriteInt32LittleEndian(page.AsSpan(12), rows);
        BinaryPrimitives.WriteInt64LittleEndian(page.AsSpan(16), firstRow);
        BinaryPrimitives.WriteDoubleLittleEndian(page.AsSpan(24), maxNorm);
        payloadDigest.CopyTo(page.AsSpan(32));
        SHA256.HashData(page.AsSpan(0, KeyFile.ChunkPageDigestOffset), page.AsSpan(KeyFile.ChunkPageDigestOffset));
        return page;
    }

    public static byte[] TrailerPage(int chunks, long rows, ReadOnlySpan<byte> chain)
    {
        var page = new byte[KeyFile.PageBytes];
        TrailerMagic.CopyTo(page);
        BinaryPrimitives.WriteInt32LittleEndian(page.AsSpan(8), chunks);
        BinaryPrimitives.WriteInt64LittleEndian(page.AsSpan(16), rows);
        chain.CopyTo(page.AsSpan(24));
        SHA256.HashData(page.AsSpan(0, KeyFile.TrailerDigestOffset), page.AsSpan(KeyFile.TrailerDigestOffset));
        return page;
    }

    /// <summary>What a scan of the chunks found.</summary>
    public sealed class Scan
    {
        public List<KeyFileChunk> Chunks { get; } = [];

        public List<long> KeyOffsets { get; } = [];

        public List<int> Labels { get; } = [];

        /// <summary>The payload digest of each chunk, in order (the trailer's chain is over them).</summary>
        public List<byte[]> Digests { get; } = [];

        /// <summary>Where the next chunk (or the trailer) goes: the end of the last valid chunk.</summary>
        public long End { get; set; } = KeyFile.PageBytes;

        /// <summary>The trailer's checksum over the chunks (SHA-256 of their payload digests), once <see cref="Complete"/>.</summary>
        public byte[] Checksum { get; set; } = [];

        /// <summary>Whether a valid trailer ends the file.</summary>
        public bool Complete { get; set; }

        public long Rows => Labels.Count;

        public (KeyFileChunk[] Chunks, long[] KeyOffsets, int[] Labels) ToResult() => ([.. Chunks], [.. KeyOffsets], [.. Labels]);
    }

    /// <summary>
    /// Walks the chunks of a mapped file of <paramref name="length"/> bytes. With <paramref name="complete"/>, every problem
    /// (a missing trailer included) throws; without it (a resuming writer), the walk stops at the first torn or missing chunk
    /// page, and only damage inside a chunk whose page is valid throws.
    /// </summary>
    public static Scan ReadChunks(byte* file, long length, KeyFileLayout layout, string path, bool verifyKeys, bool complete)
    {
        var scan = new Scan();
        var perChunk = layout.EffectiveRowsPerChunk;
        var position = (long)KeyFile.PageBytes;
        var shortChunk = false;
        using var chain = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        for (var index = 0; ; index++)
        {
            // A killed writer leaves a chunk's contents before its page: an all-zero page is an unfinished file, not damage.
            if (position + KeyFile.PageBytes > length || !new ReadOnlySpan<byte>(file + position, KeyFile.PageBytes).ContainsAnyExcept((byte)0))
            {
                if (!complete)
                {
                    return scan;
                }

                throw new CacheFileException(path, CacheFileProblem.Truncated,
                    $"truncated: the key file ends at byte {length} after {index} chunks ({scan.Rows} keys) without its trailer — an unfinished build; " +
                    "rerun the same build to resume it.");
            }

            var page = new ReadOnlySpan<byte>(file + position, KeyFile.PageBytes);
            if (page[..8].SequenceEqual(TrailerMagic))
            {
                scan.Checksum = chain.GetHashAndReset();
                ReadTrailer(page, position, length, index, scan.Rows, scan.Checksum, path);
                scan.Complete = true;
                scan.End = position;
                return scan;
            }

            var pageValid = page[..8].SequenceEqual(ChunkMagic)
                && SHA256.HashData(page[..KeyFile.ChunkPageDigestOffset]).AsSpan().SequenceEqual(page.Slice(KeyFile.ChunkPageDigestOffset, KeyFile.DigestBytes));
            if (!pageValid)
            {
                if (!complete)
                {
                    return scan;
                }

                throw new CacheFileException(path,
                    page[..8].SequenceEqual(ChunkMagic) ? CacheFileProblem.ChecksumMismatch : CacheFileProblem.Inconsistent,
                    page[..8].SequenceEqual(ChunkMagic)
                        ? $"checksum mismatch: the page of chunk {index} (byte {position}) does not match its SHA-256."
                        : $"corrupt: byte {position} holds neither chunk {index}'s page nor the trailer.");
            }

            var chunkIndex = BinaryPrimitives.ReadInt32LittleEndian(page[8..]);
            var rows = BinaryPrimitives.ReadInt32LittleEndian(page[12..]);
            var firstRow = BinaryPrimitives.ReadInt64LittleEndian(page[16..]);
            var maxNorm = BinaryPrimitives.ReadDoubleLittleEndian(page[24..]);
            if (chunkIndex != index || rows < 1 || rows > perChunk || firstRow != scan.Rows || shortChunk
                || !(maxNorm >= 0) || !double.IsFinite(maxNorm) || scan.Rows + rows > Array.MaxLength)
            {
                throw new CacheFileException(path, CacheFileProblem.Inconsistent,
                    $"chunk {index} (byte {position}) declares index {chunkIndex}, {rows} rows from row {firstRow}, largest norm {maxNorm}; expected " +
                    $"index {index}, 1–{perChunk} rows from row {scan.Rows}{(shortChunk ? " (and no chunk after a short one)" : "")}, a finite norm ≥ 0.");
            }

            var labelBytes = 4L * rows;
            var keyBytes = rows * layout.RowBytes;
            var labelsAt = position + KeyFile.PageBytes;
            var keysAt = labelsAt + Pad(labelBytes);
            var end = keysAt + Pad(keyBytes);
            if (end > length)
            {
                if (!complete)
                {
                    return scan;
                }

                throw new CacheFileException(path, CacheFileProblem.Truncated,
                    $"truncated: chunk {index} needs bytes {position}–{end} but the key file ends at byte {length}.");
            }

            var labels = new ReadOnlySpan<int>(file + labelsAt, rows);
            for (var k = 0; k < rows; k++)
            {
                if ((uint)labels[k] >= (uint)layout.ClassCount)
                {
                    throw new CacheFileException(path, CacheFileProblem.Inconsistent,
                        $"label {labels[k]} of key {firstRow + k} (chunk {index}) is outside [0, {layout.ClassCount}).");
                }
            }

            var digest = page.Slice(32, KeyFile.DigestBytes).ToArray();
            var lastOfResume = !complete && !HasChunkPageAt(file, length, end);
            if ((complete && verifyKeys) || lastOfResume)
            {
                VerifyPayload(file, labelsAt, labelBytes, keysAt, keyBytes, digest, index, path);
            }

            if (complete && verifyKeys)
            {
                VerifyKeys(file + keysAt, rows, layout, maxNorm, firstRow, index, path);
            }

            KeyFile.Release(file, length, position, end - position); // what was read stays in the page cache, not in this process

            chain.AppendData(digest);
            scan.Digests.Add(digest);
            scan.Chunks.Add(new KeyFileChunk(index, firstRow, rows, maxNorm));
            scan.KeyOffsets.Add(keysAt);
            foreach (var label in labels)
            {
                scan.Labels.Add(label);
            }

            shortChunk = rows < perChunk;
            position = end;
            scan.End = end;
        }
    }

    private static bool HasChunkPageAt(byte* file, long length, long position) =>
        position + KeyFile.PageBytes <= length && new ReadOnlySpan<byte>(file + position, 8).SequenceEqual(ChunkMagic);

    private static void ReadTrailer(ReadOnlySpan<byte> page, long position, long length, int chunks, long rows, byte[] chain, string path)
    {
        if (!SHA256.HashData(page[..KeyFile.TrailerDigestOffset]).AsSpan().SequenceEqual(page.Slice(KeyFile.TrailerDigestOffset, KeyFile.DigestBytes)))
        {
            throw new CacheFileException(path, CacheFileProblem.ChecksumMismatch, $"checksum mismatch: the trailer (byte {position}) does not match its SHA-256.");
        }

        var declaredChunks = BinaryPrimitives.ReadInt32LittleEndian(page[8..]);
        var declaredRows = BinaryPrimitives.ReadInt64LittleEndian(page[16..]);
        if (declaredChunks != chunks || declaredRows != rows)
        {
            throw new CacheFileException(path, CacheFileProblem.Inconsistent,
                $"the trailer declares {declaredChunks} chunks and {declaredRows} keys; the file holds {chunks} and {rows}.");
        }

        if (!page.Slice(24, KeyFile.DigestBytes).SequenceEqual(chain))
        {
            throw new CacheFileException(path, CacheFileProblem.ChecksumMismatch,
                "checksum mismatch: the trailer's checksum over the chunks does not match (a chunk was removed, repeated or reordered).");
        }

        if (position + KeyFile.PageBytes != length)
        {
            throw new CacheFileException(path, CacheFileProblem.Inconsistent,
                $"{length - position - KeyFile.PageBytes} bytes follow the trailer; nothing may.");
        }
    }

    private static void VerifyPayload(byte* file, long labelsAt, long labelBytes, long keysAt, long keyBytes, byte[] digest, int index, string path)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(new ReadOnlySpan<byte>(file + labelsAt, (int)labelBytes));
        const int step = 16 << 20;
        for (long offset = 0; offset < keyBytes; offset += step)
        {
            hash.AppendData(new ReadOnlySpan<byte>(file + keysAt + offset, (int)Math.Min(step, keyBytes - offset)));
        }

        if (!hash.GetHashAndReset().AsSpan().SequenceEqual(digest))
        {
            throw new CacheFileException(path, CacheFileProblem.ChecksumMismatch,
                $"checksum mismatch: the labels and keys of chunk {index} do not match their SHA-256; the file is damaged.");
        }
    }

    /// <summary>Every key finite, and the chunk's largest norm the saved one (relative 1e-5).</summary>
    private static void VerifyKeys(byte* keys, int rows, KeyFileLayout layout, double savedNorm, long firstRow, int index, string path)
    {
        double largest = 0;
        for (var offset = 0; offset < rows; offset += VerifyRows)
        {
            using var scope = NewDisposeScope();
            var n = Math.Min(VerifyRows, rows - offset);
            var stored = empty(n, layout.Dimension, dtype: layout.ScalarType);
            new ReadOnlySpan<byte>(keys + ((long)offset * layout.RowBytes), checked((int)(n * layout.RowBytes))).CopyTo(stored.bytes);
            var values = stored.to_type(ScalarType.Float32);
            var finite = isfinite(values).all(1);
            if (!finite.all().item<bool>())
            {
                var row = finite.logical_not().to_type(ScalarType.Int32).argmax().item<long>();
                throw new CacheFileException(path, CacheFileProblem.Inconsistent, $"key {firstRow + offset + row} (chunk {index}) has a non-finite value.");
            }

            largest = Math.Max(largest, values.norm(1).max().item<float>());
        }

        if (Math.Abs(largest - savedNorm) > 1e-5 * Math.Max(largest, 1e-30))
        {
            throw new CacheFileException(path, CacheFileProblem.Inconsistent,
                $"chunk {index} declares a largest key norm of {savedNorm:R}; its keys' is {largest:R}.");
        }
    }
}
