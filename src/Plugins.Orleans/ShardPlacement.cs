using Orleans;
using Orleans.Placement;
using Orleans.Runtime;
using Orleans.Runtime.Placement;

namespace ScalableCache.Orleans;

/// <summary>Places shard <c>i</c> of a cache on silo <c>(h + i) mod s</c> of the <c>s</c> compatible silos (sorted by address), <c>h</c> a hash of the cache id.</summary>
[GenerateSerializer, Immutable, SuppressReferenceTracking]
internal sealed class ShardPlacementStrategy : PlacementStrategy
{
    internal static readonly ShardPlacementStrategy Singleton = new();
}

/// <summary>Marks a grain class as placed by <see cref="ShardPlacementStrategy"/>.</summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false)]
internal sealed class ShardPlacementAttribute : PlacementAttribute
{
    public ShardPlacementAttribute()
        : base(ShardPlacementStrategy.Singleton)
    {
    }
}

/// <summary>Spreads a cache's shards over the silos, one per silo while there are enough, so each silo holds about 1/s of the keys.</summary>
internal sealed class ShardPlacementDirector : IPlacementDirector
{
    public Task<SiloAddress> OnAddActivation(PlacementStrategy strategy, PlacementTarget target, IPlacementContext context)
    {
        ArgumentNullException.ThrowIfNull(context);
        var silos = context.GetCompatibleSilos(target).OrderBy(s => s.ToString(), StringComparer.Ordinal).ToArray();
        if (silos.Length == 0)
        {
            throw new OrleansException($"No silo can host shard grain {target.GrainIdentity}.");
        }

        var (cacheId, shard) = ShardKeys.Parse(target.GrainIdentity.Key.ToString()!);
        var offset = Fnv1a(cacheId) % (uint)silos.Length;
        return Task.FromResult(silos[(int)((offset + (uint)shard) % (uint)silos.Length)]);
    }

    private static uint Fnv1a(string text)
    {
        var hash = 2166136261u;
        foreach (var c in text)
        {
            hash = (hash ^ c) * 16777619u;
        }

        return hash;
    }
}
