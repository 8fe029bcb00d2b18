using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;

namespace ScalableCache.Hnsw;

/// <summary>
/// HNSW search over a serialized USearch graph of float32 vectors under the inner-product distance <c>1 − a·b</c>, walked in
/// managed code with the next neighbour's vector prefetched while the current one is scored (USearch's C API walks without
/// prefetching, and calls a custom metric across the native/managed boundary for every distance). The bytes are those
/// <see cref="USearchGraphLayout"/> describes and has checked; the vectors and upper levels are read in place. Level 0's
/// neighbour lists, where a search spends its time, are copied once into a table of fixed stride (a 64-byte multiple, unused
/// entries <see cref="uint.MaxValue"/>), so a slot's list is found by arithmetic rather than through its node's offset, and
/// starts on a cache line (<see cref="ListBytes"/>, about 128 bytes a node at M 16; freed by <see cref="Dispose"/>).
/// </summary>
/// <remarks>
/// The walk is hnswlib's <c>searchKnn</c>: a greedy descent from the entry slot through the upper levels, then a best-first
/// search of level 0 keeping the <c>ef</c> nearest found so far, stopping when the nearest unexpanded candidate is farther
/// than the farthest of those. Thread-safe for concurrent searches, each with its own <see cref="Scratch"/>; the bytes must
/// not change or be freed while a search runs.
/// </remarks>
internal sealed unsafe class HnswGraphWalk : IDisposable
{
    /// <summary>The end of a level-0 row shorter than its stride.</summary>
    private const uint NoSlot = uint.MaxValue;

    private readonly byte* _vectors;
    private readonly long _rowBytes;
    private readonly long[] _nodes;
    private readonly uint[] _keys;
    private readonly int _connectivity;
    private readonly int _connectivityBase;
    private readonly int _maxLevel;
    private readonly int _entry;
    private readonly int _stride;
    private uint* _base0;

    /// <param name="graph">The serialized graph (checked by <see cref="USearchGraphLayout.Validate"/>, float32, inner product).</param>
    /// <param name="length">Its length in bytes.</param>
    public HnswGraphWalk(byte* graph, long length)
    {
        var rows = BinaryPrimitives.ReadUInt32LittleEndian(new ReadOnlySpan<byte>(graph, 4));
        _rowBytes = BinaryPrimitives.ReadUInt32LittleEndian(new ReadOnlySpan<byte>(graph + 4, 4));
        Dimension = (int)(_rowBytes / sizeof(float));
        _vectors = graph + USearchGraphLayout.MatrixHeadBytes;
        var header = _vectors + (rows * _rowBytes) + USearchGraphLayout.HeadBytes;
        var size = USearchGraphLayout.ReadHeader(header, USearchGraphLayout.SizeField);
        _connectivity = (int)USearchGraphLayout.ReadHeader(header, USearchGraphLayout.ConnectivityField);
        _connectivityBase = (int)USearchGraphLayout.ReadHeader(header, USearchGraphLayout.ConnectivityBaseField);
        _maxLevel = (int)USearchGraphLayout.ReadHeader(header, USearchGraphLayout.MaxLevelField);
        _entry = (int)USearchGraphLayout.ReadHeader(header, USearchGraphLayout.EntryField);
        Count = (int)size;
        _nodes = new long[size];
        _keys = new uint[size];
        var levels = (short*)(header + USearchGraphLayout.GraphHeaderBytes);
        var offset = (long)(header + USearchGraphLayout.GraphHeaderBytes - graph) + (2 * size);
        for (var slot = 0; slot < size; slot++)
        {
            _nodes[slot] = offset;
            _keys[slot] = (uint)BinaryPrimitives.ReadUInt64LittleEndian(new ReadOnlySpan<byte>(graph + offset, 8));
            offset += USearchGraphLayout.NodeBytes(levels[slot], _connectivity, _connectivityBase);
        }

        if (offset != length)
        {
            throw new ArgumentException($"The graph's nodes end at byte {offset}, not at its length {length}.", nameof(length));
        }

        Base = graph;
        _stride = Stride(_connectivityBase);
        ListBytes = size * _stride * sizeof(uint);
        _base0 = (uint*)NativeMemory.AlignedAlloc((nuint)ListBytes, 64);
        for (var slot = 0; slot < size; slot++)
        {
            var list = List(slot, 0);
            var n = (int)*list;
            var row = _base0 + ((long)slot * _stride);
            new ReadOnlySpan<uint>(list + 1, n).CopyTo(new Span<uint>(row, n));
            new Span<uint>(row + n, _stride - n).Fill(NoSlot);
        }
    }

    /// <summary>The start of the bytes walked.</summary>
    public byte* Base { get; }

    public int Count { get; }

    public int Dimension { get; }

    /// <summary>Bytes of the level-0 table (native memory beside the graph's).</summary>
    public long ListBytes { get; }

    /// <summary>Bytes of the level-0 table of a graph of <paramref name="count"/> slots with <paramref name="connectivityBase"/> neighbours at level 0.</summary>
    public static long ListBytesFor(long count, int connectivityBase) => count * Stride(connectivityBase) * sizeof(uint);

    /// <summary>Frees the level-0 table; no search may run then or after.</summary>
    public void Dispose()
    {
        if (_base0 != null)
        {
            NativeMemory.AlignedFree(_base0);
            _base0 = null;
        }
    }

    /// <summary>
    /// The <paramref name="k"/> nearest keys below <paramref name="limit"/> to <paramref name="query"/> found with a candidate
    /// list of <paramref name="expansion"/> (at least k): writes keys and distances nearest first, returns how many (fewer than
    /// k only when the graph has fewer such keys, or level 0 does not reach k of them from the entry). Keys at or above the
    /// limit (a query's older snapshot) are walked through but never returned.
    /// </summary>
    public int Search(float* query, int k, int expansion, ulong limit, Scratch scratch, ulong* keys, float* distances)
    {
        if (Count == 0 || k <= 0)
        {
            return 0;
        }

        var ef = Math.Max(expansion, k);
        var dimension = Dimension;
        var current = _entry;
        var currentDistance = Distance(query, current, dimension);
        for (var level = _maxLevel; level > 0; level--)
        {
            bool changed;
            do
            {
                changed = false;
                var list = List(current, level);
                var n = *list;
                for (var j = 1; j <= n; j++)
                {
                    var candidate = (int)list[j];
                    var d = Distance(query, candidate, dimension);
                    if (d < currentDistance)
                    {
                        currentDistance = d;
                        current = candidate;
                        changed = true;
                    }
                }
            }
            while (changed);
        }

        scratch.Begin();
        var nearest = scratch.Nearest;
        var frontier = scratch.Frontier;
        var filtered = limit < (ulong)Count;
        scratch.Visit(current);
        if (!filtered || _keys[current] < limit)
        {
            nearest.Push(currentDistance, current);
        }

        frontier.Push(-currentDistance, current);
        var bound = nearest.Count > 0 ? currentDistance : float.MaxValue;
        while (frontier.Count > 0)
        {
            var (negative, slot) = frontier.Pop();
            if (-negative > bound && nearest.Count == ef)
            {
                break;
            }

            var row = _base0 + ((long)slot * _stride);
            var next = row[0];
            if (next != NoSlot)
            {
                Prefetch(next, scratch);
            }

            for (var j = 1; next != NoSlot; j++)
            {
                var candidate = (int)next;
                next = j < _stride ? row[j] : NoSlot;
                if (next != NoSlot)
                {
                    Prefetch(next, scratch);
                }

                if (!scratch.Visit(candidate))
                {
                    continue;
                }

                var d = Distance(query, candidate, dimension);
                if (nearest.Count < ef || d < bound)
                {
                    frontier.Push(-d, candidate);
                    Touch(_base0 + ((long)frontier.TopSlot * _stride));
                    if (!filtered || _keys[candidate] < limit)
                    {
                        nearest.Push(d, candidate);
                        if (nearest.Count > ef)
                        {
                            nearest.Pop();
                        }

                        bound = nearest.TopKey;
                    }
                }
            }
        }

        while (nearest.Count > k)
        {
            nearest.Pop();
        }

        var found = nearest.Count;
        for (var i = found - 1; i >= 0; i--)
        {
            var (d, slot) = nearest.Pop();
            keys[i] = _keys[slot];
            distances[i] = d;
        }

        return found;
    }

    /// <summary>Starts loading a slot's vector (its first cache line; the hardware streams the rest) and its visit mark.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Prefetch(uint slot, Scratch scratch)
    {
        Touch(Row(slot));
        scratch.PrefetchMark((int)slot);
    }

    /// <summary>A prefetch hint where the CPU has one (x86); nothing elsewhere.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Touch(void* address)
    {
        if (Sse.IsSupported)
        {
            Sse.Prefetch0(address);
        }
    }

    /// <summary>Level-0 table entries a row: room for <paramref name="connectivityBase"/>, rounded up to whole cache lines.</summary>
    private static int Stride(int connectivityBase) => (connectivityBase + 15) / 16 * 16;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private float* Row(uint slot) => (float*)(_vectors + (slot * _rowBytes));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private float Distance(float* query, int slot, int dimension) =>
        InnerProductKernel.Distance(query, Row((uint)slot), dimension);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private uint* List(int slot, int level) =>
        (uint*)(Base + Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_nodes), slot) + USearchGraphLayout.ListOffset(level, _connectivity, _connectivityBase));

    /// <summary>Per-search state: visit marks (a generation per slot) and the two heaps; one per thread, reused.</summary>
    public sealed class Scratch
    {
        [ThreadStatic]
        private static Scratch? t_current;

        private readonly int[] _visited;
        private int _generation;

        private Scratch(int count)
        {
            _visited = GC.AllocateArray<int>(count, pinned: true);
        }

        public Heap Nearest { get; } = new(256);

        public Heap Frontier { get; } = new(1024);

        /// <summary>This thread's scratch, with room for graphs of <paramref name="count"/> slots (marks of any earlier search never match).</summary>
        public static Scratch For(int count)
        {
            var scratch = t_current;
            if (scratch is null || scratch._visited.Length < count)
            {
                t_current = scratch = new Scratch(Math.Max(count, (scratch?._visited.Length ?? 0) * 5 / 4));
            }

            return scratch;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public void PrefetchMark(int slot) =>
            Touch((int*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(_visited)) + slot);

        public void Begin()
        {
            Nearest.Clear();
            Frontier.Clear();
            if (++_generation == int.MaxValue)
            {
                Array.Clear(_visited);
                _generation = 1;
            }
        }

        /// <summary>Marks <paramref name="slot"/> visited; false when it already was.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public bool Visit(int slot)
        {
            ref var mark = ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_visited), slot);
            if (mark == _generation)
            {
                return false;
            }

            mark = _generation;
            return true;
        }
    }

    /// <summary>A max-heap of (key, slot) by key, growing as needed.</summary>
    public sealed class Heap(int capacity)
    {
        private float[] _keys = new float[capacity];
        private int[] _slots = new int[capacity];

        public int Count { get; private set; }

        public float TopKey => _keys[0];

        public int TopSlot => _slots[0];

        public void Clear() => Count = 0;

        public void Push(float key, int slot)
        {
            if (Count == _keys.Length)
            {
                Array.Resize(ref _keys, Count * 2);
                Array.Resize(ref _slots, Count * 2);
            }

            var i = Count++;
            while (i > 0)
            {
                var parent = (i - 1) >> 1;
                if (_keys[parent] >= key)
                {
                    break;
                }

                _keys[i] = _keys[parent];
                _slots[i] = _slots[parent];
                i = parent;
            }

            _keys[i] = key;
            _slots[i] = slot;
        }

        public (float Key, int Slot) Pop()
        {
            var top = (_keys[0], _slots[0]);
            var last = --Count;
            var key = _keys[last];
            var slot = _slots[last];
            var i = 0;
            while (true)
            {
                var child = (2 * i) + 1;
                if (child >= last)
                {
                    break;
                }

                if (child + 1 < last && _keys[child + 1] > _keys[child])
                {
                    child++;
                }

                if (_keys[child] <= key)
                {
                    break;
                }

                _keys[i] = _keys[child];
                _slots[i] = _slots[child];
                i = child;
            }

            if (last > 0)
            {
                _keys[i] = key;
                _slots[i] = slot;
            }

            return top;
        }
    }
}
