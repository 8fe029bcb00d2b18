using ScalableCache.Core;
using System.Runtime.CompilerServices;
using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Hnsw;

/// <summary>
/// HNSW key store over the USearch native index. Key id <c>k</c> (a USearch key) is the k-th row ever added; its label
/// lives in a managed array at index <c>k</c>. Similarity is <c>1 − distance</c> of USearch's inner-product metric
/// (<c>distance = 1 − a·b</c>); for <see cref="HnswScalarKind.Int8"/> the cosine metric, which equals the inner product
/// on the contract's unit keys.
/// </summary>
/// <remarks>
/// <para><b>Native threading.</b> The C++ index holds a fixed pool of per-thread contexts; every <c>usearch_add</c> and
/// <c>usearch_search</c> borrows one and fails when none is free. After each <c>usearch_reserve</c> (which resets the
/// pool to the hardware thread count) the pool is set to <c>T = Options.EffectiveThreads</c> for adds and searches, and a
/// semaphore with <c>T</c> permits gates every native add/search call, whichever thread makes it. Bulk adds run as a
/// <see cref="Parallel.For(int, int, ParallelOptions, Action{int})"/> over rows with at most <c>T</c> workers, each calling
/// <c>usearch_add</c> concurrently (the graph locks nodes internally); queries run the same way over the batch.</para>
/// <para><b>Capacity.</b> Room is reserved before inserting (exactly the needed count on the first add, then growth by
/// half). <c>usearch_reserve</c> reallocates and must not overlap any other native call, so it takes the write side of a
/// reader–writer lock whose read side every add batch and query batch holds.</para>
/// <para><b>Snapshots.</b> <see cref="Add"/> calls are serialised. Labels are written, then the keys inserted, then a new
/// immutable <see cref="Snapshot"/> (count, labels array) is published with one reference write. A query reads the
/// snapshot once and considers only key ids below its count: if a plain search returns a key of a concurrent, unpublished
/// add, that query is searched again with a native filter admitting ids below the count. A query therefore sees all rows
/// of an <see cref="Add"/> or none.</para>
/// <para><b>Exhaustive queries.</b> When TopK ≥ the snapshot count and the graph walk returns fewer keys (HNSW graphs of
/// clustered data need not be connected), the missed keys are read back (<c>usearch_get</c>) and scored directly, so the
/// result is the exact full log-mass. A USearch walk that returns nothing although keys are published (it can, beside a
/// concurrent add whose first node became the entry before it was linked) is answered the same way: the top-k by direct
/// scoring of the published keys.</para>
/// <para><b>Settled graphs.</b> With <see cref="HnswCacheOptions.ManagedSearch"/> (float32 keys, float32 kernel), an add
/// that grew the graph by a quarter or more since it last settled (the first add always does), and a load, end by
/// serializing the graph into one native block: the index becomes a read-only USearch view of that block and searches walk
/// it in managed code (<see cref="HnswGraphWalk"/>). The next add first loads the block back into an editable index (and
/// frees it), so adds in between search with USearch. The switch swaps the index under the write side of the same lock, so
/// no search runs across it; when the block would not fit in available memory the graph stays editable.</para>
/// <para><b>Managed insertion.</b> With <see cref="HnswCacheOptions.ManagedBuild"/>, an add that will settle and finds the
/// graph empty or settled inserts its keys in managed code straight into the new block (<see cref="HnswGraphBuilder"/>:
/// USearch's insertion, with prefetching, after the earlier block's keys), which USearch then views as above; searches keep
/// reading the old graph meanwhile. When the block cannot be made it falls back to the path above.</para>
/// </remarks>
internal sealed unsafe partial class HnswCacheMemory : IHnswCacheMemory
{
    /// <summary>Bytes of keys per chunk handed to the native add (bounds the size of one span over tensor memory).</summary>
    private const int AddChunkBytes = 256 << 20;

    /// <summary>A graph that grew by this fraction since it last settled (1/4) settles again after the add.</summary>
    private const int SettleGrowthDivisor = 4;

    private USearchIndexHandle _handle;
    private nint _index;
    private SettledGraph? _settled;
    private long _settledCount;
    private readonly int _threads;
    private readonly SemaphoreSlim _slots;
    private readonly ReaderWriterLockSlim _resize = new(LockRecursionPolicy.NoRecursion);
    private readonly Lock _writeGate = new();
    private readonly HnswCacheOptions _options;
    private volatile Snapshot _snapshot;
    private long _capacity;
    private int[] _labelBuffer;
    private bool _disposed;
    private long _filteredSearches;
    private long _exhaustiveCompletions;

    private HnswCacheMemory(USearchIndexHandle handle, int dimension, int classCount, HnswCacheOptions options, int[] labels, long count)
    {
        _handle = handle;
        _index = handle.DangerousGetHandle();
        _options = options;
        _threads = options.EffectiveThreads;
        _slots = new SemaphoreSlim(_threads, _threads);
        Dimension = dimension;
        ClassCount = classCount;
        _labelBuffer = labels;
        _snapshot = new Snapshot(count, labels);
        ConfigureSearch(_index, dimension, options);
    }

    public string Provider => HnswCacheMemoryFactory.ProviderName;

    public int Dimension { get; }

    public int ClassCount { get; }

    public long Count => _snapshot.Count;

    public HnswCacheOptions Options => _options.Clone();

    /// <summary>Queries that met keys of an unpublished add and were searched again with the snapshot filter.</summary>
    internal long FilteredSearches => Interlocked.Read(ref _filteredSearches);

    /// <summary>Whether the graph is settled: searches walk it in managed code (see the class remarks).</summary>
    internal bool IsSettled => _settled is not null;

    /// <summary>How many adds were inserted by the managed insertion (test hook).</summary>
    internal int ManagedInsertions { get; private set; }

    /// <summary>Of a settled graph: whether its vectors start on a cache line, and the bytes of the walk's level-0 table (a test hook).</summary>
    internal (bool VectorsAligned, long TableBytes)? SettledLayout =>
        _settled is { } settled ? (((nint)(settled.Bytes + USearchGraphLayout.MatrixHeadBytes) & 63) == 0, settled.Walk?.ListBytes ?? 0) : null;

    /// <summary>
    /// Queries whose graph walk missed keys that were then scored directly: with TopK ≥ Count, or when USearch's walk came
    /// back empty beside a concurrent add.
    /// </summary>
    internal long ExhaustiveCompletions => Interlocked.Read(ref _exhaustiveCompletions);

    public long NativeMemoryBytes
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _resize.EnterReadLock();
            try
            {
                nint error = 0;
                var bytes = USearchNative.MemoryUsage(_index, ref error);
                USearchNative.Check(error, "memory_usage");
                return (long)bytes + (_settled?.NativeBytes ?? 0);
            }
            finally
            {
                _resize.ExitReadLock();
            }
        }
    }

    /// <inheritdoc />
    public string HardwareAcceleration
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _resize.EnterReadLock();
            try
            {
                nint error = 0;
                var name = USearchNative.HardwareAcceleration(_index, ref error);
                USearchNative.Check(error, "hardware_acceleration");
                return Marshal.PtrToStringUTF8(name) ?? "unknown";
            }
            finally
            {
                _resize.ExitReadLock();
            }
        }
    }

    /// <inheritdoc />
    public void TuneSearch(int topK, int expansionSearch)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentOutOfRangeException.ThrowIfLessThan(topK, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(expansionSearch, topK, nameof(expansionSearch));
        _resize.EnterWriteLock(); // waits for running searches; later ones see both new values
        try
        {
            nint error = 0;
            USearchNative.ChangeExpansionSearch(_index, (nuint)expansionSearch, ref error);
            USearchNative.Check(error, "change_expansion_search");
            _options.ExpansionSearch = expansionSearch;
            _options.TopK = topK;
        }
        finally
        {
            _resize.ExitWriteLock();
        }
    }

    /// <summary>Creates an empty memory; <paramref name="options"/> is copied and validated.</summary>
    public static HnswCacheMemory Create(int dimension, int classCount, HnswCacheOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfLessThan(dimension, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(classCount, 1);
        options = ValidatedCopy(options);

        var handle = USearchIndexHandle.Create(InitOptionsFor(dimension, options));
        try
        {
            var memory = new HnswCacheMemory(handle, dimension, classCount, options, [], 0);
            if (options.InitialCapacity > 0)
            {
                lock (memory._writeGate)
                {
                    memory.EnsureCapacity(options.InitialCapacity);
                }
            }
            else
            {
                memory.ApplyThreadLimits();
            }

            return memory;
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Restores a memory from <see cref="SaveGraph"/> output without rebuilding the graph. Dimension, metric and scalar
    /// kind come from the graph bytes (the stored scalar kind overrides <paramref name="options"/>); search settings and
    /// threads come from <paramref name="options"/>. The bytes are checked whole (<see cref="USearchGraphLayout"/>) before
    /// the native library sees them, for <c>labels.Length</c> keys and, when given, <paramref name="dimension"/>.
    /// </summary>
    public static HnswCacheMemory Load(ReadOnlySpan<byte> graph, ReadOnlySpan<int> labels, int classCount, HnswCacheOptions options, int? dimension = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfLessThan(classCount, 1);
        if (graph.IsEmpty)
        {
            throw new ArgumentException("The graph bytes are empty.", nameof(graph));
        }

        options = ValidatedCopy(options);
        for (var row = 0; row < labels.Length; row++)
        {
            if ((uint)labels[row] >= (uint)classCount)
            {
                throw new ArgumentException(
                    $"Label {labels[row]} of key {row} is outside [0, {classCount}).", nameof(labels));
            }
        }

        var layout = USearchGraphLayout.Validate(graph, labels.Length, dimension);
        options.ScalarKind = FromNative(layout.Scalar);
        var expectedMetric = MetricFor(options.ScalarKind);
        if (layout.Metric != expectedMetric)
        {
            throw new ArgumentException(
                $"The graph uses metric {layout.Metric}; an HNSW cache memory with {options.ScalarKind} keys uses {expectedMetric}.",
                nameof(graph));
        }

        SettledGraph? settled = null;
        if (Settles(options) && labels.Length > 0 && SettledGraph.Fits(graph.Length, labels.Length, options))
        {
            settled = SettledGraph.Copy(graph);
        }

        nint error = 0;
        var handle = USearchIndexHandle.Create(InitOptionsFor(layout.Dimension, options));
        try
        {
            var index = handle.DangerousGetHandle();
            if (settled is not null)
            {
                USearchNative.ViewBuffer(index, settled.Bytes, (nuint)settled.Length, ref error);
                ThrowIfNotAGraph(error, "view_buffer");
            }
            else
            {
                fixed (byte* bytes = graph)
                {
                    USearchNative.LoadBuffer(index, bytes, (nuint)graph.Length, ref error);
                }

                ThrowIfNotAGraph(error, "load_buffer");
            }

            var size = (long)USearchNative.Size(index, ref error);
            USearchNative.Check(error, "size");
            if (size != labels.Length)
            {
                throw new ArgumentException(
                    $"The graph holds {size} keys but {labels.Length} labels were given.", nameof(labels));
            }

            var memory = new HnswCacheMemory(handle, layout.Dimension, classCount, options, labels.ToArray(), size);
            lock (memory._writeGate)
            {
                if (settled is not null)
                {
                    // A view cannot reserve; room is reserved when the next add loads the graph back.
                    memory._settled = settled;
                    memory._settledCount = size;
                    memory._capacity = size;
                    settled = null;
                }
                else
                {
                    memory.EnsureCapacity(Math.Max(size, options.InitialCapacity));
                }

                memory.ApplyThreadLimits();
            }

            return memory;
        }
        catch
        {
            handle.Dispose();
            settled?.Dispose();
            throw;
        }
    }

    public void Add(Tensor keys, Tensor labels)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var n = CacheInputs.CheckAddShapes(keys, labels, Dimension);

        if (n == 0)
        {
            return;
        }

        using var scope = NewDisposeScope();
        var rows = keys.detach().cpu().contiguous();
        CacheInputs.ThrowIfNonFinite(rows, nameof(keys), "; nothing was added");
        CacheInputs.ThrowIfNormOverflows(rows, nameof(keys), "; nothing was added");
        var labelValues = CacheInputs.CheckedLabels(labels, ClassCount).contiguous().data<long>().ToArray();

        lock (_writeGate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var start = _snapshot.Count;
            var settles = Settles(_options) && start + n - _settledCount >= Math.Max(1, _settledCount / SettleGrowthDivisor);
            if (settles && _options.ManagedBuild && (start == 0 || _settled is not null) && TryBuildSettled(rows, labelValues, start))
            {
                return;
            }

            if (_settled is not null)
            {
                Unsettle();
            }

            EnsureCapacity(start + n);
            var buffer = _labelBuffer;
            for (var row = 0; row < labelValues.Length; row++)
            {
                buffer[start + row] = (int)labelValues[row];
            }

            InsertRows(rows, start);
            _snapshot = new Snapshot(start + n, buffer);
            if (settles)
            {
                Settle();
            }
        }
    }

    /// <summary>
    /// Inserts <paramref name="rows"/> in managed code into a new settled block (<see cref="HnswGraphBuilder"/>): after the
    /// settled graph's keys, or into USearch's serialization of the empty index; under the write gate. Searches keep reading
    /// the current graph until the new one is swapped in. False (nothing changed) when the block would not fit in available
    /// memory or could not be made; the add then goes through USearch.
    /// </summary>
    private bool TryBuildSettled(Tensor rows, long[] labelValues, long start)
    {
        var n = rows.shape[0];
        var total = start + n;
        if (total > Array.MaxLength)
        {
            return false;
        }

        SettledGraph? settled = null;
        USearchIndexHandle? view = null;
        try
        {
            HnswGraphBuilder builder;
            byte[]? empty = null; // pinned (it never moves) and kept alive until the builder has written the block
            if (_settled is { } previous)
            {
                builder = new HnswGraphBuilder(previous.Bytes, previous.Length, (int)n, (ulong)start, unchecked((int)total));
            }
            else
            {
                nint error = 0;
                var emptyLength = (long)USearchNative.SerializedLength(_index, ref error);
                USearchNative.Check(error, "serialized_length");
                empty = GC.AllocateArray<byte>(checked((int)emptyLength), pinned: true);
                var bytes = (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(empty));
                USearchNative.SaveBuffer(_index, bytes, (nuint)emptyLength, ref error);
                USearchNative.Check(error, "save_buffer");
                builder = new HnswGraphBuilder(bytes, emptyLength, (int)n, (ulong)start, unchecked((int)total));
            }

            if (builder.Dimension != Dimension || !SettledGraph.Fits(builder.Length, total, _options))
            {
                return false;
            }

            settled = SettledGraph.Allocate(builder.Length);
            var rowBytes = (long)Dimension * sizeof(float);
            var chunkRows = Math.Max(1, AddChunkBytes / rowBytes);
            var target = builder.AddedRows(settled.Bytes);
            for (long offset = 0; offset < n; offset += chunkRows)
            {
                // Spans over tensor memory are bounded, so the rows are copied chunk by chunk.
                using var chunk = rows.narrow(0, offset, Math.Min(chunkRows, n - offset));
                var bytes = chunk.bytes;
                bytes.CopyTo(new Span<byte>(target + (offset * rowBytes), bytes.Length));
            }

            builder.Write(settled.Bytes, _options.ExpansionAdd, _threads);
            GC.KeepAlive(empty);
            settled.Walk = new HnswGraphWalk(settled.Bytes, settled.Length);
            view = USearchIndexHandle.Create(InitOptionsFor(Dimension, _options));
            nint viewError = 0;
            USearchNative.ViewBuffer(view.DangerousGetHandle(), settled.Bytes, (nuint)settled.Length, ref viewError);
            USearchNative.Check(viewError, "view_buffer");
            ConfigureSearch(view.DangerousGetHandle(), Dimension, _options);
        }
        catch (Exception e) when (e is USearchException or OutOfMemoryException or ArgumentException or NotSupportedException)
        {
            view?.Dispose();
            settled?.Dispose();
            return false;
        }

        var buffer = _labelBuffer.Length >= total ? _labelBuffer : LabelsWithRoom(GrownCapacity(total));

        for (var row = 0; row < labelValues.Length; row++)
        {
            buffer[start + row] = (int)labelValues[row];
        }

        Swap(view, settled);
        _labelBuffer = buffer;
        _capacity = buffer.Length;
        _snapshot = new Snapshot(total, buffer);
        _settledCount = total;
        ManagedInsertions++;
        return true;
    }

    /// <summary>Whether graphs of a memory with <paramref name="options"/> settle (see the class remarks).</summary>
    private static bool Settles(HnswCacheOptions options) => options.ManagedSearch && UsesLibraryKernel(options);

    /// <summary>Whether USearch is handed the library's float32 kernel (float32 keys, <see cref="HnswDistanceKernel.Float32"/>).</summary>
    private static bool UsesLibraryKernel(HnswCacheOptions options) =>
        options.ScalarKind == HnswScalarKind.Float32 && options.DistanceKernel == HnswDistanceKernel.Float32;

    /// <summary>
    /// Serializes the editable graph into a native block and swaps in a read-only view of it; under the write gate. When the
    /// block would not fit in available memory, or USearch cannot serialize or view it, the graph stays editable (searches
    /// keep using USearch) and the add that called this has still succeeded.
    /// </summary>
    private void Settle()
    {
        nint error = 0;
        var length = (long)USearchNative.SerializedLength(_index, ref error);
        if (error != 0 || !SettledGraph.Fits(length, _snapshot.Count, _options))
        {
            return;
        }

        SettledGraph? settled = null;
        USearchIndexHandle? view = null;
        try
        {
            settled = SettledGraph.Allocate(length);
            USearchNative.SaveBuffer(_index, settled.Bytes, (nuint)length, ref error);
            USearchNative.Check(error, "save_buffer");
            settled.Walk = new HnswGraphWalk(settled.Bytes, length);
            view = USearchIndexHandle.Create(InitOptionsFor(Dimension, _options));
            var index = view.DangerousGetHandle();
            USearchNative.ViewBuffer(index, settled.Bytes, (nuint)length, ref error);
            USearchNative.Check(error, "view_buffer");
            ConfigureSearch(index, Dimension, _options);
        }
        catch (Exception e) when (e is USearchException or OutOfMemoryException or ArgumentException)
        {
            view?.Dispose();
            settled?.Dispose();
            return;
        }

        Swap(view, settled);
        _settledCount = _snapshot.Count;
    }

    /// <summary>Loads the settled block back into an editable index with room for the current capacity, then frees the block.</summary>
    private void Unsettle()
    {
        var settled = _settled!;
        var editable = USearchIndexHandle.Create(InitOptionsFor(Dimension, _options));
        try
        {
            var index = editable.DangerousGetHandle();
            nint error = 0;
            USearchNative.LoadBuffer(index, settled.Bytes, (nuint)settled.Length, ref error);
            USearchNative.Check(error, "load_buffer");
            USearchNative.Reserve(index, (nuint)_capacity, ref error); // the capacity covers every published key
            USearchNative.Check(error, "reserve");
            ConfigureSearch(index, Dimension, _options);
        }
        catch
        {
            editable.Dispose();
            throw;
        }

        Swap(editable, null);
    }

    /// <summary>Makes <paramref name="handle"/> the index (with <paramref name="settled"/> behind it, or none), once no search runs.</summary>
    private void Swap(USearchIndexHandle handle, SettledGraph? settled)
    {
        USearchIndexHandle old;
        SettledGraph? oldSettled;
        _resize.EnterWriteLock();
        try
        {
            old = _handle;
            oldSettled = _settled;
            _handle = handle;
            _index = handle.DangerousGetHandle();
            _settled = settled;
            ApplyThreadLimits();
        }
        finally
        {
            _resize.ExitWriteLock();
        }

        old.Dispose(); // a view first, then the block it reads
        oldSettled?.Dispose();
    }

    /// <summary>
    /// What every index of this memory is given after it is made, loaded or made a view: the search expansion, and the
    /// library's float32 kernel when <paramref name="options"/> ask for it.
    /// </summary>
    private static void ConfigureSearch(nint index, int dimension, HnswCacheOptions options)
    {
        nint error = 0;
        USearchNative.ChangeExpansionSearch(index, (nuint)options.ExpansionSearch, ref error);
        USearchNative.Check(error, "change_expansion_search");
        if (UsesLibraryKernel(options))
        {
            USearchNative.ChangeMetric(index, InnerProductKernel.Pointer, dimension, USearchNative.MetricKind.InnerProduct, ref error);
            USearchNative.Check(error, "change_metric");
        }
    }

    public Tensor ClassLogMass(Tensor queries, ReadOnlySpan<double> thetas)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CacheInputs.CheckQuery(queries, Dimension, thetas);

        var batch = checked((int)queries.shape[0]);
        var thetaValues = thetas.ToArray();
        var classes = ClassCount;
        var output = new float[checked(thetaValues.Length * batch * classes)];
        Array.Fill(output, float.NegativeInfinity);
        var snapshot = _snapshot;
        if (batch > 0)
        {
            using var scope = NewDisposeScope();
            var rows = queries.detach().cpu().contiguous();
            CacheInputs.ThrowIfNonFinite(rows, nameof(queries));
            if (snapshot.Count > 0)
            {
                fixed (byte* data = rows.bytes)
                {
                    Score((float*)data, batch, snapshot, thetaValues, output);
                }
            }
        }

        return tensor(output, [thetaValues.Length, batch, classes], ScalarType.Float32);
    }

    /// <summary>The retrieved neighbours of each query (key ids, similarities best first), as <see cref="ClassLogMass"/> sees them.</summary>
    /// <param name="queries">The queries.</param>
    /// <param name="published">Search as a query holding a snapshot of the first this many keys would (tests); default the current one.</param>
    internal (ulong[] Keys, float[] Similarities)[] Neighbours(Tensor queries, long? published = null)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(queries);
        var snapshot = published is { } count ? _snapshot with { Count = Math.Min(count, _snapshot.Count) } : _snapshot;
        var batch = checked((int)queries.shape[0]);
        var result = new (ulong[] Keys, float[] Similarities)[batch];
        var k = (int)Math.Min(_options.TopK, snapshot.Count);
        using var scope = NewDisposeScope();
        var rows = queries.detach().cpu().contiguous();
        var work = new Workspace(k, ClassCount, Dimension);
        fixed (byte* data = rows.bytes)
        {
            _resize.EnterReadLock();
            try
            {
                for (var q = 0; q < batch; q++)
                {
                    var found = snapshot.Count == 0 ? 0 : Search((float*)data + ((long)q * Dimension), k, snapshot.Count, work);
                    result[q] = (work.Keys[..found], work.Distances[..found].Select(d => 1 - d).ToArray());
                }
            }
            finally
            {
                _resize.ExitReadLock();
            }
        }

        return result;
    }

    public IReadOnlyList<long[]> RetrievedKeys(Tensor queries) =>
        [.. Neighbours(queries).Select(n => n.Keys.Select(k => (long)k).ToArray())];

    public HnswGraphSnapshot SaveGraph()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        lock (_writeGate)
        {
            var snapshot = _snapshot;
            if (_settled is { } settled)
            {
                // The block is the serialization (USearch's save of the view writes the same bytes).
                if (settled.Length > Array.MaxLength)
                {
                    throw new NotSupportedException(
                        $"The graph needs {settled.Length} bytes, more than one array holds ({Array.MaxLength}); use fewer keys per memory.");
                }

                return new HnswGraphSnapshot(
                    new ReadOnlySpan<byte>(settled.Bytes, (int)settled.Length).ToArray(),
                    snapshot.Labels.AsSpan(0, checked((int)snapshot.Count)).ToArray());
            }

            nint error = 0;
            var length = USearchNative.SerializedLength(_index, ref error);
            USearchNative.Check(error, "serialized_length");
            if (length > (nuint)Array.MaxLength)
            {
                throw new NotSupportedException(
                    $"The graph needs {length} bytes, more than one array holds ({Array.MaxLength}); use fewer keys per memory.");
            }

            var bytes = GC.AllocateUninitializedArray<byte>((int)length);
            fixed (byte* buffer = bytes)
            {
                USearchNative.SaveBuffer(_index, buffer, length, ref error);
            }

            USearchNative.Check(error, "save_buffer");
            return new HnswGraphSnapshot(bytes, snapshot.Labels.AsSpan(0, checked((int)snapshot.Count)).ToArray());
        }
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _handle.Dispose();
        _settled?.Dispose();
        _slots.Dispose();
        _resize.Dispose();
    }

    /// <summary>Native load errors (truncated or foreign bytes) are the caller's input problem.</summary>
    private static void ThrowIfNotAGraph(nint error, string operation)
    {
        try
        {
            USearchNative.Check(error, operation);
        }
        catch (USearchException e)
        {
            throw new ArgumentException($"The graph bytes are not a complete USearch index ({e.Message}).", "graph", e);
        }
    }

    private static HnswCacheOptions ValidatedCopy(HnswCacheOptions options)
    {
        var errors = options.Validate();
        if (errors.Count > 0)
        {
            throw new ArgumentException("Invalid HNSW cache options: " + string.Join(" ", errors), nameof(options));
        }

        return options.Clone();
    }

    private static USearchNative.InitOptions InitOptionsFor(int dimension, HnswCacheOptions options) => new()
    {
        MetricKind = MetricFor(options.ScalarKind),
        Quantization = ToNative(options.ScalarKind),
        Dimensions = (nuint)dimension,
        Connectivity = (nuint)options.Connectivity,
        ExpansionAdd = (nuint)options.ExpansionAdd,
        ExpansionSearch = (nuint)options.ExpansionSearch,
    };

    /// <summary>Int8 storage quantises through the cosine metric (USearch scales each vector to [−127, 127]).</summary>
    private static USearchNative.MetricKind MetricFor(HnswScalarKind kind) =>
        kind == HnswScalarKind.Int8 ? USearchNative.MetricKind.Cos : USearchNative.MetricKind.InnerProduct;

    private static USearchNative.ScalarKind ToNative(HnswScalarKind kind) => kind switch
    {
        HnswScalarKind.Float32 => USearchNative.ScalarKind.Float32,
        HnswScalarKind.Float16 => USearchNative.ScalarKind.Float16,
        HnswScalarKind.BFloat16 => USearchNative.ScalarKind.BFloat16,
        HnswScalarKind.Int8 => USearchNative.ScalarKind.Int8,
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "Unknown scalar kind."),
    };

    private static HnswScalarKind FromNative(USearchNative.ScalarKind kind) => kind switch
    {
        USearchNative.ScalarKind.Float32 => HnswScalarKind.Float32,
        USearchNative.ScalarKind.Float16 => HnswScalarKind.Float16,
        USearchNative.ScalarKind.BFloat16 => HnswScalarKind.BFloat16,
        USearchNative.ScalarKind.Int8 => HnswScalarKind.Int8,
        _ => throw new ArgumentException($"The graph stores {kind} scalars, which an HNSW cache memory does not use."),
    };

    /// <summary>Filter for <c>usearch_filtered_search</c>: admits key ids below the snapshot count at <paramref name="state"/>.</summary>
    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static int IsPublished(ulong key, void* state) => key < *(ulong*)state ? 1 : 0;

    /// <summary>Reserves room for <paramref name="needed"/> keys. Caller holds <see cref="_writeGate"/>.</summary>
    private void EnsureCapacity(long needed)
    {
        if (needed <= _capacity)
        {
            return;
        }

        if (needed > Array.MaxLength)
        {
            throw new NotSupportedException($"An HNSW cache memory holds at most {Array.MaxLength} keys; {needed} were requested.");
        }

        var target = GrownCapacity(needed);
        _resize.EnterWriteLock();
        try
        {
            nint error = 0;
            USearchNative.Reserve(_index, (nuint)target, ref error);
            USearchNative.Check(error, "reserve");
            ApplyThreadLimits();
        }
        finally
        {
            _resize.ExitWriteLock();
        }

        _labelBuffer = LabelsWithRoom(target);
        _capacity = target;
    }

    /// <summary>The capacity an add needing <paramref name="needed"/> keys grows to: that, or half again the current one.</summary>
    private long GrownCapacity(long needed) => Math.Min(Array.MaxLength, Math.Max(needed, _capacity + (_capacity / 2)));

    /// <summary>A label array of <paramref name="length"/> holding the published labels.</summary>
    private int[] LabelsWithRoom(long length)
    {
        var labels = new int[length];
        Array.Copy(_labelBuffer, labels, _snapshot.Count);
        return labels;
    }

    /// <summary>Sets the native context pool to <see cref="_threads"/> (usearch_reserve resets it to the core count).</summary>
    private void ApplyThreadLimits()
    {
        nint error = 0;
        USearchNative.ChangeThreadsAdd(_index, (nuint)_threads, ref error);
        USearchNative.Check(error, "change_threads_add");
        USearchNative.ChangeThreadsSearch(_index, (nuint)_threads, ref error);
        USearchNative.Check(error, "change_threads_search");
    }

    /// <summary>Inserts contiguous float32 rows as key ids <c>start, start+1, …</c>; on failure removes what was inserted.</summary>
    private void InsertRows(Tensor rows, long start)
    {
        var n = rows.shape[0];
        var rowBytes = (long)Dimension * sizeof(float);
        var chunkRows = Math.Max(1, AddChunkBytes / rowBytes);
        string? failure = null;
        _resize.EnterReadLock();
        try
        {
            for (long offset = 0; offset < n && failure is null; offset += chunkRows)
            {
                using var chunk = rows.narrow(0, offset, Math.Min(chunkRows, n - offset));
                fixed (byte* data = chunk.bytes)
                {
                    var basePointer = (nint)data;
                    var firstKey = (ulong)(start + offset);
                    Parallel.For(
                        0,
                        checked((int)chunk.shape[0]),
                        new ParallelOptions { MaxDegreeOfParallelism = _threads },
                        (row, loop) =>
                        {
                            nint error = 0;
                            _slots.Wait();
                            try
                            {
                                USearchNative.Add(
                                    _index, firstKey + (ulong)row, (void*)(basePointer + (row * rowBytes)), USearchNative.ScalarKind.Float32, ref error);
                            }
                            finally
                            {
                                _slots.Release();
                            }

                            if (error != 0)
                            {
                                Interlocked.CompareExchange(ref failure, Marshal.PtrToStringUTF8(error) ?? "(no message)", null);
                                loop.Stop();
                            }
                        });
                }
            }

            if (failure is not null)
            {
                RemoveRange(start, n);
            }
        }
        finally
        {
            _resize.ExitReadLock();
        }

        if (failure is not null)
        {
            throw new USearchException($"USearch add failed: {failure}. No rows of this call were added.");
        }
    }

    private void RemoveRange(long start, long n)
    {
        for (var key = start; key < start + n; key++)
        {
            nint error = 0;
            _slots.Wait();
            try
            {
                USearchNative.Remove(_index, (ulong)key, ref error);
            }
            finally
            {
                _slots.Release();
            }
        }
    }

    /// <summary>Searches every query and writes its per-class log-mass for every θ into <paramref name="output"/> ([T, b, C]).</summary>
    private void Score(float* queries, int batch, Snapshot snapshot, double[] thetas, float[] output)
    {
        var k = (int)Math.Min(_options.TopK, snapshot.Count);
        var classes = ClassCount;
        var dimension = Dimension;
        var basePointer = (nint)queries;
        _resize.EnterReadLock();
        try
        {
            Parallel.For(
                0,
                batch,
                new ParallelOptions { MaxDegreeOfParallelism = _threads },
                () => new Workspace(k, classes, dimension),
                (q, _, work) =>
                {
                    var found = Search((float*)basePointer + ((long)q * dimension), k, snapshot.Count, work);
                    Accumulate(work, found, snapshot.Labels, thetas, q, batch, output);
                    return work;
                },
                _ => { });
        }
        catch (AggregateException e) when (e.InnerExceptions.Count == 1)
        {
            ExceptionDispatchInfo.Throw(e.InnerExceptions[0]);
        }
        finally
        {
            _resize.ExitReadLock();
        }
    }

    /// <summary>Top-k search restricted to ids below <paramref name="published"/>; fills the workspace, returns the hit count.</summary>
    private int Search(float* query, int k, long published, Workspace work)
    {
        nint error = 0;
        nuint found;
        fixed (ulong* keys = work.Keys)
        fixed (float* distances = work.Distances)
        {
            if (_settled?.Walk is { } walk)
            {
                // A settled graph holds the keys published when it settled, which a query holding an older snapshot filters.
                var hits = walk.Search(query, k, _options.ExpansionSearch, (ulong)published, HnswGraphWalk.Scratch.For(walk.Count), keys, distances);
                return hits < k && k == published ? ScoreMissed(query, hits, published, work) : hits;
            }

            _slots.Wait();
            try
            {
                found = USearchNative.Search(_index, query, USearchNative.ScalarKind.Float32, (nuint)k, keys, distances, ref error);
                USearchNative.Check(error, "search");
                var stale = false;
                for (var i = 0; i < (int)found; i++)
                {
                    stale |= keys[i] >= (ulong)published;
                }

                if (stale)
                {
                    Interlocked.Increment(ref _filteredSearches);
                    var limit = (ulong)published;
                    found = USearchNative.FilteredSearch(
                        _index, query, USearchNative.ScalarKind.Float32, (nuint)k, &IsPublished, &limit, keys, distances, ref error);
                    USearchNative.Check(error, "filtered_search");
                }

                if ((long)found < k && k == published)
                {
                    found = (nuint)ScoreMissed(query, (int)found, published, work);
                }
                else if (found == 0 && published > 0)
                {
                    // USearch's walk can come back empty beside a concurrent add (its entry may be a node the add has not
                    // linked yet, which the filter then excludes); score the published keys directly instead.
                    found = (nuint)ScoreNearest(query, k, published, work);
                }
            }
            finally
            {
                _slots.Release();
            }
        }

        return (int)found;
    }

    /// <summary>
    /// When every published key was asked for (TopK ≥ Count) but the graph walk did not reach them all (HNSW graphs need
    /// not be connected), scores the missed keys directly from their stored vectors (<c>usearch_get</c>), so the result is
    /// the exact log-mass over all keys. Appends to the workspace after the <paramref name="found"/> hits; returns the new count.
    /// </summary>
    private int ScoreMissed(float* query, int found, long published, Workspace work)
    {
        Interlocked.Increment(ref _exhaustiveCompletions);
        var seen = work.Seen;
        Array.Clear(seen);
        for (var i = 0; i < found; i++)
        {
            seen[work.Keys[i]] = true;
        }

        fixed (float* vector = work.Vector)
        {
            var queryNorm = SquaredNorm(query);
            for (var key = 0L; key < published; key++)
            {
                if (!seen[key] && StoredSimilarity(query, queryNorm, key, vector) is { } similarity)
                {
                    work.Keys[found] = (ulong)key;
                    work.Distances[found] = (float)(1 - similarity);
                    found++;
                }
            }
        }

        return found;
    }

    /// <summary>The <paramref name="k"/> published keys nearest to <paramref name="query"/> by direct scoring, nearest first; returns how many.</summary>
    private int ScoreNearest(float* query, int k, long published, Workspace work)
    {
        Interlocked.Increment(ref _exhaustiveCompletions);
        var nearest = new HnswGraphWalk.Heap(k + 1);
        fixed (float* vector = work.Vector)
        {
            var queryNorm = SquaredNorm(query);
            for (var key = 0L; key < published; key++)
            {
                if (StoredSimilarity(query, queryNorm, key, vector) is { } similarity)
                {
                    nearest.Push((float)(1 - similarity), (int)key);
                    if (nearest.Count > k)
                    {
                        nearest.Pop();
                    }
                }
            }
        }

        var found = nearest.Count;
        for (var i = found - 1; i >= 0; i--)
        {
            var (distance, key) = nearest.Pop();
            work.Keys[i] = (ulong)key;
            work.Distances[i] = distance;
        }

        return found;
    }

    private double SquaredNorm(float* query)
    {
        double norm = 0;
        for (var j = 0; j < Dimension; j++)
        {
            norm += (double)query[j] * query[j];
        }

        return norm;
    }

    /// <summary>The similarity of a stored key (read back with <c>usearch_get</c> into <paramref name="vector"/>); null when it is not stored.</summary>
    private double? StoredSimilarity(float* query, double queryNorm, long key, float* vector)
    {
        nint error = 0;
        var copied = USearchNative.Get(_index, (ulong)key, 1, vector, USearchNative.ScalarKind.Float32, ref error);
        USearchNative.Check(error, "get");
        if (copied == 0)
        {
            return null;
        }

        double dot = 0, norm = 0;
        for (var j = 0; j < Dimension; j++)
        {
            dot += (double)query[j] * vector[j];
            norm += (double)vector[j] * vector[j];
        }

        return _options.ScalarKind == HnswScalarKind.Int8 ? dot / Math.Sqrt(Math.Max(queryNorm * norm, double.Epsilon)) : dot;
    }

    /// <summary>
    /// Per class c and θ: <c>L_c = m + log Σ_{j ∈ c} exp(θ s_j − m)</c> with <c>m = max_{j ∈ c} θ s_j</c>, in double,
    /// over the retrieved neighbours; classes without a neighbour stay −∞.
    /// </summary>
    private static void Accumulate(Workspace work, int found, int[] labels, double[] thetas, int q, int batch, float[] output)
    {
        var classes = work.Max.Length;
        for (var t = 0; t < thetas.Length; t++)
        {
            var theta = thetas[t];
            for (var j = 0; j < found; j++)
            {
                var c = labels[work.Keys[j]];
                var v = theta * (1.0 - work.Distances[j]);
                if (v > work.Max[c])
                {
                    work.Max[c] = v;
                }
            }

            for (var j = 0; j < found; j++)
            {
                var c = labels[work.Keys[j]];
                work.Sum[c] += Math.Exp((theta * (1.0 - work.Distances[j])) - work.Max[c]);
            }

            var row = ((long)t * batch + q) * classes;
            for (var j = 0; j < found; j++)
            {
                var c = labels[work.Keys[j]];
                if (work.Sum[c] > 0)
                {
                    output[row + c] = (float)(work.Max[c] + Math.Log(work.Sum[c]));
                    work.Sum[c] = 0;
                    work.Max[c] = double.NegativeInfinity;
                }
            }
        }
    }

    /// <summary>
    /// A serialized graph in one native block, and the walk over it; freeing it frees both. The block starts
    /// <see cref="USearchGraphLayout.MatrixHeadBytes"/> before a 64-byte boundary, so that the vectors after the matrix's head
    /// start on a cache line (and every row of a 64-byte multiple does): an unaligned row costs a line more per vector read,
    /// and split loads.
    /// </summary>
    private sealed class SettledGraph : IDisposable
    {
        private const int VectorAlignment = 64 - USearchGraphLayout.MatrixHeadBytes;

        private byte* _allocation;

        private SettledGraph(long length)
        {
            _allocation = (byte*)NativeMemory.AlignedAlloc((nuint)(length + 64), 64);
            Bytes = _allocation + VectorAlignment;
            Length = length;
        }

        public byte* Bytes { get; }

        public long Length { get; }

        /// <summary>Native bytes held: the block and the walk's level-0 table.</summary>
        public long NativeBytes => Length + (Walk?.ListBytes ?? 0);

        public HnswGraphWalk? Walk { get; set; }

        public static SettledGraph Allocate(long length) => new(length);

        /// <summary>Whether a graph of <paramref name="length"/> bytes and <paramref name="count"/> keys, settled, fits in available memory.</summary>
        public static bool Fits(long length, long count, HnswCacheOptions options) =>
            length + HnswGraphWalk.ListBytesFor(count, 2 * options.Connectivity) <= (ProcessMemory.AvailableBytes() ?? long.MaxValue);

        /// <summary>A block holding a copy of <paramref name="graph"/> (bytes <see cref="USearchGraphLayout"/> has checked), walk included.</summary>
        public static SettledGraph Copy(ReadOnlySpan<byte> graph)
        {
            var settled = Allocate(graph.Length);
            graph.CopyTo(new Span<byte>(settled.Bytes, graph.Length));
            settled.Walk = new HnswGraphWalk(settled.Bytes, graph.Length);
            return settled;
        }

        public void Dispose()
        {
            if (_allocation != null)
            {
                Walk?.Dispose();
                Walk = null;
                NativeMemory.AlignedFree(_allocation);
                _allocation = null;
            }
        }
    }

    /// <summary>An immutable view of the published keys: ids below <see cref="Count"/>, labels indexed by id.</summary>
    private sealed record Snapshot(long Count, int[] Labels);

    /// <summary>Per-worker scratch for one query at a time.</summary>
    private sealed class Workspace
    {
        public Workspace(int k, int classes, int dimension)
        {
            Seen = new bool[Math.Max(k, 1)];
            Vector = new float[dimension];
            Keys = new ulong[Math.Max(k, 1)];
            Distances = new float[Math.Max(k, 1)];
            Max = new double[classes];
            Sum = new double[classes];
            Array.Fill(Max, double.NegativeInfinity);
        }

        /// <summary>Which key ids the graph walk returned (used only when every key is requested).</summary>
        public bool[] Seen { get; }

        /// <summary>One stored key, for scoring keys the walk missed.</summary>
        public float[] Vector { get; }

        public ulong[] Keys { get; }

        public float[] Distances { get; }

        public double[] Max { get; }

        public double[] Sum { get; }
    }
}
