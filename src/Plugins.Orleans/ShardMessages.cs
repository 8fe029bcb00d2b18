using System.Runtime.InteropServices;
using Orleans;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Orleans;

/// <summary>
/// A float32 tensor as it crosses a grain call: its shape and its elements as little-endian bytes, row-major. Orleans
/// copies a <c>byte[]</c> as one block (4 bytes per element plus a few bytes of header), where a <c>float[]</c> would be
/// written element by element with a tag each.
/// </summary>
[GenerateSerializer, Immutable]
internal sealed class TensorData
{
    /// <summary>Sizes of the dimensions.</summary>
    [Id(0)]
    public required int[] Shape { get; init; }

    /// <summary>The elements, float32 little-endian, row-major (product of <see cref="Shape"/> × 4 bytes).</summary>
    [Id(1)]
    public required byte[] Data { get; init; }

    /// <summary>The elements as floats (a view of <see cref="Data"/>).</summary>
    public ReadOnlySpan<float> Values => MemoryMarshal.Cast<byte, float>(Data);

    /// <summary>A copy of a float32 tensor (any device, any layout).</summary>
    public static TensorData From(Tensor tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        ThrowIfBigEndian();
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var host = tensor.detach().to(ScalarType.Float32, CPU).contiguous();
        return new TensorData { Shape = [.. host.shape.Select(s => checked((int)s))], Data = host.bytes.ToArray() };
    }

    /// <summary>Rows <c>[start, start + count)</c> of a row-major <c>[n, d]</c> array.</summary>
    public static TensorData Rows(float[] values, int dimension, int start, int count)
    {
        ArgumentNullException.ThrowIfNull(values);
        ThrowIfBigEndian();
        var bytes = MemoryMarshal.AsBytes(values.AsSpan(start * dimension, count * dimension)).ToArray();
        return new TensorData { Shape = [count, dimension], Data = bytes };
    }

    /// <summary>A new CPU tensor holding a copy of the elements, owned by the caller.</summary>
    public Tensor ToTensor()
    {
        ThrowIfBigEndian();
        var elements = Shape.Aggregate(1L, (a, s) => a * s);
        if (Shape.Any(s => s < 0) || elements * sizeof(float) != Data.LongLength)
        {
            throw new ArgumentException($"A tensor of shape [{string.Join(", ", Shape)}] needs {elements * sizeof(float)} bytes; the message holds {Data.Length}.");
        }

        var result = empty([.. Shape.Select(s => (long)s)], dtype: ScalarType.Float32);
        result.bytes = Data;
        return result;
    }

    private static void ThrowIfBigEndian()
    {
        if (!BitConverter.IsLittleEndian)
        {
            throw new PlatformNotSupportedException("Shard messages carry little-endian floats; this platform is big-endian.");
        }
    }
}

/// <summary>What a shard holds: which cache, which shard of how many, key dimension, classes and the inner provider.</summary>
[GenerateSerializer, Immutable]
internal sealed record ShardSpec(
    [property: Id(0)] string CacheId,
    [property: Id(1)] int ShardCount,
    [property: Id(2)] int Dimension,
    [property: Id(3)] int ClassCount,
    [property: Id(4)] string Inner);

/// <summary>
/// One shard's rows of one add: keys <c>[n, d]</c>, their labels, and the cache-wide id (insertion order over every add) of the
/// first row — the rest follow it (−1: unknown, for parts written before ids were recorded).
/// </summary>
[GenerateSerializer, Immutable]
internal sealed record ShardRows([property: Id(0)] TensorData Keys, [property: Id(1)] int[] Labels, [property: Id(2)] long FirstId = -1)
{
    /// <summary>Number of rows.</summary>
    public int Count => Labels.Length;
}

/// <summary>A shard's log-mass <c>[T, b, C]</c> and the cache version it reflects.</summary>
[GenerateSerializer, Immutable]
internal sealed record ShardAnswer([property: Id(0)] long Version, [property: Id(1)] TensorData LogMass);

/// <summary>A shard's condition: the version it has applied, its keys, the parts it holds staged and where it runs.</summary>
[GenerateSerializer, Immutable]
internal sealed record ShardStatus(
    [property: Id(0)] long Version,
    [property: Id(1)] long Count,
    [property: Id(2)] int StagedParts,
    [property: Id(3)] string Silo);

/// <summary>The cache-wide ids of the keys a shard retrieved for each query (<see cref="ShardRows.FirstId"/>), and the version it reflects.</summary>
[GenerateSerializer, Immutable]
internal sealed record ShardRetrieved([property: Id(0)] long Version, [property: Id(1)] long[][] Ids);

/// <summary>A shard's checkpoint: its cache file (name within the cache's folder), the version it holds, keys and the file's SHA-256.</summary>
[GenerateSerializer, Immutable]
internal sealed record ShardCheckpoint(
    [property: Id(0)] int Shard,
    [property: Id(1)] long Version,
    [property: Id(2)] long Count,
    [property: Id(3)] string File,
    [property: Id(4)] string Sha256);

/// <summary>
/// The cache as the coordinator knows it: its spec, the last committed version, the keys per shard, and whether it persists its
/// adds (its silos have a state folder: every committed add is on disk before the commit returns).
/// </summary>
[GenerateSerializer, Immutable]
internal sealed record CacheDescriptor(
    [property: Id(0)] ShardSpec Spec,
    [property: Id(1)] long Version,
    [property: Id(2)] long[] ShardCounts,
    [property: Id(3)] bool Persisted);

/// <summary>
/// The right to write one add: its version, the attempt (a version refused or abandoned is retried under a higher one),
/// how many rows go to each shard (the add's rows in order: shard 0's first), and the keys committed before it (the id of
/// the add's first row). <see cref="Granted"/> is false while another add holds the lease.
/// </summary>
[GenerateSerializer, Immutable]
internal sealed record Reservation(
    [property: Id(0)] bool Granted,
    [property: Id(1)] long Version,
    [property: Id(2)] long Attempt,
    [property: Id(3)] long[] Rows,
    [property: Id(4)] long KeysBefore);
