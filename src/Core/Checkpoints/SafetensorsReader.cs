using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Checkpoints;

/// <summary>
/// Reads safetensors (https://huggingface.co/docs/safetensors): an unsigned 64-bit little-endian header length N, N bytes of
/// UTF-8 JSON mapping each tensor name to <c>{"dtype", "shape", "data_offsets": [begin, end]}</c> (plus an optional
/// <c>"__metadata__"</c> string map), then the data buffer; offsets are relative to the start of the buffer and every tensor is
/// stored row-major, little-endian. TorchSharp.PyBridge reads this format too but does not check offsets against the file, so a
/// truncated file would load silently; this reader validates every entry and names the file in its errors.
/// </summary>
internal static class SafetensorsReader
{
    public static (Dictionary<string, Tensor> Tensors, IReadOnlyDictionary<string, string> Metadata) Read(string filePath)
    {
        using var stream = new FileStream(filePath, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        var fileLength = stream.Length;
        Span<byte> lengthBytes = stackalloc byte[8];
        if (stream.ReadAtLeast(lengthBytes, 8, throwOnEndOfStream: false) < 8)
        {
            throw new CheckpointException(filePath, $"is truncated: {fileLength} bytes, too short for a safetensors header length.");
        }

        var headerLength = BinaryPrimitives.ReadUInt64LittleEndian(lengthBytes);
        if (headerLength > CheckpointFormats.MaxSafetensorsHeader)
        {
            throw new CheckpointException(filePath, $"safetensors header length {headerLength} exceeds the 100 MB limit; the file is corrupt.");
        }

        if ((long)headerLength > fileLength - 8)
        {
            throw new CheckpointException(
                filePath, $"is truncated: the safetensors header claims {headerLength} bytes but only {fileLength - 8} follow the length field.");
        }

        var header = new byte[headerLength];
        stream.ReadExactly(header);
        var dataStart = 8 + (long)headerLength;
        var dataLength = fileLength - dataStart;

        List<Entry> entries;
        Dictionary<string, string> metadata;
        try
        {
            (entries, metadata) = ParseHeader(header);
        }
        catch (Exception e) when (e is JsonException or FormatException or InvalidOperationException or OverflowException or DecoderFallbackException)
        {
            throw new CheckpointException(filePath, $"has a malformed safetensors header: {e.Message}", e);
        }

        var tensors = new Dictionary<string, Tensor>(entries.Count, StringComparer.Ordinal);
        try
        {
            foreach (var entry in entries)
            {
                var (dtype, elementSize) = DType(filePath, entry);
                var elements = Elements(filePath, entry.Name, entry.Shape);
                var expectedBytes = elements * elementSize;
                if (entry.End < entry.Begin || entry.End - entry.Begin != expectedBytes)
                {
                    throw new CheckpointException(
                        filePath,
                        $"tensor '{entry.Name}' ({entry.DType} {TensorShapeEntry.Format(entry.Shape)}) has data_offsets [{entry.Begin}, {entry.End}], " +
                        $"which is not {expectedBytes} bytes.");
                }

                if (entry.End > dataLength)
                {
                    throw new CheckpointException(
                        filePath,
                        $"is truncated: tensor '{entry.Name}' ends at data offset {entry.End} but the data buffer holds only {dataLength} bytes.");
                }

                if (expectedBytes > Array.MaxLength)
                {
                    throw new CheckpointException(filePath, $"tensor '{entry.Name}' has {expectedBytes} bytes; tensors over 2 GiB are not supported.");
                }

                var bytes = new byte[expectedBytes];
                stream.Position = dataStart + entry.Begin;
                stream.ReadExactly(bytes);
                var t = empty(entry.Shape.ToArray(), dtype);
                t.DetachFromDisposeScope();
                tensors.Add(entry.Name, t);
                if (bytes.Length > 0)
                {
                    t.bytes = bytes;
                }
            }
        }
        catch (Exception e)
        {
            foreach (var t in tensors.Values)
            {
                t.Dispose();
            }

            if (e is CheckpointException)
            {
                throw;
            }

            if (e is EndOfStreamException or IOException)
            {
                throw new CheckpointException(filePath, $"could not be read: {e.Message}", e);
            }

            throw;
        }

        return (tensors, metadata);
    }

    private static (List<Entry>, Dictionary<string, string>) ParseHeader(byte[] header)
    {
        var text = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(header);
        using var doc = JsonDocument.Parse(text);
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
        {
            throw new FormatException("the header is not a JSON object.");
        }

        var entries = new List<Entry>();
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var property in doc.RootElement.EnumerateObject())
        {
            if (property.Name == "__metadata__")
            {
                if (property.Value.ValueKind == JsonValueKind.Object)
                {
                    foreach (var m in property.Value.EnumerateObject())
                    {
                        metadata[m.Name] = m.Value.ValueKind == JsonValueKind.String ? m.Value.GetString()! : m.Value.GetRawText();
                    }
                }

                continue;
            }

            var value = property.Value;
            if (value.ValueKind != JsonValueKind.Object)
            {
                throw new FormatException($"tensor '{property.Name}' is a JSON {value.ValueKind}, not an object with dtype, shape and data_offsets.");
            }

            var dtype = Field(value, property.Name, "dtype").GetString() ?? throw new FormatException($"tensor '{property.Name}' has a null dtype.");
            var shape = Field(value, property.Name, "shape").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            var offsets = Field(value, property.Name, "data_offsets").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            if (offsets.Length != 2)
            {
                throw new FormatException($"tensor '{property.Name}' has {offsets.Length} data_offsets, expected 2.");
            }

            entries.Add(new Entry(property.Name, dtype, shape, offsets[0], offsets[1]));
        }

        return (entries, metadata);
    }

    private static JsonElement Field(JsonElement entry, string tensor, string name) =>
        entry.TryGetProperty(name, out var value) ? value : throw new FormatException($"tensor '{tensor}' has no \"{name}\" field.");

    private static (ScalarType, long) DType(string filePath, Entry entry) => entry.DType switch
    {
        "F64" => (ScalarType.Float64, 8),
        "F32" => (ScalarType.Float32, 4),
        "F16" => (ScalarType.Float16, 2),
        "BF16" => (ScalarType.BFloat16, 2),
        "I64" => (ScalarType.Int64, 8),
        "I32" => (ScalarType.Int32, 4),
        "I16" => (ScalarType.Int16, 2),
        "I8" => (ScalarType.Int8, 1),
        "U8" => (ScalarType.Byte, 1),
        "BOOL" => (ScalarType.Bool, 1),
        _ => throw new CheckpointException(
            filePath, $"tensor '{entry.Name}' has dtype '{entry.DType}', which is not supported (F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL)."),
    };

    internal static long Elements(string filePath, string name, IReadOnlyList<long> shape)
    {
        long n = 1;
        foreach (var d in shape)
        {
            if (d < 0)
            {
                throw new CheckpointException(filePath, $"tensor '{name}' has a negative dimension in shape {TensorShapeEntry.Format(shape)}.");
            }

            try
            {
                n = checked(n * d);
            }
            catch (OverflowException)
            {
                throw new CheckpointException(filePath, $"tensor '{name}' has shape {TensorShapeEntry.Format(shape)}, too large to address.");
            }
        }

        return n;
    }

    private sealed record Entry(string Name, string DType, long[] Shape, long Begin, long End);
}
