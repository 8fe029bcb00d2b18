namespace ScalableCache.Core;

/// <summary>Which key store the host uses (configuration section <c>Cache</c>; each provider has its own sub-section).</summary>
public sealed class CacheOptions
{
    /// <summary>Configuration section name.</summary>
    public const string SectionName = "Cache";

    /// <summary>Registered provider name: <c>Exact</c>, <c>RandomProjection</c> or <c>Hnsw</c>.</summary>
    public string Provider { get; set; } = "Exact";
}
