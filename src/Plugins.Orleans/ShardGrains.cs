using Orleans;
using Orleans.Concurrency;

namespace ScalableCache.Orleans;

/// <summary>
/// One shard of one cache (key <c>{cacheId}/{shard}</c>): an inner store plus the parts of adds staged but not yet applied.
/// It applies staged versions in order, only up to a version a caller names as committed.
/// </summary>
internal interface ICacheShardGrain : IGrainWithStringKey
{
    /// <summary>Makes the shard an empty store of <paramref name="spec"/> (idempotent for the same spec).</summary>
    Task Initialize(ShardSpec spec);

    /// <summary>
    /// Receives piece <paramref name="piece"/> of <paramref name="pieces"/> of this shard's part of add <paramref name="version"/>
    /// (a part larger than one message travels in several); once every piece of an attempt has come the part is staged
    /// (durably, when the cache persists). A lower attempt never replaces a higher one.
    /// </summary>
    Task Stage(long version, long attempt, int piece, int pieces, ShardRows rows);

    /// <summary>Applies every staged version up to the committed <paramref name="version"/>; returns the version applied.</summary>
    Task<long> Apply(long version);

    /// <summary>Log-mass of <paramref name="queries"/> after applying up to the committed <paramref name="version"/>, with the version it reflects.</summary>
    Task<ShardAnswer> Query(TensorData queries, double[] thetas, long version);

    /// <summary>
    /// The cache-wide ids of the keys the shard's store retrieves for <paramref name="queries"/> (an HNSW store's top-k) after
    /// applying up to the committed <paramref name="version"/>; a store that sums over every key refuses (<see cref="NotSupportedException"/>).
    /// </summary>
    Task<ShardRetrieved> Retrieve(TensorData queries, long version);

    /// <summary>Applies up to <paramref name="version"/> and saves the store as a cache file in the cache's folder.</summary>
    Task<ShardCheckpoint> Checkpoint(long version);

    /// <summary>Deletes staged parts and checkpoint files that the checkpoint at <paramref name="version"/> made redundant.</summary>
    Task Compact(long version);

    /// <summary>The shard's condition; fails, naming the problem, when the shard lost or could not restore its state.</summary>
    [AlwaysInterleave]
    Task<ShardStatus> Status();

    /// <summary>Releases the store and its files; the grain deactivates.</summary>
    Task Drop();
}

/// <summary>
/// The coordinator of one cache (key <c>{cacheId}</c>): its spec, the committed version (the commit point of every add),
/// the keys per shard, the add lease, and the manifest on disk when the cache persists.
/// </summary>
internal interface ICacheCoordinatorGrain : IGrainWithStringKey
{
    /// <summary>Creates the cache and initialises its shards (idempotent for the same spec).</summary>
    Task<CacheDescriptor> Create(ShardSpec spec);

    /// <summary>Attaches to an existing cache: restores it from its manifest if needed and checks every shard answers at the committed version.</summary>
    Task<CacheDescriptor> Open();

    /// <summary>Reserves the next version for an add of <paramref name="rows"/> rows, split so shard sizes stay balanced.</summary>
    Task<Reservation> Reserve(long rows, TimeSpan lease);

    /// <summary>Commits a reserved add whose parts every shard has staged: the commit point. Returns the cache after it.</summary>
    Task<CacheDescriptor> Commit(long version, long attempt);

    /// <summary>Gives up a reservation (its staged parts are never applied).</summary>
    Task Release(long version, long attempt);

    /// <summary>Checkpoints every shard at the committed version and writes the manifest.</summary>
    Task<CacheDescriptor> Checkpoint();

    /// <summary>The cache as committed now.</summary>
    [AlwaysInterleave]
    Task<CacheDescriptor> Describe();

    /// <summary>Drops every shard and the cache's files.</summary>
    Task Drop();
}

/// <summary>Grain keys of a cache's coordinator and shards.</summary>
internal static class ShardKeys
{
    public static string Shard(string cacheId, int shard) => $"{cacheId}/{shard}";

    /// <summary>The cache id and shard index of a shard grain key.</summary>
    public static (string CacheId, int Shard) Parse(string key)
    {
        var slash = key.LastIndexOf('/');
        return slash > 0 && int.TryParse(key.AsSpan(slash + 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var shard)
            ? (key[..slash], shard)
            : throw new ArgumentException($"'{key}' is not a shard key ({{cacheId}}/{{shard}}).", nameof(key));
    }
}
