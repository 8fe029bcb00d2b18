using ScalableCache.Core;
using ScalableCache.Core.Evaluation;
using ScalableCache.Core.Persistence;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Exact;

/// <summary>
/// Exact key store: every query is compared with every key, on the configured device, in blocks. Create one with
/// <c>new ExactCacheMemory(dimension, classCount, options)</c>, or through dependency injection with
/// <see cref="Microsoft.Extensions.DependencyInjection.ExactServiceCollectionExtensions.AddExactCache(Microsoft.Extensions.DependencyInjection.IServiceCollection, System.Action{ExactCacheOptions}?)"/>.
/// Thread-safety and tensor ownership are those of <see cref="ICacheMemory"/>.
/// </summary>
/// <remarks>
/// <para><b>Storage.</b> Keys live in chunks: tensors <c>[capacity, d]</c> (float32 or float16) with labels
/// <c>[capacity]</c> (int64) on the device. <see cref="Add"/> fills the free tail of the last chunk and, when that is full,
/// allocates a new chunk (capacity grows geometrically up to about 64 MiB, or exactly the rows of a larger add). Rows that
/// a published snapshot covers are never written again, so readers need no lock.</para>
/// <para><b>Snapshots.</b> A <see cref="Snapshot"/> is immutable: the visible row count of each chunk, the total count,
/// the per-class key counts and the largest key norm. <see cref="Add"/> (serialised by a lock) copies and validates the
/// rows, writes them beyond the visible rows, then publishes a new snapshot with one reference write. A query reads the
/// snapshot once, so it sees all rows of an <see cref="Add"/> or none.</para>
/// <para><b>Log-mass.</b> For one block of keys and queries the similarities <c>S [n, b]</c> come from one matrix
/// multiply. A θ-independent per-class shift <c>U_c ≥ max_{k∈c} S_k</c> with <c>U_c − max_{k∈c} S_k ≤ ln(n)/θ₀</c> is the
/// log-mass at a low temperature <c>θ₀ = 80 / (2‖q‖·max‖k‖)</c>, where every term <c>exp(θ₀(S − ‖q‖·max‖k‖)) ≥ e⁻⁸⁰</c> is a
/// normal float32 (refined at a higher temperature while <c>θ_max · ln(n)/θ₀ &gt; 60</c>). Then for every θ
/// <c>L_c = θU_c + log Σ_{k∈c} exp(θ(S_k − U_c))</c>: every term is ≤ 1 and the class maximum term is ≥ e⁻⁶⁰, so each
/// class that has keys gets a finite, accurate value at any θ. Evenly spaced θ reuse one exponential: <c>exp(θ_{i+1}D) =
/// exp(θ_iD)·exp(δD)</c>. Blocks merge by log-add-exp; classes with no keys are −∞.</para>
/// <para><b>Execution paths.</b> On the CPU without gradients, each block costs one matrix multiply plus one pass of
/// <see cref="LogMassKernel"/>, which fuses the shift, every θ and the merge (no intermediate tensors, one dynamically
/// partitioned parallel loop). On CUDA the same steps run as tensor operations, in place under <c>no_grad</c>. When
/// gradients are enabled and the queries require them, the tensor operations run out of place (the shift is a constant),
/// so callers can differentiate the log-mass with respect to the queries.</para>
/// </remarks>
public sealed partial class ExactCacheMemory : ICacheMemory
{
    /// <summary>Provider name registered by this backend.</summary>
    public const string ProviderName = "Exact";

    /// <summary>Log-mass of a class absent from a block while blocks are merged (finite, so gradients stay finite).</summary>
    private const float AbsentLogMass = -1e30f;

    /// <summary>θ₀ · (largest similarity range) for the stabilising pass (<see cref="LogMassKernel.StabiliserExponent"/>).</summary>
    private const double StabiliserExponent = LogMassKernel.StabiliserExponent;

    /// <summary>Refine the shift until θ_max · slack ≤ this (<see cref="LogMassKernel.MaxShiftExponent"/>).</summary>
    private const double MaxShiftExponent = LogMassKernel.MaxShiftExponent;

    /// <summary>Exponent of the smallest term of a refinement pass (<see cref="LogMassKernel.RefineExponent"/>).</summary>
    private const double RefineExponent = LogMassKernel.RefineExponent;

    /// <summary>Smallest new chunk, in rows.</summary>
    private const int MinChunkRows = 64;

    /// <summary>Geometric growth of chunks stops at this many bytes (a single larger add still gets one chunk).</summary>
    private const long GrowthChunkBytes = 64L << 20;

    private readonly Lock _writeGate = new();
    private readonly List<Chunk> _owned = [];
    private readonly Device _device;
    private readonly ScalarType _storageType;
    private readonly int _keyBlockSize;
    private readonly int _queryBlockSize;
    private readonly int _growthRows;
    private volatile Snapshot _snapshot;
    private volatile bool _disposed;
    private KeyFile? _keyFile;
    private readonly bool _saveKeyFileByReference;

    /// <summary>
    /// Creates an empty memory for keys of <paramref name="dimension"/> components with labels in
    /// <c>[0, <paramref name="classCount"/>)</c>. The options (default: <c>new ExactCacheOptions()</c>) are validated and
    /// copied; their <see cref="ExactCacheOptions.Device"/> holds the keys (<see langword="null"/>: the CPU).
    /// </summary>
    /// <exception cref="ArgumentException">The options are invalid; the message names every setting at fault.</exception>
    public ExactCacheMemory(int dimension, int classCount, ExactCacheOptions? options = null)
        : this(dimension, classCount, null, (options ?? new ExactCacheOptions()).ValidatedClone(nameof(options)))
    {
    }

    /// <summary>Creates an empty memory with options already validated; a <see langword="null"/> device is the options' one.</summary>
    internal ExactCacheMemory(int dimension, int classCount, Device? device, ExactCacheOptions options)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(dimension, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(classCount, 1);
        ArgumentNullException.ThrowIfNull(options);
        Dimension = dimension;
        ClassCount = classCount;
        _device = device ?? TorchDevices.Resolve(options.Device);
        _storageType = options.StorageScalarType;
        _keyBlockSize = options.KeyBlockSize;
        _queryBlockSize = options.QueryBlockSize;
        _saveKeyFileByReference = options.SaveKeyFileByReference;
        var rowBytes = (long)dimension * (_storageType == ScalarType.Float32 ? 4 : 2);
        _growthRows = (int)Math.Clamp(GrowthChunkBytes / rowBytes, MinChunkRows, int.MaxValue / 2);
        _snapshot = new Snapshot([], 0, new long[classCount], 0);
    }

    /// <inheritdoc />
    public string Provider => ProviderName;

    /// <inheritdoc />
    public int Dimension { get; }

    /// <inheritdoc />
    public int ClassCount { get; }

    /// <inheritdoc />
    public long Count => _snapshot.Count;

    /// <summary>The device that holds the keys.</summary>
    public Device Device => _device;

    /// <summary>The element type keys are stored as.</summary>
    public ScalarType StorageType => _storageType;

    /// <summary>
    /// Whether CPU queries without gradients use <see cref="LogMassKernel"/> (default) rather than the tensor path that
    /// CUDA and autograd use; tests switch it off to check both paths.
    /// </summary>
    internal bool UseFusedKernel { get; init; } = true;

    /// <summary>Number of storage chunks allocated so far (diagnostics).</summary>
    public int ChunkCount
    {
        get
        {
            lock (_writeGate)
            {
                return _owned.Count;
            }
        }
    }

    /// <summary>The key file this memory maps its first keys from, or null.</summary>
    public string? KeyFilePath => _keyFile?.Path;

    /// <summary>
    /// Opens a memory over the keys of a finished key file (<see cref="KeyFile"/>; e.g. one <see cref="KeyFileWriter"/> or
    /// <c>scache build --keys-file</c> wrote). On the CPU the keys stay in the file: each query copies one block of
    /// <see cref="ExactCacheOptions.KeyBlockSize"/> keys at a time out of the mapping (converting float16/bfloat16 to float32)
    /// and releases those pages, so resident memory is about the labels (12 bytes a key), one block per concurrent query and the
    /// query's own results, not the file. On CUDA the keys are copied onto the device. The memory keeps the file's scalar type;
    /// keys added later (<see cref="Add"/>) are held in memory after the file's, in that type, and saved with the rest by
    /// <see cref="ExportState"/>. Disposing the memory unmaps the file.
    /// </summary>
    /// <exception cref="CacheFileException">The file is not a finished, sound key file (see <see cref="KeyFile.Open"/>).</exception>
    /// <exception cref="ArgumentException">The options are invalid.</exception>
    public static ExactCacheMemory OpenKeyFile(string path, ExactCacheOptions? options = null, KeyFileOpenOptions? open = null) =>
        OpenKeyFile(path, null, (options ?? new ExactCacheOptions()).ValidatedClone(nameof(options)), open);

    /// <summary><see cref="OpenKeyFile(string, ExactCacheOptions?, KeyFileOpenOptions?)"/> with validated options; a null device is the options' one.</summary>
    internal static ExactCacheMemory OpenKeyFile(string path, Device? device, ExactCacheOptions options, KeyFileOpenOptions? open)
    {
        var file = KeyFile.Open(path, open ?? new KeyFileOpenOptions { VerifyKeys = options.VerifyKeyFiles });
        ExactCacheMemory? memory = null;
        try
        {
            var layout = file.Layout;
            var typed = options.Clone();
            typed.StorageType = ExactCacheOptions.FromScalarType(layout.ScalarType);
            memory = new ExactCacheMemory(layout.Dimension, layout.ClassCount, device, typed);
            memory.Load(file);
            return memory;
        }
        catch
        {
            if (memory?._keyFile is null)
            {
                file.Dispose();
            }

            memory?.Dispose();
            throw;
        }
    }

    /// <summary>Publishes the keys of <paramref name="file"/>: mapped chunks on the CPU, device copies elsewhere.</summary>
    private void Load(KeyFile file)
    {
        var counts = new long[ClassCount];
        foreach (var label in file.Labels)
        {
            counts[label]++;
        }

        var views = new List<ChunkView>(file.Chunks.Count);
        lock (_writeGate)
        {
            if (_device.type == DeviceType.CPU)
            {
                _keyFile = file;
                foreach (var info in file.Chunks)
                {
                    var chunk = Chunk.Map(file, info.Index);
                    _owned.Add(chunk);
                    views.Add(new ChunkView(chunk, info.Rows));
                }
            }
            else
            {
                using var noGrad = no_grad();
                foreach (var info in file.Chunks)
                {
                    using var scope = NewDisposeScope();
                    var chunk = Chunk.Allocate(info.Rows, Dimension, _storageType, _device);
                    _owned.Add(chunk);
                    var host = empty(info.Rows, Dimension, dtype: _storageType);
                    file.CopyKeys(info.Index, 0, info.Rows, host.bytes);
                    chunk.Keys!.copy_(host.to(_device));
                    chunk.Labels.copy_(tensor(Array.ConvertAll(file.Labels[(int)info.FirstRow..(int)(info.FirstRow + info.Rows)], l => (long)l)).to(_device));
                    views.Add(new ChunkView(chunk, info.Rows));
                }

                cuda.synchronize(_device);
                file.Dispose();
            }

            _snapshot = new Snapshot([.. views], file.Count, counts, file.MaxKeyNorm);
        }
    }

    /// <inheritdoc />
    public void Add(Tensor keys, Tensor labels)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var n = CacheInputs.CheckAddShapes(keys, labels, Dimension);

        if (n == 0)
        {
            return;
        }

        if (n > int.MaxValue / 2)
        {
            throw new ArgumentException($"One add takes at most {int.MaxValue / 2} rows (got {n}).", nameof(keys));
        }

        using var scope = NewDisposeScope();
        using var noGrad = no_grad();

        CacheInputs.ThrowIfNonFinite(keys, nameof(keys), "; nothing was added");
        var y = CacheInputs.CheckedLabels(labels, ClassCount);

        // Copies on the device, in the storage type; the caller's tensors are never retained.
        var stored = keys.detach().to(_storageType, _device);
        var storedLabels = y.to(_device);
        var maxNorm = stored.to_type(ScalarType.Float32).norm(1).max().item<float>();
        var hostLabels = y.cpu().to_type(ScalarType.Int32).data<int>().ToArray();
        var classCounts = new long[ClassCount];
        foreach (var label in hostLabels)
        {
            classCounts[label]++;
        }

        var rows = (int)n;

        lock (_writeGate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var current = _snapshot;
            var views = new List<ChunkView>(current.Views);
            var written = 0;
            Chunk? tail = null;
            var tailRows = 0;
            Chunk? fresh = null;
            try
            {
                if (views.Count > 0 && views[^1].Rows < views[^1].Chunk.Capacity)
                {
                    tail = views[^1].Chunk;
                    var take = Math.Min(rows, tail.Capacity - views[^1].Rows);
                    tail.Keys!.narrow(0, views[^1].Rows, take).copy_(stored.narrow(0, 0, take));
                    tail.Labels.narrow(0, views[^1].Rows, take).copy_(storedLabels.narrow(0, 0, take));
                    // Only CPU chunks keep a managed label copy (for the fused kernel); CUDA chunks have none.
                    if (tail.HostLabels is { } tailHost)
                    {
                        hostLabels.AsSpan(0, take).CopyTo(tailHost.AsSpan(views[^1].Rows));
                    }
                    tailRows = views[^1].Rows + take;
                    views[^1] = new ChunkView(tail, tailRows);
                    written = take;
                }

                if (written < rows)
                {
                    var remaining = rows - written;
                    var growth = (int)Math.Clamp(current.Count, MinChunkRows, _growthRows);
                    fresh = Chunk.Allocate(Math.Max(remaining, growth), Dimension, _storageType, _device);
                    fresh.Keys!.narrow(0, 0, remaining).copy_(stored.narrow(0, written, remaining));
                    fresh.Labels.narrow(0, 0, remaining).copy_(storedLabels.narrow(0, written, remaining));
                    if (fresh.HostLabels is { } freshHost)
                    {
                        hostLabels.AsSpan(written, remaining).CopyTo(freshHost);
                    }
                    views.Add(new ChunkView(fresh, remaining));
                }

                if (_device.type == DeviceType.CUDA)
                {
                    cuda.synchronize(_device);
                }
            }
            catch
            {
                fresh?.Dispose();
                throw;
            }

            var counts = new long[ClassCount];
            for (var c = 0; c < counts.Length; c++)
            {
                counts[c] = current.ClassCounts[c] + classCounts[c];
            }

            if (fresh is not null)
            {
                _owned.Add(fresh);
            }

            _snapshot = new Snapshot([.. views], current.Count + n, counts, Math.Max(current.MaxKeyNorm, maxNorm));
        }
    }

    /// <inheritdoc />
    public Tensor ClassLogMass(Tensor queries, ReadOnlySpan<double> thetas)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CacheInputs.CheckQuery(queries, Dimension, thetas);

        var snapshot = _snapshot;
        var plan = ThetaPlan.Create(thetas);
        var b = queries.shape[0];
        var track = is_grad_enabled() && queries.requires_grad;

        using var scope = NewDisposeScope();
        using var gradGuard = track ? null : no_grad();

        if (b > 0)
        {
            CacheInputs.ThrowIfNonFinite(queries, nameof(queries));
        }

        if (b == 0 || snapshot.Count == 0)
        {
            return full(plan.Count, b, ClassCount, float.NegativeInfinity, dtype: ScalarType.Float32)
                .MoveToOuterDisposeScope();
        }

        var q = queries.to(_device);
        var thetaColumn = tensor(plan.Thetas.Select(t => (float)t).ToArray(), dtype: ScalarType.Float32, device: _device)
            .view(plan.Count, 1, 1);
        var present = tensor(snapshot.ClassCounts.Select(c => c > 0).ToArray(), device: _device).view(1, ClassCount, 1);
        var keyBuffer = KeyBlockBuffers.Create(snapshot, _storageType, Math.Min(_keyBlockSize, snapshot.LargestChunkRows), Dimension, _device, track);

        var fused = !track && _device.type == DeviceType.CPU && UseFusedKernel;
        var parts = new List<Tensor>();
        if (fused)
        {
            // Keys outer, query blocks inner: each key block is read (from a mapped file: paged in and converted) once per group of
            // query blocks, not once per query block; a query's arithmetic is the same either way.
            var group = FusedGroupBlocks(plan.Kernel.Distinct.Length, ClassCount, _queryBlockSize, FusedRunningBudgetBytes);
            for (long start = 0; start < b; start += (long)group * _queryBlockSize)
            {
                var rows = Math.Min((long)group * _queryBlockSize, b - start);
                parts.AddRange(QueryBlocksFused(snapshot, q.narrow(0, start, rows), plan, keyBuffer).Select(l => l.permute(0, 2, 1)));
            }
        }
        else
        {
            for (long start = 0; start < b; start += _queryBlockSize)
            {
                var rows = Math.Min(_queryBlockSize, b - start);
                var logMass = where(present, QueryBlock(snapshot, q.narrow(0, start, rows), plan, thetaColumn, keyBuffer, track), float.NegativeInfinity);
                parts.Add(logMass.permute(0, 2, 1));
            }
        }

        var result = parts.Count == 1 ? parts[0] : cat(parts, 1);
        result = result.to(ScalarType.Float32, CPU).contiguous();
        GC.KeepAlive(snapshot);
        return result.MoveToOuterDisposeScope();
    }

    /// <inheritdoc />
    public void Dispose()
    {
        lock (_writeGate)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            _snapshot = new Snapshot([], 0, new long[ClassCount], 0);
            foreach (var chunk in _owned)
            {
                chunk.Dispose();
            }

            _owned.Clear();
            _keyFile?.Dispose();
        }
    }

    /// <summary>Log-mass <c>[T, C, b]</c> (absent classes at <see cref="AbsentLogMass"/>) of one block of queries <c>[b, d]</c>.</summary>
    private Tensor QueryBlock(Snapshot snapshot, Tensor queries, ThetaPlan plan, Tensor thetaColumn, KeyBlockBuffers keyBuffer, bool track)
    {
        using var scope = NewDisposeScope();
        var b = queries.shape[0];
        var queriesT = queries.t();

        // Stabiliser temperature per query: θ₀ · (largest possible similarity range 2‖q‖·max‖k‖) = 80.
        Tensor theta0, upper;
        using (no_grad())
        {
            upper = queries.detach().norm(1).mul_(snapshot.MaxKeyNorm).view(1, b);
            theta0 = full(1, b, StabiliserExponent / 2, dtype: ScalarType.Float32, device: _device).div_(upper.clamp_min(1e-12f));
        }

        var theta0Min = theta0.min().item<float>();
        var acc = full(plan.Count, ClassCount, b, AbsentLogMass, dtype: ScalarType.Float32, device: _device);
        foreach (var view in snapshot.Views)
        {
            for (var offset = 0; offset < view.Rows; offset += _keyBlockSize)
            {
                using var blockScope = NewDisposeScope();
                var rows = Math.Min(_keyBlockSize, view.Rows - offset);
                var keys = view.Chunk.Float32Keys(offset, rows, keyBuffer);
                var labels = view.Chunk.Labels.narrow(0, offset, rows);
                var similarities = mm(keys, queriesT); // [n, b]
                var blockLogMass = track
                    ? BlockLogMassTracked(similarities, labels, theta0, theta0Min, upper, plan, thetaColumn)
                    : BlockLogMass(similarities, labels, theta0, theta0Min, upper, plan, thetaColumn);
                var merged = logaddexp(acc, blockLogMass);
                acc.Dispose();
                acc = merged.MoveToOuterDisposeScope();
            }
        }

        return acc.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// How many query blocks <see cref="QueryBlocksFused"/> takes at once: as many as keep their running log-masses (float64, per
    /// distinct θ and one shift, per class and query) within <see cref="FusedRunningBudgetBytes"/>, at least one.
    /// </summary>
    internal static int FusedGroupBlocks(int distinctThetas, int classes, int queryBlock, long budgetBytes)
    {
        var perBlock = (distinctThetas + 1L) * classes * queryBlock * sizeof(double);
        return (int)Math.Clamp(budgetBytes / perBlock, 1, 1 << 16);
    }

    /// <summary>Memory the fused CPU path's running log-masses may take across the query blocks it serves in one pass over the keys.</summary>
    internal const long FusedRunningBudgetBytes = 1L << 30;

    /// <summary>
    /// Log-mass <c>[T, C, b_j]</c> (−∞ for classes without keys) of each block of <see cref="ExactCacheOptions.QueryBlockSize"/>
    /// queries of <paramref name="queries"/> <c>[b, d]</c> on the CPU, without gradients, in one pass over the keys: per key block
    /// one matrix multiply per query block, then <see cref="LogMassKernel"/>. Each query block's values are those of a pass of its
    /// own (the same products, merged in the same key order).
    /// </summary>
    private Tensor[] QueryBlocksFused(Snapshot snapshot, Tensor queries, ThetaPlan plan, KeyBlockBuffers keyBuffer)
    {
        using var scope = NewDisposeScope();
        var total = queries.shape[0];
        var blocks = (int)((total + _queryBlockSize - 1) / _queryBlockSize);
        var counts = new int[blocks];
        var transposed = new Tensor[blocks];
        var uppers = new float[blocks][];
        var theta0s = new float[blocks][];
        var running = new LogMassKernel.Running[blocks];
        for (var j = 0; j < blocks; j++)
        {
            var b = counts[j] = (int)Math.Min(_queryBlockSize, total - ((long)j * _queryBlockSize));
            var block = queries.narrow(0, (long)j * _queryBlockSize, b);
            var padded = (b + LogMassKernel.Lanes - 1) / LogMassKernel.Lanes * LogMassKernel.Lanes;
            var q = padded == b ? block : cat([block, zeros(padded - b, Dimension, dtype: ScalarType.Float32)]);
            transposed[j] = q.t();

            // Stabiliser temperature per query: θ₀ · (largest possible similarity range 2‖q‖·max‖k‖) = 80.
            var norms = q.norm(1).data<float>().ToArray();
            uppers[j] = new float[padded];
            theta0s[j] = new float[padded];
            for (var i = 0; i < padded; i++)
            {
                uppers[j][i] = (float)(norms[i] * snapshot.MaxKeyNorm);
                theta0s[j][i] = LogMassKernel.StabiliserTemperature(uppers[j][i]);
            }

            running[j] = new LogMassKernel.Running(plan.Kernel, ClassCount, padded);
        }

        var present = new bool[ClassCount];
        foreach (var view in snapshot.Views)
        {
            var hostLabels = view.Chunk.HostLabels!;
            for (var offset = 0; offset < view.Rows; offset += _keyBlockSize)
            {
                using var blockScope = NewDisposeScope();
                var rows = Math.Min(_keyBlockSize, view.Rows - offset);
                var keys = view.Chunk.Float32Keys(offset, rows, keyBuffer);
                Array.Clear(present);
                foreach (var label in hostLabels.AsSpan(offset, rows))
                {
                    present[label] = true;
                }

                for (var j = 0; j < blocks; j++)
                {
                    using var inner = NewDisposeScope();
                    var padded = running[j].Columns;
                    var similarities = mm(keys, transposed[j]).contiguous(); // [n, padded]
                    using var storage = similarities.storage<float>();
                    var address = storage.data_ptr() + (nint)(similarities.storage_offset() * sizeof(float));
                    LogMassKernel.Accumulate(address, rows, padded, hostLabels, offset, present, theta0s[j], uppers[j], running[j]);
                    GC.KeepAlive(similarities);
                }
            }
        }

        return [.. running.Select((r, j) => r.ToTensor(counts[j]).MoveToOuterDisposeScope())];
    }

    /// <summary>
    /// Per-class shift <c>U [C, b]</c> with <c>max_{k∈c} S_k ≤ U_c ≤ max_{k∈c} S_k + 60/θ_max</c> for classes present in the
    /// block (0 elsewhere), and the presence mask. Not differentiated.
    /// </summary>
    private (Tensor Shift, Tensor Present) Shift(Tensor similarities, Tensor labels, Tensor theta0, float theta0Min, Tensor upper, double thetaMax)
    {
        using var noGrad = no_grad();
        var s = similarities.detach();
        var n = s.shape[0];
        var b = s.shape[1];

        // exp(θ₀ (S − ‖q‖·max‖k‖)) ∈ [e⁻⁸⁰, 1].
        var rows = labels.unsqueeze(1).expand(n, b);
        var terms = (theta0 * upper).neg_().addcmul(s, theta0, 1).exp_();
        var sums = zeros(ClassCount, b, dtype: ScalarType.Float32, device: _device).scatter_add_(0, rows, terms);
        terms.Dispose();
        var present = sums.gt(0);
        var shift = where(present, sums.log_().div_(theta0).add_(upper), 0f);

        // Slack of the shift is ≤ ln(n)/θ; tighten at a higher temperature while the largest θ would see it.
        var lnN = Math.Log(n);
        var theta = theta0;
        var slack = lnN / theta0Min;
        while (thetaMax * slack > MaxShiftExponent)
        {
            theta = theta * (RefineExponent / lnN);
            var refine = (s - shift.index_select(0, labels)).mul_(theta).exp_();
            var refineSums = zeros(ClassCount, b, dtype: ScalarType.Float32, device: _device).scatter_add_(0, rows, refine);
            refine.Dispose();
            var next = where(present, shift + refineSums.clamp_min_(float.Epsilon).log_().div_(theta), 0f);
            shift.Dispose();
            shift = next;
            slack *= lnN / RefineExponent;
        }

        return (shift, present);
    }

    /// <summary>In-place, no-grad block log-mass <c>[T, C, b]</c>; consumes <paramref name="similarities"/>.</summary>
    private Tensor BlockLogMass(Tensor similarities, Tensor labels, Tensor theta0, float theta0Min, Tensor upper, ThetaPlan plan, Tensor thetaColumn)
    {
        using var scope = NewDisposeScope();
        var b = similarities.shape[1];
        var (shift, present) = Shift(similarities, labels, theta0, theta0Min, upper, plan.Max);

        // D = S − U[y] ≤ 0 (up to rounding), in place.
        var d = similarities.sub_(shift.index_select(0, labels));
        var sums = zeros(plan.Count, ClassCount, b, dtype: ScalarType.Float32, device: _device);
        var rows = labels.unsqueeze(1).expand(labels.shape[0], b); // expanded index: libtorch's sorted, parallel scatter path

        Tensor? weights = null;
        Tensor? step = null;
        var stepDelta = double.NaN;
        for (var i = 0; i < plan.Count; i++)
        {
            var index = plan.Order[i];
            var theta = plan.Thetas[index];
            if (i > 0)
            {
                var previous = plan.Order[i - 1];
                var delta = theta - plan.Thetas[previous];
                if (delta == 0)
                {
                    sums[index].copy_(sums[previous]);
                    continue;
                }

                if (step is not null && plan.SameDelta(delta, stepDelta))
                {
                    weights!.mul_(step);
                }
                else if (plan.DeltaRecurs(i, delta))
                {
                    // exp(θ_{i+1} D) = exp(θ_i D) · exp(δ D): one exponential serves a run of evenly spaced θ.
                    step?.Dispose();
                    step = i == 1 && plan.SameDelta(delta, plan.Thetas[plan.Order[0]]) ? weights!.clone() : d.mul(delta).exp_();
                    stepDelta = delta;
                    weights!.mul_(step);
                }
                else
                {
                    weights!.Dispose();
                    weights = d.mul(theta).exp_();
                }
            }
            else
            {
                weights = d.mul(theta).exp_();
            }

            sums[index].scatter_add_(0, rows, weights!);
        }

        // L = log Σ + θU for present classes; absent classes get the finite sentinel.
        var logMass = sums.log_().addcmul_(thetaColumn, shift.unsqueeze(0), 1);
        return logMass.masked_fill_(present.logical_not().unsqueeze(0), AbsentLogMass).MoveToOuterDisposeScope();
    }

    /// <summary>Out-of-place block log-mass <c>[T, C, b]</c> that autograd can differentiate with respect to the similarities.</summary>
    private Tensor BlockLogMassTracked(Tensor similarities, Tensor labels, Tensor theta0, float theta0Min, Tensor upper, ThetaPlan plan, Tensor thetaColumn)
    {
        using var scope = NewDisposeScope();
        var b = similarities.shape[1];
        var (shift, present) = Shift(similarities, labels, theta0, theta0Min, upper, plan.Max);
        var d = similarities - shift.index_select(0, labels);
        var rows = labels.unsqueeze(1).expand(labels.shape[0], b);
        var perTheta = new Tensor[plan.Count];
        for (var t = 0; t < plan.Count; t++)
        {
            var weights = (d * plan.Thetas[t]).exp();
            perTheta[t] = zeros(ClassCount, b, dtype: ScalarType.Float32, device: _device).scatter_add(0, rows, weights);
        }

        // Present classes have sums ≥ e⁻⁶⁰, so the clamp only keeps log's gradient finite where a class is absent.
        var logMass = stack(perTheta).clamp_min(1e-37f).log() + thetaColumn * shift.unsqueeze(0);
        return where(present.unsqueeze(0), logMass, AbsentLogMass).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Storage for up to <see cref="Capacity"/> keys; rows beyond a snapshot's view are invisible to readers. Keys live in a
    /// tensor, or (<see cref="Mapped"/>) in one chunk of a memory-mapped key file, full and read-only.
    /// </summary>
    private sealed class Chunk : IDisposable
    {
        private Chunk(Tensor? keys, Tensor labels, int[]? hostLabels, int capacity, KeyFile? file = null, int fileChunk = 0)
        {
            Keys = keys;
            Labels = labels;
            HostLabels = hostLabels;
            Capacity = capacity;
            Mapped = file;
            FileChunk = fileChunk;
        }

        /// <summary>The keys, unless the chunk is <see cref="Mapped"/>.</summary>
        public Tensor? Keys { get; }

        public Tensor Labels { get; }

        /// <summary>The labels again as a managed array, for the fused CPU kernel (CPU device only).</summary>
        public int[]? HostLabels { get; }

        public int Capacity { get; }

        /// <summary>The key file whose chunk <see cref="FileChunk"/> holds the keys, or null.</summary>
        public KeyFile? Mapped { get; }

        public int FileChunk { get; }

        public static Chunk Allocate(int capacity, int dimension, ScalarType type, Device device)
        {
            var keys = empty(capacity, dimension, dtype: type, device: device).DetachFromDisposeScope();
            try
            {
                var labels = zeros(capacity, dtype: ScalarType.Int64, device: device).DetachFromDisposeScope();
                return new Chunk(keys, labels, device.type == DeviceType.CPU ? new int[capacity] : null, capacity);
            }
            catch
            {
                keys.Dispose();
                throw;
            }
        }

        /// <summary>A chunk over chunk <paramref name="index"/> of a mapped file (CPU).</summary>
        public static Chunk Map(KeyFile file, int index)
        {
            var info = file.Chunks[index];
            var hostLabels = file.Labels.AsSpan((int)info.FirstRow, info.Rows).ToArray();
            using var scope = NewDisposeScope();
            var labels = tensor(Array.ConvertAll(hostLabels, l => (long)l), ScalarType.Int64).DetachFromDisposeScope();
            return new Chunk(null, labels, hostLabels, info.Rows, file, index);
        }

        /// <summary>
        /// Rows <c>[offset, offset + rows)</c> as float32 <c>[rows, d]</c>: a view of the keys, or a copy in
        /// <paramref name="buffers"/> (mapped rows are copied out of the file, other types converted).
        /// </summary>
        public Tensor Float32Keys(int offset, int rows, KeyBlockBuffers buffers)
        {
            Tensor keys;
            if (Mapped is { } file)
            {
                keys = buffers.Stage!.narrow(0, 0, rows);
                file.CopyKeys(FileChunk, offset, rows, keys.bytes);
                if (buffers.Track && keys.dtype == ScalarType.Float32)
                {
                    return keys.clone(); // autograd keeps the keys of each block; the stage is reused
                }
            }
            else
            {
                keys = Keys!.narrow(0, offset, rows);
            }

            if (keys.dtype != ScalarType.Float32)
            {
                keys = buffers.Float32 is null ? keys.to_type(ScalarType.Float32) : buffers.Float32.narrow(0, 0, rows).copy_(keys);
            }

            return keys;
        }

        public void Dispose()
        {
            Keys?.Dispose();
            Labels.Dispose();
        }
    }

    /// <summary>
    /// Per-query buffers for one key block: <see cref="Stage"/> receives mapped rows in the storage type (CPU), and
    /// <see cref="Float32"/> their float32 conversion (null for float32 storage, or when autograd tracks the keys).
    /// </summary>
    private sealed class KeyBlockBuffers
    {
        public Tensor? Stage { get; private init; }

        public Tensor? Float32 { get; private init; }

        /// <summary>Whether autograd records the similarity products (blocks must then not share storage).</summary>
        public bool Track { get; private init; }

        public static KeyBlockBuffers Create(Snapshot snapshot, ScalarType storage, int rows, int dimension, Device device, bool track) => new()
        {
            Stage = snapshot.Mapped && rows > 0 ? empty(rows, dimension, dtype: storage) : null,
            Float32 = !track && storage != ScalarType.Float32 && rows > 0 ? empty(rows, dimension, dtype: ScalarType.Float32, device: device) : null,
            Track = track,
        };
    }

    /// <summary>The first <see cref="Rows"/> rows of a chunk.</summary>
    private readonly record struct ChunkView(Chunk Chunk, int Rows);

    /// <summary>An immutable published state.</summary>
    private sealed class Snapshot(ChunkView[] views, long count, long[] classCounts, double maxKeyNorm)
    {
        public ChunkView[] Views { get; } = views;

        public long Count { get; } = count;

        public long[] ClassCounts { get; } = classCounts;

        public double MaxKeyNorm { get; } = maxKeyNorm;

        public int LargestChunkRows { get; } = views.Length == 0 ? 0 : views.Max(v => v.Rows);

        /// <summary>Whether any chunk is mapped from a key file.</summary>
        public bool Mapped { get; } = views.Any(v => v.Chunk.Mapped is not null);
    }

    /// <summary>The θ values in caller order, and the ascending order they are evaluated in.</summary>
    private sealed class ThetaPlan
    {
        private ThetaPlan(double[] thetas, int[] order)
        {
            Thetas = thetas;
            Order = order;
            Max = thetas.Max();
            Kernel = LogMassKernel.ThetaGrid.Create(thetas);
        }

        /// <summary>The θ as the fused kernel takes them.</summary>
        public LogMassKernel.ThetaGrid Kernel { get; }

        public double[] Thetas { get; }

        public int[] Order { get; }

        public int Count => Thetas.Length;

        public double Max { get; }

        public static ThetaPlan Create(ReadOnlySpan<double> thetas)
        {
            var values = thetas.ToArray();
            var order = Enumerable.Range(0, values.Length).OrderBy(i => values[i]).ToArray();
            return new ThetaPlan(values, order);
        }

        public bool SameDelta(double a, double b) => Math.Abs(a - b) <= 1e-9 * Math.Max(Math.Abs(a), Math.Abs(b));

        /// <summary>Whether the step from sorted position <paramref name="i"/> − 1 to <paramref name="i"/> repeats later.</summary>
        public bool DeltaRecurs(int i, double delta)
        {
            if (i == 1 && SameDelta(delta, Thetas[Order[0]]))
            {
                return true; // the first weights serve as the step: no extra exponential
            }

            for (var j = i + 1; j < Order.Length; j++)
            {
                if (SameDelta(Thetas[Order[j]] - Thetas[Order[j - 1]], delta))
                {
                    return true;
                }
            }

            return false;
        }
    }
}
