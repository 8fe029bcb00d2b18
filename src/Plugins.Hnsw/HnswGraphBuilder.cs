using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.ExceptionServices;

namespace ScalableCache.Hnsw;

/// <summary>
/// Inserts float32 keys into an HNSW graph in managed code, writing the result straight into one native block in the byte
/// layout <see cref="USearchGraphLayout"/> describes (the layout USearch serializes, views and loads), so that the block is at
/// once the settled graph the walk reads (<see cref="HnswGraphWalk"/>) and what a later add loads back into USearch. The
/// graph starts from a serialized one — USearch's serialization of an empty index (which supplies the head and the
/// connectivities), or an earlier block — whose vectors, levels and nodes are copied in front of the new ones.
/// </summary>
/// <remarks>
/// <para>The insertion is USearch 2.x's (<c>index_gt::add</c>, which follows hnswlib): a level drawn as
/// <c>⌊−ln U / ln M⌋</c>; a greedy descent from the entry slot to the level above the new node's; then on each of its levels a
/// best-first search keeping <c>ExpansionAdd</c> candidates (<c>search_to_insert_</c>), the new node's list formed from them
/// by the paper's heuristic (<c>refine_</c>: nearest first, a candidate kept unless closer to one already kept than to the new
/// node; at most M on every level), and reverse links added to each of those neighbours, a full list (M above level 0, the
/// base connectivity on it) re-chosen by the same heuristic among its members and the new node. Distances are the library's
/// float32 kernel, the one USearch is handed as its metric, so the same graph is scored the same way by both.</para>
/// <para>What USearch's C API cannot do here: the next unvisited neighbour's vector and visit mark are prefetched while the
/// current one is scored, and the kernel is inlined rather than called across the native boundary for every distance.</para>
/// <para>Threads: the keys are inserted concurrently in slot order by up to the given number of workers. A node's lists are
/// read (copied out) and written under its own spin lock; a node whose level exceeds the graph's holds the global lock for
/// its whole insertion, as in USearch, and becomes the entry at its end.</para>
/// </remarks>
internal sealed unsafe class HnswGraphBuilder
{
    private readonly byte* _previous;
    private readonly long _previousCount;
    private readonly long _rowBytes;
    private readonly int _connectivity;
    private readonly int _connectivityBase;
    private readonly long _previousNodesOffset;
    private readonly long _previousNodesBytes;
    private readonly short[] _newLevels;
    private readonly ulong _firstKey;

    /// <param name="previous">
    /// A serialized graph (float32, inner product): USearch's serialization of the empty index, or an earlier block. It is read
    /// again by <see cref="Write"/>, so it must neither move nor be freed before that returns.
    /// </param>
    /// <param name="previousLength">Its length in bytes.</param>
    /// <param name="added">How many keys the new block adds after the previous graph's.</param>
    /// <param name="firstKey">The key of the first added row (the others follow it).</param>
    /// <param name="seed">Seeds the draw of the added nodes' levels.</param>
    public HnswGraphBuilder(byte* previous, long previousLength, int added, ulong firstKey, int seed)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(added);
        _previous = previous;
        _previousCount = BinaryPrimitives.ReadUInt32LittleEndian(new ReadOnlySpan<byte>(previous, 4));
        _rowBytes = BinaryPrimitives.ReadUInt32LittleEndian(new ReadOnlySpan<byte>(previous + 4, 4));
        Dimension = (int)(_rowBytes / sizeof(float));
        var header = previous + USearchGraphLayout.MatrixHeadBytes + (_previousCount * _rowBytes) + USearchGraphLayout.HeadBytes;
        _connectivity = (int)USearchGraphLayout.ReadHeader(header, USearchGraphLayout.ConnectivityField);
        _connectivityBase = (int)USearchGraphLayout.ReadHeader(header, USearchGraphLayout.ConnectivityBaseField);
        _previousNodesOffset = header + USearchGraphLayout.GraphHeaderBytes + (2 * _previousCount) - previous;
        _previousNodesBytes = previousLength - _previousNodesOffset;
        _firstKey = firstKey;
        Count = _previousCount + added;
        if (Count > uint.MaxValue - 1)
        {
            throw new NotSupportedException($"A graph holds fewer than {uint.MaxValue} keys; {Count} were asked for.");
        }

        var random = new Random(seed);
        var inverseLog = 1.0 / Math.Log(_connectivity);
        _newLevels = new short[added];
        long nodeBytes = 0;
        for (var i = 0; i < added; i++)
        {
            var level = (short)Math.Min(short.MaxValue, (int)(-Math.Log(1.0 - random.NextDouble()) * inverseLog));
            _newLevels[i] = level;
            nodeBytes += USearchGraphLayout.NodeBytes(level, _connectivity, _connectivityBase);
        }

        Length = USearchGraphLayout.MatrixHeadBytes + (Count * _rowBytes) + USearchGraphLayout.HeadBytes +
            USearchGraphLayout.GraphHeaderBytes + (2 * Count) + _previousNodesBytes + nodeBytes;
    }

    public int Dimension { get; }

    /// <summary>Keys in the new block: the previous graph's and the added ones.</summary>
    public long Count { get; }

    /// <summary>Bytes of the new block.</summary>
    public long Length { get; }

    /// <summary>Where, in a new block at <paramref name="block"/>, the added keys' vectors go: one after another, float32 rows.</summary>
    public byte* AddedRows(byte* block) => block + USearchGraphLayout.MatrixHeadBytes + (_previousCount * _rowBytes);

    /// <summary>
    /// Writes the rest of the new block at <paramref name="block"/> (<see cref="Length"/> bytes), whose added rows the caller
    /// has copied to <see cref="AddedRows"/>: the previous graph's vectors, head, levels and nodes, then the added keys'
    /// nodes, inserted with <paramref name="expansionAdd"/> candidates by up to <paramref name="threads"/> workers.
    /// </summary>
    public void Write(byte* block, int expansionAdd, int threads)
    {
        var count = Count;
        var previousCount = _previousCount;
        *(uint*)block = (uint)count;
        *(uint*)(block + 4) = (uint)_rowBytes;
        var vectors = block + USearchGraphLayout.MatrixHeadBytes;
        Buffer.MemoryCopy(_previous + USearchGraphLayout.MatrixHeadBytes, vectors, previousCount * _rowBytes, previousCount * _rowBytes);

        var previousHead = _previous + USearchGraphLayout.MatrixHeadBytes + (previousCount * _rowBytes);
        var head = vectors + (count * _rowBytes);
        Buffer.MemoryCopy(previousHead, head, USearchGraphLayout.HeadBytes, USearchGraphLayout.HeadBytes); // the graph header is written at the end
        BinaryPrimitives.WriteUInt64LittleEndian(new Span<byte>(head + USearchGraphLayout.HeadPresentOffset, 8), (ulong)count);
        var header = head + USearchGraphLayout.HeadBytes;
        var previousHeader = previousHead + USearchGraphLayout.HeadBytes;
        var entry = previousCount > 0 ? (int)USearchGraphLayout.ReadHeader(previousHeader, USearchGraphLayout.EntryField) : 0;
        var maxLevel = previousCount > 0 ? (int)USearchGraphLayout.ReadHeader(previousHeader, USearchGraphLayout.MaxLevelField) : _newLevels.Length > 0 ? _newLevels[0] : 0;

        var levels = (short*)(header + USearchGraphLayout.GraphHeaderBytes);
        Buffer.MemoryCopy(previousHeader + USearchGraphLayout.GraphHeaderBytes, levels, 2 * previousCount, 2 * previousCount);
        _newLevels.AsSpan().CopyTo(new Span<short>(levels + previousCount, _newLevels.Length));
        var nodes = (byte*)(levels + count);
        Buffer.MemoryCopy(_previous + _previousNodesOffset, nodes, _previousNodesBytes, _previousNodesBytes);

        var offsets = new long[count];
        var offset = nodes - block;
        for (long slot = 0; slot < count; slot++)
        {
            offsets[slot] = offset;
            var bytes = USearchGraphLayout.NodeBytes(levels[slot], _connectivity, _connectivityBase);
            if (slot >= previousCount)
            {
                var node = block + offset;
                new Span<byte>(node, (int)bytes).Clear();
                *(ulong*)node = _firstKey + (ulong)(slot - previousCount);
                *(short*)(node + 8) = levels[slot];
            }

            offset += bytes;
        }

        if (offset != Length)
        {
            throw new InvalidOperationException($"The nodes end at byte {offset}, not at the block's length {Length}.");
        }

        var graph = new Graph(block, vectors, _rowBytes, Dimension, offsets, levels, _connectivity, _connectivityBase, entry, maxLevel);
        var first = previousCount == 0 ? 1 : previousCount; // the first node of an empty graph is its entry, with no links
        if (count > first)
        {
            graph.InsertAll(first, count, Math.Max(expansionAdd, _connectivityBase + 1), Math.Max(1, threads));
        }

        WriteHeader(header, USearchGraphLayout.SizeField, count);
        WriteHeader(header, USearchGraphLayout.ConnectivityField, _connectivity);
        WriteHeader(header, USearchGraphLayout.ConnectivityBaseField, _connectivityBase);
        WriteHeader(header, USearchGraphLayout.MaxLevelField, graph.MaxLevel);
        WriteHeader(header, USearchGraphLayout.EntryField, graph.Entry);
    }

    private static void WriteHeader(byte* header, int field, long value) =>
        BinaryPrimitives.WriteInt64LittleEndian(new Span<byte>(header + field, 8), value);

    /// <summary>The graph being built: node offsets, per-node locks, the entry and the insertion.</summary>
    private sealed class Graph(
        byte* block, byte* vectors, long rowBytes, int dimension, long[] offsets, short* levels, int connectivity, int connectivityBase, int entry, int maxLevel)
    {
        private readonly int[] _locks = new int[offsets.Length];
        private readonly Lock _global = new();
        private volatile int _entry = entry;
        private volatile int _maxLevel = maxLevel;

        public int Entry => _entry;

        public int MaxLevel => _maxLevel;

        public void InsertAll(long first, long end, int expansion, int threads)
        {
            var next = first - 1;
            var failed = false;
            try
            {
                Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, _ =>
                {
                    var scratch = new Scratch(offsets.Length, expansion, connectivityBase);
                    try
                    {
                        long slot;
                        while (!Volatile.Read(ref failed) && (slot = Interlocked.Increment(ref next)) < end)
                        {
                            Insert((int)slot, scratch);
                        }
                    }
                    catch
                    {
                        Volatile.Write(ref failed, true);
                        throw;
                    }
                });
            }
            catch (AggregateException e) when (e.InnerExceptions.Count > 0)
            {
                ExceptionDispatchInfo.Capture(e.InnerExceptions[0]).Throw();
            }
        }

        private void Insert(int slot, Scratch scratch)
        {
            var level = (int)levels[slot];
            var query = Row((uint)slot);
            var holding = false;
            _global.Enter();
            int entrySlot, top;
            try
            {
                entrySlot = _entry;
                top = _maxLevel;
                holding = level > top;
            }
            finally
            {
                if (!holding)
                {
                    _global.Exit();
                }
            }

            try
            {
                var current = entrySlot;
                var currentDistance = Distance(query, Row((uint)current));
                var buffer = scratch.List;
                for (var l = top; l > level; l--)
                {
                    bool changed;
                    do
                    {
                        changed = false;
                        var n = CopyList(current, l, buffer);
                        for (var j = 0; j < n; j++)
                        {
                            var candidate = (int)buffer[j];
                            var d = Distance(query, Row((uint)candidate));
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

                for (var l = Math.Min(level, top); l >= 0; l--)
                {
                    var found = SearchLayer(query, current, l, scratch);
                    var kept = Refine(scratch.Distances, scratch.Slots, found, connectivity);
                    Lock(slot);
                    var list = List(slot, l);
                    for (var j = 0; j < kept; j++)
                    {
                        list[1 + j] = (uint)scratch.Slots[j];
                    }

                    list[0] = (uint)kept;
                    Unlock(slot);
                    current = scratch.Slots[0];
                    new ReadOnlySpan<int>(scratch.Slots, 0, kept).CopyTo(scratch.Chosen);
                    for (var j = 0; j < kept; j++)
                    {
                        LinkBack(scratch.Chosen[j], slot, l, scratch);
                    }
                }

                if (holding)
                {
                    _entry = slot;
                    _maxLevel = level;
                }
            }
            finally
            {
                if (holding)
                {
                    _global.Exit();
                }
            }
        }

        /// <summary>USearch's <c>search_to_insert_</c>: the best-first search of one level; leaves the found candidates nearest first in the scratch's arrays.</summary>
        private int SearchLayer(float* query, int start, int level, Scratch scratch)
        {
            var limit = scratch.Expansion;
            var marks = scratch.Walk;
            marks.Begin();
            var top = marks.Nearest;
            var next = marks.Frontier;
            var buffer = scratch.List;
            var radius = Distance(query, Row((uint)start));
            next.Push(-radius, start);
            top.Push(radius, start);
            marks.Visit(start);
            while (next.Count > 0)
            {
                var (negative, candidate) = next.Pop();
                if (-negative > radius && top.Count == limit)
                {
                    break;
                }

                var n = CopyList(candidate, level, buffer);
                for (var j = 0; j < n; j++)
                {
                    if (j + 1 < n)
                    {
                        HnswGraphWalk.Touch(Row(buffer[j + 1]));
                        marks.PrefetchMark((int)buffer[j + 1]);
                    }

                    var successor = (int)buffer[j];
                    if (!marks.Visit(successor))
                    {
                        continue;
                    }

                    var d = Distance(query, Row((uint)successor));
                    if (top.Count < limit || d < radius)
                    {
                        next.Push(-d, successor);
                        top.Push(d, successor);
                        if (top.Count > limit)
                        {
                            top.Pop();
                        }

                        radius = top.TopKey;
                        HnswGraphWalk.Touch(List(next.TopSlot, level));
                    }
                }
            }

            var found = top.Count;
            for (var i = found - 1; i >= 0; i--)
            {
                var (d, s) = top.Pop();
                scratch.Distances[i] = d;
                scratch.Slots[i] = s;
            }

            return found;
        }

        /// <summary>Adds <paramref name="slot"/> to <paramref name="neighbour"/>'s list on <paramref name="level"/>, re-choosing a full list by the heuristic.</summary>
        private void LinkBack(int neighbour, int slot, int level, Scratch scratch)
        {
            var capacity = level == 0 ? connectivityBase : connectivity;
            Lock(neighbour);
            try
            {
                var list = List(neighbour, level);
                var n = (int)list[0];
                for (var j = 1; j <= n; j++)
                {
                    if (list[j] == (uint)slot)
                    {
                        return;
                    }
                }

                if (n < capacity)
                {
                    list[1 + n] = (uint)slot;
                    list[0] = (uint)(n + 1);
                    return;
                }

                var centre = Row((uint)neighbour);
                var distances = scratch.Distances;
                var slots = scratch.Slots;
                distances[0] = Distance(centre, Row((uint)slot));
                slots[0] = slot;
                for (var j = 0; j < n; j++)
                {
                    slots[1 + j] = (int)list[1 + j];
                    distances[1 + j] = Distance(centre, Row(list[1 + j]));
                }

                SortAscending(distances, slots, n + 1);
                var kept = Refine(distances, slots, n + 1, capacity);
                for (var j = 0; j < kept; j++)
                {
                    list[1 + j] = (uint)slots[j];
                }

                list[0] = (uint)kept;
            }
            finally
            {
                Unlock(neighbour);
            }
        }

        /// <summary>
        /// USearch's <c>refine_</c> over candidates sorted nearest first: keeps the first, then each candidate not closer to
        /// one already kept than to the centre, up to <paramref name="needed"/>; all of them when there are fewer. Returns how many, kept in front.
        /// </summary>
        private int Refine(float[] distances, int[] slots, int count, int needed)
        {
            if (count < needed)
            {
                return count;
            }

            var submitted = 1;
            for (var consumed = 1; submitted < needed && consumed < count; consumed++)
            {
                var candidate = Row((uint)slots[consumed]);
                var distance = distances[consumed];
                var good = true;
                for (var i = 0; i < submitted; i++)
                {
                    if (Distance(candidate, Row((uint)slots[i])) < distance)
                    {
                        good = false;
                        break;
                    }
                }

                if (good)
                {
                    distances[submitted] = distance;
                    slots[submitted] = slots[consumed];
                    submitted++;
                }
            }

            return submitted;
        }

        private static void SortAscending(float[] distances, int[] slots, int count)
        {
            for (var i = 1; i < count; i++)
            {
                var d = distances[i];
                var s = slots[i];
                var j = i - 1;
                while (j >= 0 && distances[j] > d)
                {
                    distances[j + 1] = distances[j];
                    slots[j + 1] = slots[j];
                    j--;
                }

                distances[j + 1] = d;
                slots[j + 1] = s;
            }
        }

        /// <summary>Copies <paramref name="slot"/>'s list on <paramref name="level"/> into <paramref name="buffer"/> under its lock; returns its length.</summary>
        private int CopyList(int slot, int level, uint[] buffer)
        {
            Lock(slot);
            var list = List(slot, level);
            var n = (int)list[0];
            new ReadOnlySpan<uint>(list + 1, n).CopyTo(buffer);
            Unlock(slot);
            return n;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private void Lock(int slot)
        {
            ref var mark = ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_locks), slot);
            if (Interlocked.CompareExchange(ref mark, 1, 0) != 0)
            {
                var spin = default(SpinWait);
                while (Interlocked.CompareExchange(ref mark, 1, 0) != 0)
                {
                    spin.SpinOnce(sleep1Threshold: -1);
                }
            }
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private void Unlock(int slot) => Volatile.Write(ref Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_locks), slot), 0);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private float* Row(uint slot) => (float*)(vectors + (slot * rowBytes));

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private float Distance(float* a, float* b) => InnerProductKernel.Distance(a, b, dimension);

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private uint* List(int slot, int level) =>
            (uint*)(block + offsets[slot] + USearchGraphLayout.ListOffset(level, connectivity, connectivityBase));
    }

    /// <summary>One worker's candidate arrays and list buffer (visit marks and heaps are the walk's, per thread).</summary>
    private sealed class Scratch(int count, int expansion, int connectivityBase)
    {
        public HnswGraphWalk.Scratch Walk { get; } = HnswGraphWalk.Scratch.For(count);

        public int Expansion { get; } = expansion;

        public float[] Distances { get; } = new float[Math.Max(expansion, connectivityBase + 1) + 1];

        public int[] Slots { get; } = new int[Math.Max(expansion, connectivityBase + 1) + 1];

        public int[] Chosen { get; } = new int[connectivityBase + 1];

        public uint[] List { get; } = new uint[connectivityBase];
    }
}
