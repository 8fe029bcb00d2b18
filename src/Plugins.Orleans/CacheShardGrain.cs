using System.Globalization;
using Microsoft.Extensions.Options;
using Orleans;
using ScalableCache.Core;
using ScalableCache.Core.Persistence;
using static TorchSharp.torch;

namespace ScalableCache.Orleans;

/// <summary>
/// A shard: an inner store of the cache's inner provider (created by that provider's factory on the silo), the version it
/// has applied, and the parts of later adds staged. Requests are handled one at a time (the grain is not reentrant), so a
/// query's answer reflects exactly the version it reports; the store's work runs on the thread pool.
/// </summary>
[CollectionAgeLimit(AlwaysActive = true)]
[ShardPlacement]
internal sealed class CacheShardGrain : Grain, ICacheShardGrain
{
    private readonly IReadOnlyList<ICacheMemoryFactory> _factories;
    private readonly string? _stateDirectory;
    private readonly SortedDictionary<long, (long Attempt, ShardRows Rows)> _staged = [];
    private readonly Dictionary<long, Arriving> _arriving = [];
    private string _cacheId = "";
    private int _shard;
    private CacheStateFolder? _folder;
    private ShardSpec? _spec;
    private ICacheMemory? _store;
    private long _applied;
    private Exception? _broken;

    /// <summary>Cache-wide ids of the store's keys, as runs in local order; <see langword="null"/> when unknown (parts or a checkpoint written before ids were recorded).</summary>
    private List<IdRun>? _ids = [];

    public CacheShardGrain(IEnumerable<ICacheMemoryFactory> factories, IOptions<OrleansCacheOptions> options)
    {
        ArgumentNullException.ThrowIfNull(factories);
        ArgumentNullException.ThrowIfNull(options);
        _factories = [.. factories.Where(f => !string.Equals(f.Provider, OrleansCacheMemory.ProviderName, StringComparison.OrdinalIgnoreCase))];
        _stateDirectory = options.Value.StateDirectory;
    }

    public override async Task OnActivateAsync(CancellationToken cancellationToken)
    {
        try
        {
            (_cacheId, _shard) = ShardKeys.Parse(this.GetPrimaryKeyString());
            if (_stateDirectory is not null)
            {
                _folder = new CacheStateFolder(_stateDirectory, _cacheId);
                if (_folder.ReadManifest() is { } manifest)
                {
                    await Task.Run(() => Restore(manifest), cancellationToken).ConfigureAwait(true);
                    await ApplyUpTo(manifest.Version).ConfigureAwait(true);
                }
            }
        }
        catch (Exception e) when (e is IOException or InvalidDataException or CacheFileException or ArgumentException or InvalidOperationException or UnauthorizedAccessException)
        {
            _store?.Dispose();
            _store = null;
            _spec = null;
            _broken = new InvalidOperationException($"Shard {_shard} of cache '{_cacheId}' cannot restore its persisted state: {e.Message}", e);
        }

        await base.OnActivateAsync(cancellationToken).ConfigureAwait(true);
    }

    public override Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        _store?.Dispose();
        _store = null;
        return base.OnDeactivateAsync(reason, cancellationToken);
    }

    public Task Initialize(ShardSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ThrowIfBroken();
        if (_spec is not null)
        {
            return _spec == spec
                ? Task.CompletedTask
                : throw new InvalidOperationException($"Shard {_shard} of cache '{_cacheId}' already holds {_spec}; it cannot become {spec}.");
        }

        if (spec.CacheId != _cacheId || spec.ShardCount <= _shard)
        {
            throw new ArgumentException($"Shard {_shard} of cache '{_cacheId}' cannot hold {spec}.", nameof(spec));
        }

        _store = CreateStore(spec);
        _spec = spec;
        _applied = 0;
        _ids = [];
        return Task.CompletedTask;
    }

    public async Task Stage(long version, long attempt, int piece, int pieces, ShardRows rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        var spec = Ready();
        if (rows.Keys.Shape is not [var n, var d] || d != spec.Dimension || n != rows.Count || pieces < 1 || (uint)piece >= (uint)pieces)
        {
            throw new ArgumentException(
                $"Shard {_shard} of cache '{_cacheId}' got piece {piece} of {pieces}: keys of shape [{string.Join(", ", rows.Keys.Shape)}] with " +
                $"{rows.Count} labels; expected [n, {spec.Dimension}], n labels and 0 ≤ piece < pieces.",
                nameof(rows));
        }

        if (version <= _applied || (_staged.TryGetValue(version, out var staged) && staged.Attempt >= attempt)
            || (_arriving.TryGetValue(version, out var arriving) && arriving.Attempt > attempt))
        {
            return; // a late copy of a part already applied or staged, or of an attempt already replaced
        }

        if (arriving is null || arriving.Attempt != attempt || arriving.Pieces.Length != pieces)
        {
            arriving = new Arriving(attempt, new ShardRows?[pieces]);
            _arriving[version] = arriving;
        }

        arriving.Pieces[piece] = rows;
        if (arriving.Pieces.Any(p => p is null))
        {
            return;
        }

        _arriving.Remove(version);
        var part = pieces == 1 ? rows : Concatenate(arriving.Pieces!, spec.Dimension);
        if (_folder is not null)
        {
            await Task.Run(() => _folder.WritePart(_shard, version, attempt, part)).ConfigureAwait(true);
        }

        _staged[version] = (attempt, part);
    }

    public async Task<long> Apply(long version)
    {
        Ready();
        await ApplyUpTo(version).ConfigureAwait(true);
        return _applied;
    }

    public async Task<ShardAnswer> Query(TensorData queries, double[] thetas, long version)
    {
        ArgumentNullException.ThrowIfNull(queries);
        ArgumentNullException.ThrowIfNull(thetas);
        Ready();
        await ApplyUpTo(version).ConfigureAwait(true);
        var store = _store!;
        var logMass = await Task.Run(() =>
        {
            using var scope = NewDisposeScope();
            var q = queries.ToTensor();
            return TensorData.From(store.ClassLogMass(q, thetas));
        }).ConfigureAwait(true);
        return new ShardAnswer(_applied, logMass);
    }

    public async Task<ShardRetrieved> Retrieve(TensorData queries, long version)
    {
        ArgumentNullException.ThrowIfNull(queries);
        var spec = Ready();
        await ApplyUpTo(version).ConfigureAwait(true);
        if (_store is not IKeyRetrievingCacheMemory store)
        {
            throw new NotSupportedException($"Shard {_shard} of cache '{_cacheId}' holds a '{spec.Inner}' store, which sums over every key: it retrieves none.");
        }

        var ids = _ids ?? throw new InvalidOperationException(
            $"Shard {_shard} of cache '{_cacheId}' was restored from files written before key ids were recorded, so it cannot name the keys it retrieves.");
        var local = await Task.Run(() =>
        {
            using var scope = NewDisposeScope();
            return store.RetrievedKeys(queries.ToTensor());
        }).ConfigureAwait(true);
        return new ShardRetrieved(_applied, [.. local.Select(row => Array.ConvertAll(row, k => IdRun.Global(ids, k)))]);
    }

    public async Task<ShardCheckpoint> Checkpoint(long version)
    {
        var spec = Ready();
        var folder = _folder ?? throw new NotSupportedException(
            $"Shard {_shard} of cache '{_cacheId}' keeps no persisted state: set Cache:Orleans:StateDirectory on the silos.");
        await ApplyUpTo(version).ConfigureAwait(true);
        if (_applied != version)
        {
            throw new InvalidOperationException($"Shard {_shard} of cache '{_cacheId}' is at version {_applied}; it cannot checkpoint version {version}.");
        }

        var name = CacheStateFolder.CheckpointName(_shard, version);
        var path = Path.Combine(folder.Root, name);
        var store = _store!;
        var header = new CacheFileHeader
        {
            Model = new CacheModelId("orleans-shard"),
            Metadata = new Dictionary<string, string>
            {
                [MetadataCache] = spec.CacheId,
                [MetadataShard] = _shard.ToString(CultureInfo.InvariantCulture),
                [MetadataVersion] = version.ToString(CultureInfo.InvariantCulture),
            },
        };
        if (_ids is not null)
        {
            header = header with { Metadata = new Dictionary<string, string>(header.Metadata) { [MetadataIds] = IdRun.Format(_ids) } };
        }

        var (count, digest) = await Task.Run(() =>
        {
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            var written = CacheFile.Save(path, header, store);
            return (written.Count, CacheStateFolder.Sha256Of(path));
        }).ConfigureAwait(true);
        return new ShardCheckpoint(_shard, version, count, name, digest);
    }

    public Task Compact(long version)
    {
        Ready();
        _folder?.Compact(_shard, version, CacheStateFolder.CheckpointName(_shard, version));
        return Task.CompletedTask;
    }

    public Task<ShardStatus> Status()
    {
        Ready();
        return Task.FromResult(new ShardStatus(_applied, _store!.Count, _staged.Count, RuntimeIdentity));
    }

    public Task Drop()
    {
        _store?.Dispose();
        _store = null;
        _spec = null;
        _ids = [];
        _staged.Clear();
        _arriving.Clear();
        _broken = null;
        if (_folder is not null && Directory.Exists(_folder.ShardFolder(_shard)))
        {
            Directory.Delete(_folder.ShardFolder(_shard), recursive: true);
        }

        DeactivateOnIdle();
        return Task.CompletedTask;
    }

    internal const string MetadataCache = "orleans.cache";
    internal const string MetadataShard = "orleans.shard";
    internal const string MetadataVersion = "orleans.version";
    internal const string MetadataIds = "orleans.ids";

    /// <summary>Applies staged versions in order up to <paramref name="version"/>; a version with no staged part is an error.</summary>
    private async Task ApplyUpTo(long version)
    {
        while (_applied < version)
        {
            var next = _applied + 1;
            if (!_staged.TryGetValue(next, out var part))
            {
                throw new InvalidOperationException(
                    $"Shard {_shard} of cache '{_cacheId}' has no part of committed version {next}, so it cannot answer at version {version} " +
                    "(the part was never staged here, or was lost with the shard's state).");
            }

            if (part.Rows.Count > 0)
            {
                var store = _store!;
                await Task.Run(() =>
                {
                    using var scope = NewDisposeScope();
                    var keys = part.Rows.Keys.ToTensor();
                    var labels = tensor(Array.ConvertAll(part.Rows.Labels, l => (long)l));
                    store.Add(keys, labels);
                }).ConfigureAwait(true);
                if (part.Rows.FirstId < 0)
                {
                    _ids = null;
                }
                else if (_ids is { } ids)
                {
                    ids.Add(new IdRun(ids.Count == 0 ? 0 : ids[^1].End, part.Rows.FirstId, part.Rows.Count));
                }
            }

            _staged.Remove(next);
            _applied = next;
        }
    }

    /// <summary>Loads the shard's checkpoint (checked against the manifest) and stages its parts from the folder.</summary>
    private void Restore(CacheManifest manifest)
    {
        var folder = _folder!;
        var spec = manifest.Spec;
        if (_shard >= spec.ShardCount)
        {
            throw new InvalidDataException($"the manifest '{folder.ManifestPath}' lists {spec.ShardCount} shards.");
        }

        ICacheMemory store;
        long applied = 0;
        List<IdRun>? ids = [];
        if (manifest.Checkpoints.FirstOrDefault(c => c.Shard == _shard) is { } checkpoint)
        {
            var path = Path.Combine(folder.Root, checkpoint.File);
            if (!File.Exists(path))
            {
                throw new InvalidDataException($"its checkpoint file '{path}' is missing.");
            }

            var digest = CacheStateFolder.Sha256Of(path);
            if (!string.Equals(digest, checkpoint.Sha256, StringComparison.OrdinalIgnoreCase))
            {
                throw new InvalidDataException($"its checkpoint file '{path}' has SHA-256 {digest}; the manifest records {checkpoint.Sha256}.");
            }

            var loaded = CacheFile.Load(path, _factories);
            store = loaded.Memory;
            var meta = loaded.Header.Metadata;
            var cache = meta.GetValueOrDefault(MetadataCache);
            var shard = meta.GetValueOrDefault(MetadataShard);
            var version = meta.GetValueOrDefault(MetadataVersion);
            if (cache != spec.CacheId || shard != _shard.ToString(CultureInfo.InvariantCulture)
                || version != checkpoint.Version.ToString(CultureInfo.InvariantCulture)
                || store.Count != checkpoint.Count || store.Dimension != spec.Dimension || store.ClassCount != spec.ClassCount
                || !string.Equals(store.Provider, spec.Inner, StringComparison.OrdinalIgnoreCase))
            {
                store.Dispose();
                throw new InvalidDataException(
                    $"its checkpoint file '{path}' holds {store.Count} '{store.Provider}' keys of dimension {store.Dimension} for cache " +
                    $"'{cache}', shard {shard}, version {version}; the manifest expects {checkpoint.Count} '{spec.Inner}' keys of dimension " +
                    $"{spec.Dimension} for shard {_shard} at version {checkpoint.Version}.");
            }

            applied = checkpoint.Version;
            try
            {
                ids = meta.TryGetValue(MetadataIds, out var runs) ? IdRun.Parse(runs, store.Count) : null;
            }
            catch
            {
                store.Dispose();
                throw;
            }
        }
        else
        {
            store = CreateStore(spec);
        }

        try
        {
            foreach (var v in folder.PartVersions(_shard).Where(v => v > applied))
            {
                _staged[v] = folder.ReadPart(_shard, v, spec.Dimension);
            }
        }
        catch
        {
            store.Dispose();
            throw;
        }

        _store = store;
        _spec = spec;
        _applied = applied;
        _ids = ids;
    }

    private static ShardRows Concatenate(ShardRows?[] pieces, int dimension)
    {
        var rows = pieces.Sum(p => p!.Count);
        var keys = new byte[4L * rows * dimension];
        var labels = new int[rows];
        var (offset, row) = (0, 0);
        foreach (var p in pieces)
        {
            p!.Keys.Data.CopyTo(keys, offset);
            p.Labels.CopyTo(labels, row);
            offset += p.Keys.Data.Length;
            row += p.Count;
        }

        return new ShardRows(new TensorData { Shape = [rows, dimension], Data = keys }, labels, pieces[0]!.FirstId);
    }

    private ICacheMemory CreateStore(ShardSpec spec)
    {
        try
        {
            return CacheProviderSelector.Find(_factories, spec.Inner).Create(spec.Dimension, spec.ClassCount);
        }
        catch (UnknownProviderException e)
        {
            throw new InvalidOperationException($"Shard {_shard} of cache '{_cacheId}': {e.Message} (on silo {RuntimeIdentity}).");
        }
    }

    private void ThrowIfBroken()
    {
        if (_broken is not null)
        {
            throw new InvalidOperationException(_broken.Message); // the cause (a CacheFileException, say) does not cross grain calls
        }
    }

    private ShardSpec Ready()
    {
        ThrowIfBroken();
        return _spec ?? throw new InvalidOperationException(
            $"Shard {_shard} of cache '{_cacheId}' holds no state: its grain was activated without being created, or re-activated after " +
            "its silo died while the cache keeps no persisted state (Cache:Orleans:StateDirectory on the silos makes shards recoverable).");
    }

    /// <summary>The pieces of one attempt's part received so far.</summary>
    private sealed record Arriving(long Attempt, ShardRows?[] Pieces);

    /// <summary>Keys <c>[Local, Local + Count)</c> of a shard's store have cache-wide ids <c>[Id, Id + Count)</c>.</summary>
    internal sealed record IdRun(long Local, long Id, long Count)
    {
        public long End => Local + Count;

        /// <summary>The cache-wide id of local key <paramref name="local"/>.</summary>
        public static long Global(List<IdRun> runs, long local)
        {
            var (lo, hi) = (0, runs.Count - 1);
            while (lo <= hi)
            {
                var mid = (lo + hi) >>> 1;
                var run = runs[mid];
                if (local < run.Local)
                {
                    hi = mid - 1;
                }
                else if (local >= run.End)
                {
                    lo = mid + 1;
                }
                else
                {
                    return run.Id + (local - run.Local);
                }
            }

            throw new InvalidOperationException($"Key {local} of a shard has no recorded id (the runs cover {(runs.Count == 0 ? 0 : runs[^1].End)} keys).");
        }

        public static string Format(List<IdRun> runs) =>
            string.Join(',', runs.Select(r => string.Create(CultureInfo.InvariantCulture, $"{r.Local}:{r.Id}:{r.Count}")));

        /// <summary>Reads <see cref="Format"/>'s text; the runs must follow one another from 0 and cover <paramref name="count"/> keys.</summary>
        public static List<IdRun> Parse(string text, long count)
        {
            var runs = new List<IdRun>();
            foreach (var item in text.Split(',', StringSplitOptions.RemoveEmptyEntries))
            {
                var parts = item.Split(':');
                if (parts.Length != 3 || !long.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var local)
                    || !long.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var id)
                    || !long.TryParse(parts[2], NumberStyles.None, CultureInfo.InvariantCulture, out var n)
                    || local != (runs.Count == 0 ? 0 : runs[^1].End))
                {
                    throw new InvalidDataException($"its key-id runs ('{MetadataIds}') are malformed at '{item}'.");
                }

                runs.Add(new IdRun(local, id, n));
            }

            return (runs.Count == 0 ? 0 : runs[^1].End) == count
                ? runs
                : throw new InvalidDataException($"its key-id runs ('{MetadataIds}') cover {(runs.Count == 0 ? 0 : runs[^1].End)} keys; the store holds {count}.");
        }
    }
}
