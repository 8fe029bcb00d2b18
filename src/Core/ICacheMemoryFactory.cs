namespace ScalableCache.Core;

/// <summary>
/// Creates empty memories of one provider. Each backend registers one factory through its
/// <c>AddXxxCache(...)</c> extension; the host picks one by <see cref="CacheOptions.Provider"/>.
/// </summary>
public interface ICacheMemoryFactory
{
    /// <summary>Provider name, matched case-insensitively against <see cref="CacheOptions.Provider"/>.</summary>
    string Provider { get; }

    /// <summary>Creates an empty memory for keys of <paramref name="dimension"/> and labels in <c>[0, classCount)</c>.</summary>
    ICacheMemory Create(int dimension, int classCount);
}
