using System.Buffers.Binary;

namespace ScalableCache.Hnsw;

/// <summary>
/// Checks the bytes <c>usearch_save_buffer</c> writes (USearch 2.x dense index, vectors included) before they reach the
/// native loader, which trusts them: a node level or neighbour id out of range there reads (and later writes) outside the
/// graph's memory. Nothing is allocated in proportion to what the bytes claim.
/// </summary>
/// <remarks>
/// The layout (little-endian; <c>index_dense_gt::save</c> and <c>index_gt::save_to_stream</c> in <c>index_dense.hpp</c> and
/// <c>index.hpp</c>):
/// <code>
///   matrix := rows:u32 columns:u32 vector[rows]          columns = bytes per vector (d × scalar size); row i is slot i's
///   head   := 64 bytes: "usearch" major:u16 minor:u16 patch:u16 metric:u8 scalar:u8 key:u8 slot:u8
///             present:u64 deleted:u64 dimensions:u64 multi:u8 (zeros to 64)
///   graph  := size:u64 connectivity:u64 connectivityBase:u64 maxLevel:u64 entrySlot:u64 level:i16[size] node[size]
///   node   := key:u64 level:i16 list[level + 1]
///   list   := count:u32 slot:u32[capacity]              capacity = connectivityBase at level 0, connectivity above;
///                                                        slots past count are unused
/// </code>
/// A graph this store writes has keys 0..N−1 (one per slot, in any slot order), no deleted entries, one vector per key
/// and levels 0..maxLevel with the entry slot on the top level. Checked here: the matrix and head against each other
/// and the expected count and dimension; the scalar and metric kinds an HNSW cache memory uses; the key and slot types
/// (u64, u32); the connectivities (2 ≤ M ≤ base); every level in [0, maxLevel] and equal to its node's copy, maxLevel
/// reached, the entry slot on it; every list's count within its capacity and every neighbour a slot below size whose
/// own level reaches the list's; the keys a permutation of 0..N−1; every float vector component finite and each vector's
/// squared norm within float32's range (the store scores in float32); and the lengths adding up to exactly the buffer's. An
/// empty graph (size 0) is the head and the graph header alone.
/// </remarks>
internal static class USearchGraphLayout
{
    /// <summary>Bytes of the vector matrix's head (rows, columns) before its first row.</summary>
    internal const int MatrixHeadBytes = 8;

    /// <summary>Bytes of the index head (after the vector matrix).</summary>
    internal const int HeadBytes = 64;

    /// <summary>Bytes of the graph header (size, connectivity, base connectivity, top level, entry slot).</summary>
    internal const int GraphHeaderBytes = 40;

    /// <summary>Where the graph header's u64 fields are, from its start.</summary>
    internal const int SizeField = 0, ConnectivityField = 8, ConnectivityBaseField = 16, MaxLevelField = 24, EntryField = 32;

    /// <summary>Bytes of a node's head (key, level) before its neighbour lists.</summary>
    internal const int NodeHeadBytes = 10;

    /// <summary>Where the index head records the count of present keys (a u64).</summary>
    internal const int HeadPresentOffset = 17;
    private const byte MetricInnerProduct = (byte)'i';
    private const byte MetricCos = (byte)'c';
    private const byte ScalarBFloat16 = 4;
    private const byte ScalarFloat32 = 11;
    private const byte ScalarFloat16 = 12;
    private const byte ScalarUInt64 = 14;
    private const byte ScalarUInt32 = 15;
    private const byte ScalarInt8 = 23;

    /// <summary>
    /// Checks <paramref name="graph"/> (see the remarks) for <paramref name="count"/> keys (one per label), and for
    /// <paramref name="dimension"/> when given; returns the stored dimension, scalar kind and metric.
    /// </summary>
    /// <exception cref="ArgumentException">The bytes are not such a graph; the message names the first field that is wrong.</exception>
    public static (int Dimension, USearchNative.ScalarKind Scalar, USearchNative.MetricKind Metric) Validate(
        ReadOnlySpan<byte> graph, long count, int? dimension = null)
    {
        var reader = new Reader(graph);
        var rows = reader.UInt32("the vector matrix's row count");
        var columns = reader.UInt32("the vector matrix's column count");
        if (rows != count)
        {
            throw Invalid($"it holds {rows} keys but {count} labels were given");
        }

        var vectors = reader.Take((long)rows * columns, $"{rows} vectors of {columns} bytes");
        var head = reader.Take(HeadBytes, "the index head");
        if (!head[..7].SequenceEqual("usearch"u8))
        {
            throw Invalid("its index head does not start with \"usearch\"");
        }

        var major = BinaryPrimitives.ReadUInt16LittleEndian(head[7..]);
        if (major != 2)
        {
            throw Invalid($"it was written by USearch {major}.x; this build reads the 2.x format");
        }

        var (scalar, scalarBytes) = head[14] switch
        {
            ScalarFloat32 => (USearchNative.ScalarKind.Float32, 4),
            ScalarFloat16 => (USearchNative.ScalarKind.Float16, 2),
            ScalarBFloat16 => (USearchNative.ScalarKind.BFloat16, 2),
            ScalarInt8 => (USearchNative.ScalarKind.Int8, 1),
            var other => throw Invalid($"its scalar kind code {other} is not one an HNSW cache memory stores (f32, f16, bf16, i8)"),
        };
        var metric = head[13] switch
        {
            MetricInnerProduct => USearchNative.MetricKind.InnerProduct,
            MetricCos => USearchNative.MetricKind.Cos,
            var other => throw Invalid($"its metric code {other} is neither inner product nor cosine"),
        };
        if (head[15] != ScalarUInt64 || head[16] != ScalarUInt32)
        {
            throw Invalid($"its key and slot type codes are {head[15]} and {head[16]}; expected u64 ({ScalarUInt64}) and u32 ({ScalarUInt32})");
        }

        var present = BinaryPrimitives.ReadUInt64LittleEndian(head[HeadPresentOffset..]);
        var deleted = BinaryPrimitives.ReadUInt64LittleEndian(head[25..]);
        var dimensions = BinaryPrimitives.ReadUInt64LittleEndian(head[33..]);
        if (present != rows || deleted != 0 || head[41] != 0)
        {
            throw Invalid($"its head counts {present} present and {deleted} deleted keys (multi {head[41]}); expected {rows}, 0 and 0");
        }

        if (dimensions is 0 or > int.MaxValue || (dimension is { } d && dimensions != (ulong)d))
        {
            throw Invalid($"its head records dimension {dimensions}" + (dimension is { } e ? $"; expected {e}" : string.Empty));
        }

        if (columns != dimensions * (ulong)scalarBytes)
        {
            throw Invalid($"its vectors are {columns} bytes; {dimensions} {scalar} components are {dimensions * (ulong)scalarBytes}");
        }

        ThrowIfNotStorable(vectors, scalar, (int)columns);
        var size = reader.UInt64("the graph's node count");
        var connectivity = reader.UInt64("the graph's connectivity");
        var connectivityBase = reader.UInt64("the graph's base connectivity");
        var maxLevel = reader.UInt64("the graph's top level");
        var entry = reader.UInt64("the graph's entry slot");
        if (size != rows)
        {
            throw Invalid($"its graph has {size} nodes for {rows} vectors");
        }

        if (size > 0)
        {
            ValidateNodes(ref reader, (long)size, connectivity, connectivityBase, maxLevel, entry);
        }

        if (!reader.AtEnd)
        {
            throw Invalid($"{reader.Remaining} bytes follow its last node");
        }

        return ((int)dimensions, scalar, metric);
    }

    private static void ValidateNodes(ref Reader reader, long size, ulong connectivity, ulong connectivityBase, ulong maxLevel, ulong entry)
    {
        if (connectivity < 2 || connectivityBase < connectivity || connectivityBase > (ulong)reader.Remaining)
        {
            throw Invalid($"its connectivities are {connectivity} and {connectivityBase} (base); they must satisfy 2 ≤ M ≤ base and fit the buffer");
        }

        if (maxLevel > (ulong)short.MaxValue)
        {
            throw Invalid($"its top level is {maxLevel}");
        }

        if (entry >= (ulong)size)
        {
            throw Invalid($"its entry slot {entry} is not below its {size} nodes");
        }

        var levelBytes = reader.Take(2 * size, $"{size} node levels");
        var levels = new short[size];
        var top = -1;
        for (var i = 0; i < levels.Length; i++)
        {
            levels[i] = BinaryPrimitives.ReadInt16LittleEndian(levelBytes[(2 * i)..]);
            if (levels[i] < 0 || (ulong)levels[i] > maxLevel)
            {
                throw Invalid($"node {i} has level {levels[i]}, outside [0, {maxLevel}]");
            }

            top = Math.Max(top, levels[i]);
        }

        if ((ulong)top != maxLevel || (ulong)levels[entry] != maxLevel)
        {
            throw Invalid($"its top level is {maxLevel}, but the highest node level is {top} and the entry slot {entry} has level {levels[entry]}");
        }

        var capacityBase = (int)connectivityBase;
        var capacity = (int)connectivity;
        var keys = new bool[size];
        for (var i = 0; i < size; i++)
        {
            var nodeBytes = NodeBytes(levels[i], capacity, capacityBase);
            var node = reader.Take(nodeBytes, $"node {i}");
            var key = BinaryPrimitives.ReadUInt64LittleEndian(node);
            if (key >= (ulong)size || keys[key])
            {
                throw Invalid($"node {i} has key {key}; the keys must be the ids 0..{size - 1}, each once");
            }

            keys[key] = true;
            if (BinaryPrimitives.ReadInt16LittleEndian(node[8..]) != levels[i])
            {
                throw Invalid($"node {i} records level {BinaryPrimitives.ReadInt16LittleEndian(node[8..])}; the level table says {levels[i]}");
            }

            var list = node[NodeHeadBytes..];
            for (var level = 0; level <= levels[i]; level++)
            {
                var slots = level == 0 ? capacityBase : capacity;
                var n = BinaryPrimitives.ReadUInt32LittleEndian(list);
                if (n > (uint)slots)
                {
                    throw Invalid($"node {i} lists {n} neighbours on level {level}, more than its {slots} slots");
                }

                for (var j = 0; j < n; j++)
                {
                    var neighbour = BinaryPrimitives.ReadUInt32LittleEndian(list[(4 + (4 * j))..]);
                    if (neighbour >= size || levels[neighbour] < level)
                    {
                        throw Invalid(
                            $"node {i}'s neighbour {j} on level {level} is slot {neighbour}, " +
                            (neighbour >= size ? $"not below its {size} nodes" : $"whose level is only {levels[neighbour]}"));
                    }
                }

                list = list[(4 + (4 * slots))..];
            }
        }
    }

    /// <summary>Bytes of a node of <paramref name="level"/>: its head, level 0's list and one list a level above it.</summary>
    internal static long NodeBytes(int level, int connectivity, int connectivityBase) =>
        NodeHeadBytes + (4L * (1 + connectivityBase)) + (level * 4L * (1 + connectivity));

    /// <summary>Where a node's list of <paramref name="level"/> (its count, then its slots) starts, from the node's start.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    internal static int ListOffset(int level, int connectivity, int connectivityBase) =>
        NodeHeadBytes + (level == 0 ? 0 : (4 * (1 + connectivityBase)) + ((level - 1) * 4 * (1 + connectivity)));

    /// <summary>The graph header's u64 field at <paramref name="field"/> (one of the <c>…Field</c> offsets).</summary>
    internal static unsafe long ReadHeader(byte* header, int field) =>
        BinaryPrimitives.ReadInt64LittleEndian(new ReadOnlySpan<byte>(header + field, 8));

    private static void ThrowIfNotStorable(ReadOnlySpan<byte> vectors, USearchNative.ScalarKind scalar, int columns)
    {
        if (scalar == USearchNative.ScalarKind.Int8)
        {
            return; // int8 components are all finite, and so is any sum of their squares
        }

        var width = scalar == USearchNative.ScalarKind.Float32 ? 4 : 2;
        for (var row = 0; row < vectors.Length / columns; row++)
        {
            var vector = vectors.Slice(row * columns, columns);
            var squares = 0.0;
            for (var offset = 0; offset < columns; offset += width)
            {
                var value = scalar switch
                {
                    USearchNative.ScalarKind.Float32 => BinaryPrimitives.ReadSingleLittleEndian(vector[offset..]),
                    USearchNative.ScalarKind.Float16 => (float)BinaryPrimitives.ReadHalfLittleEndian(vector[offset..]),
                    _ => BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(vector[offset..]) << 16), // bfloat16
                };
                if (!float.IsFinite(value))
                {
                    throw Invalid($"the vector in slot {row} has a non-finite component");
                }

                squares += (double)value * value;
            }

            // The store scores in float32 and its adds refuse such keys (CacheInputs.ThrowIfNormOverflows).
            if (squares > float.MaxValue)
            {
                throw Invalid($"the vector in slot {row} has a squared norm beyond float32's range");
            }
        }
    }

    private static ArgumentException Invalid(string detail) =>
        new($"The graph bytes are not a complete USearch index of an HNSW cache memory: {detail}.", "graph");

    /// <summary>A forward cursor over the buffer that fails, naming what it wanted, instead of reading past the end.</summary>
    private ref struct Reader(ReadOnlySpan<byte> bytes)
    {
        private ReadOnlySpan<byte> _rest = bytes;

        public readonly long Remaining => _rest.Length;

        public readonly bool AtEnd => _rest.IsEmpty;

        public ReadOnlySpan<byte> Take(long length, string what)
        {
            if (length < 0 || length > _rest.Length)
            {
                throw Invalid($"it ends before {what} ({length} bytes wanted, {_rest.Length} left)");
            }

            var taken = _rest[..(int)length];
            _rest = _rest[(int)length..];
            return taken;
        }

        public uint UInt32(string what) => BinaryPrimitives.ReadUInt32LittleEndian(Take(4, what));

        public ulong UInt64(string what) => BinaryPrimitives.ReadUInt64LittleEndian(Take(8, what));
    }
}
