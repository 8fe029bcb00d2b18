using System.Buffers.Binary;
using System.Security.Cryptography;
using MessagePack;
using MessagePack.Formatters;
using MessagePack.Resolvers;
using Xunit;

namespace ScalableCache.Tests;

/// <summary>
/// A cache file taken apart into its records, as the format comment at the top of <c>CacheFileSerializer.cs</c> describes
/// them, to be changed and put back together with valid framing: every record's SHA-256 and the trailer's checksum
/// recomputed, which is what a buggy writer or a forger produces. Records are plain MessagePack values (arrays indexed by
/// key), so any field can be given any value, of any type.
/// </summary>
internal sealed class CacheFileFrames
{
    private static readonly MessagePackSerializerOptions Plain = MessagePackSerializerOptions.Standard
        .WithResolver(CompositeResolver.Create([new ValueFormatter()], [StandardResolver.Instance]));
    private static readonly MessagePackSerializerOptions Compressed = Plain.WithCompression(MessagePackCompression.Lz4BlockArray);
    private static readonly byte[] Signature = "SCACHE\u001A\n"u8.ToArray();

    private CacheFileFrames(byte[] header, List<byte[]> chunks, byte[] trailer)
    {
        HeaderBody = header;
        ChunkBodies = chunks;
        TrailerBody = trailer;
    }

    /// <summary>The header record's body (plain MessagePack).</summary>
    public byte[] HeaderBody { get; set; }

    /// <summary>The chunk records' bodies (LZ4 block-array MessagePack), in file order.</summary>
    public List<byte[]> ChunkBodies { get; }

    /// <summary>The trailer record's body (plain MessagePack).</summary>
    public byte[] TrailerBody { get; set; }

    /// <summary>The header as an array indexed by key (a copy: set it back with <see cref="SetHeader"/>).</summary>
    public object?[] Header => Decode(HeaderBody, Plain);

    /// <summary>Splits <paramref name="file"/> into its records (the file must be well framed).</summary>
    public static CacheFileFrames Parse(byte[] file)
    {
        Assert.Equal(Signature, file[..8]);
        var bodies = new List<byte[]>();
        for (var position = 8; position < file.Length;)
        {
            Assert.Equal(0xC6, file[position]);
            var length = (int)BinaryPrimitives.ReadUInt32BigEndian(file.AsSpan(position + 1, 4));
            bodies.Add(file.AsSpan(position + 5 + 32, length - 32).ToArray());
            position += 5 + length;
        }

        return new CacheFileFrames(bodies[0], bodies[1..^1], bodies[^1]);
    }

    /// <summary>Changes the header in place (an array indexed by key; the state is key 18, the key recipe key 19).</summary>
    public void ChangeHeader(Action<object?[]> change)
    {
        ArgumentNullException.ThrowIfNull(change);
        var header = Header;
        change(header);
        SetHeader(header);
    }

    /// <summary><paramref name="file"/> changed by <paramref name="change"/> and sealed (see <see cref="Seal"/>).</summary>
    public static byte[] Forge(byte[] file, Action<CacheFileFrames> change, bool recomputeChecksum = true)
    {
        ArgumentNullException.ThrowIfNull(change);
        var frames = Parse(file);
        change(frames);
        return frames.Seal(recomputeChecksum);
    }

    /// <summary>Replaces the header.</summary>
    public void SetHeader(object?[] header) => HeaderBody = MessagePackSerializer.Serialize<object?>(header, Plain);

    /// <summary>The trailer as <c>[chunk count, payload bytes, checksum]</c> (a copy).</summary>
    public object?[] Trailer => Decode(TrailerBody, Plain);

    /// <summary>Replaces the trailer (<see cref="Seal"/> recomputes its checksum unless told not to).</summary>
    public void SetTrailer(object?[] trailer) => TrailerBody = MessagePackSerializer.Serialize<object?>(trailer, Plain);

    /// <summary>Chunk <paramref name="index"/> as <c>[sequence, blob, offset, data]</c> (a copy).</summary>
    public object?[] Chunk(int index) => Decode(ChunkBodies[index], Compressed);

    /// <summary>Replaces chunk <paramref name="index"/>, compressed as the writer compresses.</summary>
    public void SetChunk(int index, object?[] chunk) => ChunkBodies[index] = MessagePackSerializer.Serialize<object?>(chunk, Compressed);

    /// <summary>
    /// The bytes of blob <paramref name="blob"/> (numbered depth first) as the chunks carry them, and where each chunk's
    /// data starts in it: (chunk index, offset in the blob, length).
    /// </summary>
    public (byte[] Bytes, List<(int Chunk, long Offset, int Length)> Pieces) Blob(int blob)
    {
        using var bytes = new MemoryStream();
        var pieces = new List<(int, long, int)>();
        for (var i = 0; i < ChunkBodies.Count; i++)
        {
            var chunk = Chunk(i);
            if (Convert.ToInt32(chunk[1]) == blob)
            {
                var data = (byte[])chunk[3]!;
                pieces.Add((i, bytes.Length, data.Length));
                bytes.Write(data);
            }
        }

        return (bytes.ToArray(), pieces);
    }

    /// <summary>A change to a few bytes of a blob.</summary>
    public delegate void BytesChange(Span<byte> bytes);

    /// <summary>
    /// Changes up to <paramref name="length"/> bytes of blob <paramref name="blob"/> from <paramref name="offset"/> (within
    /// the chunk that holds that offset) and re-encodes that chunk.
    /// </summary>
    public void ChangeBlob(int blob, long offset, int length, BytesChange change)
    {
        var (_, pieces) = Blob(blob);
        var (index, start, size) = pieces.Single(p => offset >= p.Offset && offset < p.Offset + p.Length);
        var chunk = Chunk(index);
        var at = (int)(offset - start);
        change(((byte[])chunk[3]!).AsSpan(at, Math.Min(length, size - at)));
        SetChunk(index, chunk);
    }

    /// <summary>
    /// The file: signature, then every record with its SHA-256 recomputed. With <paramref name="recomputeChecksum"/> the
    /// trailer's checksum is set to the SHA-256 over the header and chunk digests, so the framing is valid whatever was
    /// changed; without, the trailer body is written as it is.
    /// </summary>
    public byte[] Seal(bool recomputeChecksum = true)
    {
        using var file = new MemoryStream();
        using var chain = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        file.Write(Signature);
        chain.AppendData(WriteRecord(file, HeaderBody));
        foreach (var chunk in ChunkBodies)
        {
            chain.AppendData(WriteRecord(file, chunk));
        }

        var trailer = TrailerBody;
        if (recomputeChecksum)
        {
            var fields = Decode(trailer, Plain);
            fields[2] = chain.GetHashAndReset();
            trailer = MessagePackSerializer.Serialize<object?>(fields, Plain);
        }

        WriteRecord(file, trailer);
        return file.ToArray();
    }

    private static object?[] Decode(byte[] body, MessagePackSerializerOptions options) =>
        (object?[])MessagePackSerializer.Deserialize<object?>(body, options)!;

    /// <summary>
    /// Reads any MessagePack value as plain objects (integers as <see cref="long"/>, or <see cref="ulong"/> above its range;
    /// arrays as <c>object?[]</c>; maps as dictionaries) and writes them back in the shortest form, as the writer's typed
    /// records are written, so an unchanged record re-encodes to the same bytes.
    /// </summary>
    private sealed class ValueFormatter : IMessagePackFormatter<object?>
    {
        public object? Deserialize(ref MessagePackReader reader, MessagePackSerializerOptions options) =>
            Widen(PrimitiveObjectFormatter.Instance.Deserialize(ref reader, options));

        public void Serialize(ref MessagePackWriter writer, object? value, MessagePackSerializerOptions options)
        {
            switch (value)
            {
                case null:
                    writer.WriteNil();
                    break;
                case bool b:
                    writer.Write(b);
                    break;
                case long l:
                    writer.Write(l);
                    break;
                case int i:
                    writer.Write(i);
                    break;
                case ulong u:
                    writer.Write(u);
                    break;
                case double d:
                    writer.Write(d);
                    break;
                case float f:
                    writer.Write(f);
                    break;
                case string text:
                    writer.Write(text);
                    break;
                case byte[] bytes:
                    writer.Write(bytes);
                    break;
                case DateTime time:
                    writer.Write(time);
                    break;
                case object?[] array:
                    writer.WriteArrayHeader(array.Length);
                    foreach (var item in array)
                    {
                        Serialize(ref writer, item, options);
                    }

                    break;
                case System.Collections.IDictionary map:
                    writer.WriteMapHeader(map.Count);
                    foreach (System.Collections.DictionaryEntry entry in map)
                    {
                        Serialize(ref writer, entry.Key, options);
                        Serialize(ref writer, entry.Value, options);
                    }

                    break;
                default:
                    throw new ArgumentException($"Cannot write a {value.GetType().Name}.", nameof(value));
            }
        }

        private static object? Widen(object? value) => value switch
        {
            byte or sbyte or short or ushort or int or uint => Convert.ToInt64(value, System.Globalization.CultureInfo.InvariantCulture),
            object?[] array => array.Select(Widen).ToArray(),
            IDictionary<object, object?> map => map.ToDictionary(kv => kv.Key, kv => Widen(kv.Value)),
            _ => value,
        };
    }

    /// <summary>Writes one record (bin 32 of digest ‖ body); returns the digest.</summary>
    private static byte[] WriteRecord(Stream file, byte[] body)
    {
        var digest = SHA256.HashData(body);
        Span<byte> prefix = stackalloc byte[5];
        prefix[0] = 0xC6;
        BinaryPrimitives.WriteUInt32BigEndian(prefix[1..], (uint)(body.Length + digest.Length));
        file.Write(prefix);
        file.Write(digest);
        file.Write(body);
        return digest;
    }
}
