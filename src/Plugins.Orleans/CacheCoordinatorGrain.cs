using Microsoft.Extensions.Options;
using Orleans;

namespace ScalableCache.Orleans;

/// <summary>
/// The coordinator of one cache: it hands out one version per add (a lease: one add at a time, cluster-wide), records the
/// commit (the manifest on disk, when the cache persists, is written before the commit returns) and runs checkpoints.
/// Queries do not pass through it.
/// </summary>
[CollectionAgeLimit(AlwaysActive = true)]
internal sealed class CacheCoordinatorGrain : Grain, ICacheCoordinatorGrain
{
    private readonly string? _stateDirectory;
    private readonly TimeSpan _timeout;
    private readonly TimeSpan _maintenanceTimeout;
    private string _cacheId = "";
    private CacheStateFolder? _folder;
    private CacheManifest? _manifest;
    private Exception? _broken;
    private Lease? _lease;
    private long _lastAttempt;

    public CacheCoordinatorGrain(IOptions<OrleansCacheOptions> options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _stateDirectory = options.Value.StateDirectory;
        _timeout = options.Value.CallTimeout;
        _maintenanceTimeout = OrleansClusterSetup.MaintenanceTimeout(options.Value);
    }

    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        _cacheId = this.GetPrimaryKeyString();
        if (_stateDirectory is not null)
        {
            _folder = new CacheStateFolder(_stateDirectory, _cacheId);
            try
            {
                _manifest = _folder.ReadManifest();
            }
            catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException)
            {
                _broken = new InvalidOperationException($"The coordinator of cache '{_cacheId}' cannot read its manifest: {e.Message}", e);
            }
        }

        return base.OnActivateAsync(cancellationToken);
    }

    public async Task<CacheDescriptor> Create(ShardSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ThrowIfBroken();
        if (_manifest is not null)
        {
            return _manifest.Spec == spec
                ? Describe(_manifest)
                : throw new InvalidOperationException($"Cache '{_cacheId}' already exists as {_manifest.Spec}; it cannot be created as {spec}.");
        }

        if (spec.CacheId != _cacheId)
        {
            throw new ArgumentException($"The coordinator of cache '{_cacheId}' cannot create cache '{spec.CacheId}'.", nameof(spec));
        }

        var manifest = CacheManifest.For(spec);
        _folder?.WriteManifest(manifest);
        _manifest = manifest;
        await ShardCalls.All(_cacheId, "Creating the shards", spec.ShardCount, i => Shard(i).Initialize(spec), _timeout).ConfigureAwait(true);
        return Describe(manifest);
    }

    public async Task<CacheDescriptor> Open()
    {
        var manifest = Ready();
        var versions = await ShardCalls.All(_cacheId, "Opening the cache", manifest.Shards, i => Shard(i).Apply(manifest.Version), _maintenanceTimeout)
            .ConfigureAwait(true);
        var behind = Enumerable.Range(0, versions.Length).Where(i => versions[i] != manifest.Version).ToList();
        if (behind.Count > 0)
        {
            throw new CacheShardException(
                $"Opening cache '{_cacheId}' found shards {string.Join(", ", behind)} at versions {string.Join(", ", behind.Select(i => versions[i]))}; " +
                $"the committed version is {manifest.Version}.",
                behind);
        }

        return Describe(manifest);
    }

    public Task<Reservation> Reserve(long rows, TimeSpan lease)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        var manifest = Ready();
        var now = DateTime.UtcNow;
        if (_lease is { } held && held.Expires > now)
        {
            return Task.FromResult(new Reservation(false, 0, 0, [], 0));
        }

        _lastAttempt = Math.Max(_lastAttempt + 1, now.Ticks); // grows across restarts too, so shards never keep a stale part
        var split = Balance(manifest.ShardCounts, rows);
        _lease = new Lease(manifest.Version + 1, _lastAttempt, split, now + lease);
        return Task.FromResult(new Reservation(true, manifest.Version + 1, _lastAttempt, split, manifest.ShardCounts.Sum()));
    }

    public Task<CacheDescriptor> Commit(long version, long attempt)
    {
        var manifest = Ready();
        if (_lease is not { } held || held.Version != version || held.Attempt != attempt)
        {
            throw new InvalidOperationException(
                $"The add of version {version} (attempt {attempt}) to cache '{_cacheId}' no longer holds the add lease (it expired and another " +
                "add took it); nothing was committed.");
        }

        var next = manifest.Clone();
        next.Version = version;
        for (var i = 0; i < next.ShardCounts.Length; i++)
        {
            next.ShardCounts[i] += held.Rows[i];
        }

        _folder?.WriteManifest(next); // the commit point of a persisted cache
        _manifest = next;
        _lease = null;
        return Task.FromResult(Describe(next));
    }

    public Task Release(long version, long attempt)
    {
        if (_lease is { } held && held.Version == version && held.Attempt == attempt)
        {
            _lease = null;
        }

        return Task.CompletedTask;
    }

    public async Task<CacheDescriptor> Checkpoint()
    {
        var manifest = Ready();
        var folder = _folder ?? throw new NotSupportedException(
            $"Cache '{_cacheId}' keeps no persisted state: set Cache:Orleans:StateDirectory on the silos to checkpoint it.");
        var version = manifest.Version;
        var checkpoints = await ShardCalls.All(_cacheId, "Checkpointing the cache", manifest.Shards, i => Shard(i).Checkpoint(version), _maintenanceTimeout)
            .ConfigureAwait(true);
        var next = _manifest!.Clone();
        next.Checkpoints = [.. checkpoints];
        folder.WriteManifest(next);
        _manifest = next;
        await ShardCalls.All(_cacheId, "Compacting the cache's files", manifest.Shards, i => Shard(i).Compact(version), _maintenanceTimeout)
            .ConfigureAwait(true);
        return Describe(next);
    }

    public Task<CacheDescriptor> Describe() => Task.FromResult(Describe(Ready()));

    public async Task Drop()
    {
        if (_manifest is { } manifest)
        {
            try
            {
                await ShardCalls.All(_cacheId, "Dropping the shards", manifest.Shards, i => Shard(i).Drop(), _timeout).ConfigureAwait(true);
            }
            catch (CacheShardException)
            {
                // An unreachable shard still loses its files below; its memory goes with its silo or its next deactivation.
            }
        }

        if (_folder is not null && Directory.Exists(_folder.Root))
        {
            Directory.Delete(_folder.Root, recursive: true);
        }

        _manifest = null;
        _lease = null;
        DeactivateOnIdle();
    }

    /// <summary>
    /// Rows of an add of <paramref name="rows"/> per shard, so the shards' sizes end as equal as they can: the smallest shards
    /// are filled up to a common level, the remainder goes one row each to the lowest-numbered of them.
    /// </summary>
    internal static long[] Balance(IReadOnlyList<long> counts, long rows)
    {
        var active = Enumerable.Range(0, counts.Count).ToList();
        long level;
        while (true)
        {
            level = (active.Sum(i => counts[i]) + rows) / active.Count;
            var above = active.Where(i => counts[i] > level).ToList();
            if (above.Count == 0)
            {
                break;
            }

            active.RemoveAll(above.Contains);
        }

        var split = new long[counts.Count];
        foreach (var i in active)
        {
            split[i] = level - counts[i];
        }

        var left = rows - split.Sum();
        foreach (var i in active.OrderBy(i => counts[i] + split[i]).ThenBy(i => i))
        {
            if (left-- <= 0)
            {
                break;
            }

            split[i]++;
        }

        return split;
    }

    private ICacheShardGrain Shard(int shard) => GrainFactory.GetGrain<ICacheShardGrain>(ShardKeys.Shard(_cacheId, shard));

    private CacheDescriptor Describe(CacheManifest manifest) => new(manifest.Spec, manifest.Version, [.. manifest.ShardCounts], _folder is not null);

    private void ThrowIfBroken()
    {
        if (_broken is not null)
        {
            throw new InvalidOperationException(_broken.Message);
        }
    }

    private CacheManifest Ready()
    {
        ThrowIfBroken();
        return _manifest ?? throw new InvalidOperationException(
            $"Cache '{_cacheId}' does not exist on this cluster (never created, dropped, or its coordinator re-activated after its silo died " +
            "while the cache keeps no persisted state).");
    }

    private sealed record Lease(long Version, long Attempt, long[] Rows, DateTime Expires);
}
