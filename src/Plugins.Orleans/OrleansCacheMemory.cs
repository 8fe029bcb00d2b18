using System.Text.RegularExpressions;
using Orleans;
using System.Globalization;
using ScalableCache.Core;
using ScalableCache.Core.Persistence;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Orleans;

/// <summary>
/// The cache sharded over an Orleans cluster: a client-side <see cref="ICacheMemory"/> whose keys live in
/// <see cref="ShardCount"/> shard grains, each holding a store of the <see cref="InnerProvider"/> (made on its silo by
/// that provider's factory). Create one with <see cref="Create"/> (or the factory), attach to an existing one with
/// <see cref="Open"/>.
/// </summary>
/// <remarks>
/// <para><b>Queries.</b> <see cref="ClassLogMass"/> sends the batch to every shard at once and merges their
/// <c>[θ, b, C]</c> log-masses by log-add-exp (<see cref="LogMass.Merge"/>, in float64, shards in index order). With exact
/// inner stores the answer is the single store's (up to float32 rounding); with HNSW inner stores it is the sum over the
/// union of every shard's own top-k, which holds at least the global top-k's keys and k per shard in all.</para>
/// <para><b>Adds and versions.</b> Every <see cref="Add"/> is one cluster-wide version: the coordinator grain leases the next
/// version (one add at a time across all clients) and says how many rows each shard takes (the smallest shards first, so
/// sizes stay balanced); every shard stages its part (on disk too when the cache persists); the coordinator commits the
/// version (writing the manifest first when persisting) — the commit point; then the shards apply it. A shard applies a
/// staged version only when asked for a version at least that high, and such versions are always committed.</para>
/// <para><b>What a query sees.</b> Each shard answers at the version it has applied, after applying up to the version this
/// client knows (its own last commit, or the highest any shard reported). If the shards' versions differ (an add is being
/// applied), the query is asked again at the highest of them, so a returned answer always reflects one committed version
/// on every shard: every shard's part of an add or no shard's part. An add that has not committed is seen by no query.
/// Queries made after <see cref="Add"/> returns see it; adds by other clients are seen once any shard has applied them.</para>
/// <para><b>Failures.</b> Each shard call is bounded by <see cref="OrleansCacheOptions.CallTimeout"/>. A query one of whose
/// shards is unreachable, times out, dies during the call, or has lost its state fails with a
/// <see cref="CacheShardException"/> naming the shard — never with the sum of the others. An add that fails before its
/// commit adds nothing (its staged parts are never applied and are replaced by the next add of the same version). After the
/// commit, <see cref="Add"/> waits (up to the longer maintenance bound, at least 300 s) for the shards to apply the version, which
/// for an HNSW shard includes building its graph.</para>
/// <para><b>Thread-safety and ownership</b> are those of <see cref="ICacheMemory"/>: queries run concurrently with each other
/// and with one add; adds are serialised (across clients by the lease). Answers carry no gradient (queries that require
/// one are refused). A memory made by <see cref="Create"/> without a cache id is dropped from the cluster by
/// <see cref="Dispose"/> unless it was <see cref="Retain"/>ed; a named or opened one stays until <see cref="Drop"/>.</para>
/// <para><b>Durable by itself</b> (<see cref="IDurableCacheMemory"/>): on silos with a state folder every add is on disk on every
/// shard and in the manifest before <see cref="Add"/> returns (<see cref="PersistsAdds"/>), and <see cref="Open"/> (or the
/// factory's <see cref="OrleansCacheMemoryFactory.Reopen"/>) by <see cref="CacheId"/> brings it back after any restart. So a
/// <c>DurableCacheClassifier</c> (<c>scache serve</c>) over it keeps no log; its cache file names the cache
/// (<see cref="ExportState"/> exports that reference, never the keys).</para>
/// </remarks>
public sealed partial class OrleansCacheMemory : IDurableCacheMemory, IPersistentCacheMemory, IKeyRetrievingCacheMemory
{
    /// <summary>Provider name registered by this backend.</summary>
    public const string ProviderName = "Orleans";

    /// <summary>Rounds of a query whose shards answered at different versions before it gives up.</summary>
    private const int MaxQueryRounds = 16;

    private readonly ICacheCoordinatorGrain _coordinator;
    private readonly ICacheShardGrain[] _shards;
    private readonly OrleansCacheOptions _options;
    private readonly bool _persisted;
    private volatile bool _owned;
    private readonly IDisposable? _lifetime;
    private readonly SemaphoreSlim _addGate = new(1, 1);
    private readonly Lock _stateGate = new();
    private long _version;
    private long[] _counts;
    private volatile bool _disposed;

    private OrleansCacheMemory(IGrainFactory grains, CacheDescriptor descriptor, OrleansCacheOptions options, bool owned, IDisposable? lifetime)
    {
        var spec = descriptor.Spec;
        CacheId = spec.CacheId;
        Dimension = spec.Dimension;
        ClassCount = spec.ClassCount;
        InnerProvider = spec.Inner;
        _options = options;
        _owned = owned;
        _lifetime = lifetime;
        _coordinator = grains.GetGrain<ICacheCoordinatorGrain>(CacheId);
        _shards = [.. Enumerable.Range(0, spec.ShardCount).Select(i => grains.GetGrain<ICacheShardGrain>(ShardKeys.Shard(CacheId, i)))];
        _version = descriptor.Version;
        _counts = descriptor.ShardCounts;
        _persisted = descriptor.Persisted;
    }

    /// <inheritdoc />
    public string Provider => ProviderName;

    /// <inheritdoc />
    public int Dimension { get; }

    /// <inheritdoc />
    public int ClassCount { get; }

    /// <summary>Keys stored as of <see cref="Version"/>.</summary>
    public long Count
    {
        get
        {
            lock (_stateGate)
            {
                return _counts.Sum();
            }
        }
    }

    /// <summary>The cache's id on the cluster (grain keys, folder name of its persisted state).</summary>
    public string CacheId { get; }

    /// <summary>Number of shards.</summary>
    public int ShardCount => _shards.Length;

    /// <summary>Provider of each shard's store.</summary>
    public string InnerProvider { get; }

    /// <summary>
    /// Whether every add is on disk before <see cref="Add"/> returns: the silos keep state (<see cref="OrleansCacheOptions.StateDirectory"/>),
    /// as the cache's coordinator reported when this client attached.
    /// </summary>
    public bool PersistsAdds => _persisted;

    /// <summary>The id that reopens the cache: <see cref="CacheId"/>.</summary>
    string IDurableCacheMemory.DurableId => CacheId;

    /// <summary>The highest committed version this client knows (0 for an empty cache; each add adds one).</summary>
    public long Version => Interlocked.Read(ref _version);

    /// <summary>Keys per shard as of <see cref="Version"/>.</summary>
    public IReadOnlyList<long> ShardCounts
    {
        get
        {
            lock (_stateGate)
            {
                return [.. _counts];
            }
        }
    }

    /// <summary>
    /// Creates a cache of <paramref name="dimension"/>-dimensional keys and <paramref name="classCount"/> classes on the
    /// cluster <paramref name="grains"/> reaches (an <c>IClusterClient</c>, or a silo's grain factory), with
    /// <see cref="OrleansCacheOptions.Shards"/> shards of the <see cref="OrleansCacheOptions.Inner"/> provider.
    /// Without <paramref name="cacheId"/> the cache gets a new id and <see cref="Dispose"/> drops it.
    /// </summary>
    /// <exception cref="ArgumentException">The options or the cache id are invalid.</exception>
    /// <exception cref="CacheShardException">A shard could not be created; the message names it.</exception>
    public static OrleansCacheMemory Create(IGrainFactory grains, int dimension, int classCount, OrleansCacheOptions? options = null, string? cacheId = null) =>
        CreateCore(grains, dimension, classCount, (options ?? new OrleansCacheOptions()).ValidatedClone(nameof(options)), cacheId, null);

    /// <summary>
    /// Attaches to the existing cache <paramref name="cacheId"/>: after a full restart of a cluster whose silos keep state
    /// (<see cref="OrleansCacheOptions.StateDirectory"/>) this restores every shard from its checkpoint file and staged
    /// parts and checks it against the manifest. <see cref="Dispose"/> leaves the cache on the cluster.
    /// </summary>
    /// <exception cref="CacheShardException">A shard cannot be restored (its file fails its checks, a part is missing) or does not answer; the message names it.</exception>
    /// <exception cref="InvalidOperationException">There is no such cache.</exception>
    public static OrleansCacheMemory Open(IGrainFactory grains, string cacheId, OrleansCacheOptions? options = null) =>
        OpenCore(grains, cacheId, (options ?? new OrleansCacheOptions()).ValidatedClone(nameof(options)), null);

    internal static OrleansCacheMemory CreateCore(IGrainFactory grains, int dimension, int classCount, OrleansCacheOptions options, string? cacheId, IDisposable? lifetime)
    {
        ArgumentNullException.ThrowIfNull(grains);
        ArgumentOutOfRangeException.ThrowIfLessThan(dimension, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(classCount, 1);
        var id = cacheId ?? Guid.NewGuid().ToString("N");
        CheckCacheId(id);
        var spec = new ShardSpec(id, options.Shards, dimension, classCount, options.Inner.Trim());
        var coordinator = grains.GetGrain<ICacheCoordinatorGrain>(id);
        try
        {
            var descriptor = Run(() => ShardCalls.Bounded(coordinator.Create(spec), OrleansClusterSetup.MaintenanceTimeout(options)));
            return new OrleansCacheMemory(grains, descriptor, options, owned: cacheId is null, lifetime);
        }
        catch when (cacheId is null)
        {
            TryDrop(coordinator, options.CallTimeout);
            throw;
        }
    }

    internal static OrleansCacheMemory OpenCore(IGrainFactory grains, string cacheId, OrleansCacheOptions options, IDisposable? lifetime)
    {
        ArgumentNullException.ThrowIfNull(grains);
        CheckCacheId(cacheId);
        var coordinator = grains.GetGrain<ICacheCoordinatorGrain>(cacheId);
        var descriptor = Run(() => ShardCalls.Bounded(coordinator.Open(), OrleansClusterSetup.MaintenanceTimeout(options)));
        return new OrleansCacheMemory(grains, descriptor, options, owned: false, lifetime);
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

        if (n > int.MaxValue / Dimension)
        {
            throw new ArgumentException($"One add to the Orleans store takes at most {int.MaxValue / Dimension} rows of dimension {Dimension} (got {n}).", nameof(keys));
        }

        float[] values;
        int[] rowLabels;
        using (var scope = NewDisposeScope())
        using (var noGrad = no_grad())
        {
            CacheInputs.ThrowIfNonFinite(keys, nameof(keys), "; nothing was added");
            rowLabels = CacheInputs.CheckedLabels(labels, ClassCount).to_type(ScalarType.Int32).data<int>().ToArray();
            values = keys.detach().to(ScalarType.Float32, CPU).contiguous().data<float>().ToArray();
        }

        Run(() => AddAsync(values, rowLabels));
    }

    /// <inheritdoc />
    public Tensor ClassLogMass(Tensor queries, ReadOnlySpan<double> thetas)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CacheInputs.CheckQuery(queries, Dimension, thetas);
        if (is_grad_enabled() && queries.requires_grad)
        {
            throw new NotSupportedException("The Orleans store returns log-masses without gradients; detach the queries or use a local store.");
        }

        var thetaValues = thetas.ToArray();
        var b = queries.shape[0];
        if (b == 0)
        {
            return full(thetaValues.Length, 0, ClassCount, float.NegativeInfinity, dtype: ScalarType.Float32);
        }

        CacheInputs.ThrowIfNonFinite(queries, nameof(queries));
        using var scope = NewDisposeScope(); // the row views below, the parts and the merge
        var rowsPerCall = (int)Math.Min(b, RowsPerMessage);
        var batches = new List<TensorData>();
        for (long start = 0; start < b; start += rowsPerCall)
        {
            batches.Add(TensorData.From(queries.narrow(0, start, Math.Min(rowsPerCall, b - start))));
        }

        var answers = Run(() => QueryAsync(batches, thetaValues));

        Tensor? merged = null;
        for (var shard = 0; shard < ShardCount; shard++)
        {
            var parts = new List<Tensor>();
            for (var batch = 0; batch < batches.Count; batch++)
            {
                var logMass = answers[batch][shard].LogMass;
                var rows = batches[batch].Shape[0];
                if (logMass.Shape is not [var t, var r, var c] || t != thetaValues.Length || r != rows || c != ClassCount)
                {
                    throw new CacheShardException(
                        $"Shard {shard} of cache '{CacheId}' answered a log-mass of shape [{string.Join(", ", logMass.Shape)}]; expected [{thetaValues.Length}, {rows}, {ClassCount}].",
                        [shard]);
                }

                parts.Add(logMass.ToTensor());
            }

            var part = (parts.Count == 1 ? parts[0] : cat(parts, 1)).to_type(ScalarType.Float64);
            merged = merged is null ? part : LogMass.Merge(merged, part);
        }

        return merged!.to_type(ScalarType.Float32).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// For each query <c>[b, d]</c>, the cache-wide ids (insertion order over every add) of the keys <see cref="ClassLogMass"/> sums
    /// over with HNSW shards: the union of every shard's own top-k, shard by shard (each best first), all at one committed version —
    /// k per shard, so up to <see cref="ShardCount"/> × k ids, which hold the global top-k whenever each shard finds its own.
    /// </summary>
    /// <exception cref="NotSupportedException">The shards' stores sum over every key (<c>Exact</c>, <c>RandomProjection</c> over <c>Exact</c>).</exception>
    /// <exception cref="CacheShardException">A shard failed; the message names it.</exception>
    public IReadOnlyList<long[]> RetrievedKeys(Tensor queries)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CacheInputs.CheckQueryShape(queries, Dimension);
        var b = queries.shape[0];
        if (b == 0)
        {
            return [];
        }

        var batches = new List<TensorData>();
        using (var scope = NewDisposeScope())
        {
            var rowsPerCall = (int)Math.Min(b, RowsPerMessage);
            for (long start = 0; start < b; start += rowsPerCall)
            {
                batches.Add(TensorData.From(queries.narrow(0, start, Math.Min(rowsPerCall, b - start))));
            }
        }

        ShardRetrieved[][] answers;
        try
        {
            answers = Run(() => AtOneVersionAsync(batches, "Retrieving keys", (shard, batch, version) => _shards[shard].Retrieve(batch, version), a => a.Version));
        }
        catch (CacheShardException e) when (e.InnerException is NotSupportedException)
        {
            throw new NotSupportedException(e.Message, e);
        }

        var result = new List<long[]>((int)b);
        foreach (var batch in answers)
        {
            for (var q = 0; q < batch[0].Ids.Length; q++)
            {
                result.Add([.. batch.SelectMany(shard => shard.Ids[q])]);
            }
        }

        return result;
    }

    /// <summary>
    /// Saves every shard's store as a cache file at the committed version and writes the manifest beside them (silos with
    /// <see cref="OrleansCacheOptions.StateDirectory"/> only); staged parts the checkpoints cover are deleted. A shard that
    /// re-activates, or the whole cluster after a restart, restores from these files and the parts added since.
    /// </summary>
    /// <exception cref="NotSupportedException">The silos keep no state.</exception>
    /// <exception cref="CacheShardException">A shard failed to save; the message names it.</exception>
    public void Checkpoint()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        Observe(Run(() => ShardCalls.Bounded(_coordinator.Checkpoint(), OrleansClusterSetup.MaintenanceTimeout(_options))));
    }

    /// <summary>Keeps the cache on the cluster when this memory is disposed (a cache made without an id would be dropped).</summary>
    public void Retain() => _owned = false;

    /// <summary>Checkpoints every shard (<see cref="Checkpoint"/>): restores and reopening then replay no staged parts.</summary>
    void IDurableCacheMemory.Compact() => Checkpoint();

    /// <summary>
    /// A reference to the cache for a cache file: cache id, inner provider, shards and the committed version, with no keys (they stay
    /// on the cluster). Reopen it with <see cref="Open"/>; <c>DurableCacheClassifier</c> does so for a file it wrote.
    /// </summary>
    /// <exception cref="NotSupportedException">The cache is dropped when this memory is disposed (made without an id and not retained),
    /// so no file may name it.</exception>
    public CacheState ExportState()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_owned)
        {
            throw new NotSupportedException(
                $"A cache file cannot hold an Orleans memory's keys (they stay on the cluster), and this cache ('{CacheId}') is dropped when the memory " +
                "is disposed, so no file may name it: create it with a cache id, or retain it (scache serve does), to write a file that refers to it.");
        }

        lock (_stateGate)
        {
            var state = new CacheState(ProviderName, Dimension, _counts.Sum());
            state.Properties["cacheId"] = CacheId;
            state.Properties["inner"] = InnerProvider;
            state.Properties["shards"] = ShardCount.ToString(CultureInfo.InvariantCulture);
            state.Properties["version"] = _version.ToString(CultureInfo.InvariantCulture);
            return state;
        }
    }

    /// <summary>Each shard's condition: the version it has applied, its keys and the silo it runs on.</summary>
    /// <exception cref="CacheShardException">A shard does not answer or lost its state; the message names it.</exception>
    public IReadOnlyList<OrleansShardStatus> ShardStatuses()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var statuses = Run(() => ShardCalls.All(CacheId, "Reading the shards' status", ShardCount, i => _shards[i].Status(), _options.CallTimeout));
        return [.. statuses.Select((s, i) => new OrleansShardStatus(i, s.Version, s.Count, s.StagedParts, s.Silo))];
    }

    /// <summary>Removes the cache from the cluster: every shard's store and the cache's persisted files.</summary>
    public void Drop()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        Run(() => _coordinator.Drop().WaitAsync(_options.CallTimeout));
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        if (_owned)
        {
            TryDrop(_coordinator, _options.CallTimeout);
        }

        _lifetime?.Dispose();
    }

    private async Task AddAsync(float[] values, int[] labels)
    {
        await _addGate.WaitAsync().ConfigureAwait(false);
        try
        {
            var reservation = await ReserveAsync(labels.Length).ConfigureAwait(false);
            var (version, attempt) = (reservation.Version, reservation.Attempt);
            var starts = new int[ShardCount + 1];
            for (var i = 0; i < ShardCount; i++)
            {
                starts[i + 1] = starts[i] + (int)reservation.Rows[i];
            }

            try
            {
                await ShardCalls.All(CacheId, $"Staging add {version}", ShardCount, i => StageAsync(i, version, attempt, reservation.KeysBefore, values, labels, starts[i], starts[i + 1]),
                    _options.CallTimeout * Enumerable.Range(0, ShardCount).Max(i => PiecesOf(starts[i + 1] - starts[i])))
                    .ConfigureAwait(false);
            }
            catch (CacheShardException e)
            {
                await TryAsync(_coordinator.Release(version, attempt)).ConfigureAwait(false);
                throw new CacheShardException(e.Message + " Nothing was added.", e.Shards, e.InnerException);
            }

            CacheDescriptor committed;
            try
            {
                committed = await ShardCalls.Bounded(_coordinator.Commit(version, attempt), _options.CallTimeout).ConfigureAwait(false);
            }
            catch (Exception e) when (e is TimeoutException or OrleansException)
            {
                throw new InvalidOperationException(
                    $"The coordinator of cache '{CacheId}' did not confirm the commit of add {version} ({e.Message}); whether it committed is unknown " +
                    "until the coordinator answers again.", e);
            }

            Observe(committed);

            // Applied and indexed before Add returns (an HNSW shard builds its graph here, which may take longer than one call);
            // a shard this misses applies the version at its next query.
            await TryAsync(ShardCalls.All(CacheId, $"Applying add {version}", ShardCount, i => _shards[i].Apply(version), OrleansClusterSetup.MaintenanceTimeout(_options)))
                .ConfigureAwait(false);
        }
        finally
        {
            _addGate.Release();
        }
    }

    /// <summary>Rows per grain call so that a call's keys stay within <see cref="OrleansCacheOptions.MessageBytes"/>.</summary>
    private int RowsPerMessage => Math.Max(1, _options.MessageBytes / (4 * Dimension));

    private int PiecesOf(int rows) => Math.Max(1, (rows + RowsPerMessage - 1) / RowsPerMessage);

    /// <summary>Sends rows <c>[start, end)</c> to shard <paramref name="shard"/> in pieces of at most <see cref="RowsPerMessage"/> rows.</summary>
    private async Task StageAsync(int shard, long version, long attempt, long keysBefore, float[] values, int[] labels, int start, int end)
    {
        var pieces = PiecesOf(end - start);
        for (var piece = 0; piece < pieces; piece++)
        {
            var from = start + (piece * RowsPerMessage);
            var to = Math.Min(end, from + RowsPerMessage);
            var rows = new ShardRows(TensorData.Rows(values, Dimension, from, to - from), labels[from..to], keysBefore + from);
            await _shards[shard].Stage(version, attempt, piece, pieces, rows).ConfigureAwait(false);
        }
    }

    private async Task<Reservation> ReserveAsync(long rows)
    {
        var lease = _options.CallTimeout * (4 + PiecesOf((int)Math.Min(rows, int.MaxValue)));
        var deadline = DateTime.UtcNow + lease + _options.CallTimeout;
        while (true)
        {
            var reservation = await ShardCalls.Bounded(_coordinator.Reserve(rows, lease), _options.CallTimeout).ConfigureAwait(false);
            if (reservation.Granted)
            {
                return reservation;
            }

            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"Another client's add to cache '{CacheId}' held the add lease for longer than {(lease + _options.CallTimeout).TotalSeconds} s.");
            }

            await Task.Delay(20).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Every shard's answer for every sub-batch of <paramref name="batches"/>, all at one version: sub-batches go one after
    /// another (each to every shard at once), and when a shard answers at a higher version than the others the whole batch
    /// is asked again at that version.
    /// </summary>
    private Task<ShardAnswer[][]> QueryAsync(IReadOnlyList<TensorData> batches, double[] thetas) =>
        AtOneVersionAsync(batches, "A query", (shard, batch, version) => _shards[shard].Query(batch, thetas, version), a => a.Version);

    /// <summary>
    /// <paramref name="call"/>'s answer from every shard for every sub-batch, all at one version (see <see cref="QueryAsync"/>).
    /// </summary>
    private async Task<T[][]> AtOneVersionAsync<T>(IReadOnlyList<TensorData> batches, string what, Func<int, TensorData, long, Task<T>> call, Func<T, long> versionOf)
    {
        var version = Version;
        for (var round = 0; round < MaxQueryRounds; round++)
        {
            var answers = new T[batches.Count][];
            var agreed = true;
            for (var b = 0; b < batches.Count && agreed; b++)
            {
                var batch = batches[b];
                var at = version;
                answers[b] = await ShardCalls.All(CacheId, what, ShardCount, i => call(i, batch, at), _options.CallTimeout)
                    .ConfigureAwait(false);
                var highest = answers[b].Max(versionOf);
                agreed = answers[b].All(a => versionOf(a) == highest) && (b == 0 || highest == version);
                version = highest;
            }

            if (agreed)
            {
                AtLeast(version);
                return answers;
            }
        }

        throw new InvalidOperationException(
            $"The shards of cache '{CacheId}' answered at different versions in {MaxQueryRounds} rounds (adds commit faster than a query completes).");
    }

    private void Observe(CacheDescriptor descriptor)
    {
        lock (_stateGate)
        {
            if (descriptor.Version >= _version)
            {
                _version = descriptor.Version;
                _counts = descriptor.ShardCounts;
            }
        }
    }

    private void AtLeast(long version)
    {
        lock (_stateGate)
        {
            _version = Math.Max(_version, version);
        }
    }

    private static void TryDrop(ICacheCoordinatorGrain coordinator, TimeSpan timeout) =>
        Run(() => TryAsync(coordinator.Drop().WaitAsync(timeout)));

    private static async Task TryAsync(Task task)
    {
        try
        {
            await task.ConfigureAwait(false);
        }
        catch (Exception e) when (e is CacheShardException or TimeoutException or OrleansException or InvalidOperationException)
        {
            // Best effort: what could not be done here is done, or reported, by the next call that needs it.
        }
    }

    /// <summary>Runs grain calls from a synchronous API without capturing any synchronisation context.</summary>
    private static T Run<T>(Func<Task<T>> call) => Task.Run(call).GetAwaiter().GetResult();

    private static void Run(Func<Task> call) => Task.Run(call).GetAwaiter().GetResult();

    private static void CheckCacheId(string cacheId)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(cacheId);
        if (!CacheIdPattern().IsMatch(cacheId))
        {
            throw new ArgumentException($"Cache id '{cacheId}' must be 1 … 100 letters, digits, '.', '_' or '-' (it names grains and a folder).", nameof(cacheId));
        }
    }

    [GeneratedRegex("^[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}$")]
    private static partial Regex CacheIdPattern();
}

/// <summary>One shard's condition, from <see cref="OrleansCacheMemory.ShardStatuses"/>.</summary>
/// <param name="Shard">Shard index.</param>
/// <param name="Version">The version the shard has applied.</param>
/// <param name="Count">Keys in the shard's store.</param>
/// <param name="StagedParts">Parts of adds staged and not yet applied.</param>
/// <param name="Silo">The silo the shard's grain runs on.</param>
public sealed record OrleansShardStatus(int Shard, long Version, long Count, int StagedParts, string Silo);
