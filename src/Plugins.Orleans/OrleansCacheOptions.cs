namespace ScalableCache.Orleans;

/// <summary>
/// Settings of the Orleans store (configuration section <c>Cache:Orleans</c>), read by clients (the memories and their
/// factory) and by silos (<c>scache silo</c>). The cache is split into <see cref="Shards"/> grains, each holding a store of
/// the <see cref="Inner"/> provider; a query fans out to every shard and merges their log-masses exactly.
/// </summary>
public sealed class OrleansCacheOptions
{
    /// <summary>Configuration section name.</summary>
    public const string SectionName = "Cache:Orleans";

    /// <summary>Most shards one cache may have.</summary>
    public const int MaxShards = 1024;

    /// <summary>
    /// Provider of each shard's store, registered on every silo: <c>Exact</c> (the default; the sharded answer is then the
    /// single store's), <c>Hnsw</c> (the union of the shards' top-k, not one global top-k) or <c>RandomProjection</c>
    /// (each shard projects with the same seeded matrix). Matched case-insensitively; <c>Orleans</c> itself is refused.
    /// </summary>
    public string Inner { get; set; } = "Exact";

    /// <summary>Number of shard grains per cache, 1 … <see cref="MaxShards"/>. Default 3.</summary>
    public int Shards { get; set; } = 3;

    /// <summary>How silos find each other and clients find silos: <see cref="OrleansClustering.Localhost"/> (the default) or <see cref="OrleansClustering.Redis"/>.</summary>
    public OrleansClustering Clustering { get; set; } = OrleansClustering.Localhost;

    /// <summary>StackExchange.Redis configuration string of the membership table when <see cref="Clustering"/> is Redis. Default <c>127.0.0.1:6379</c>.</summary>
    public string RedisConfiguration { get; set; } = "127.0.0.1:6379";

    /// <summary>Orleans cluster id: silos and clients of one cluster share it. Default <c>scache</c>.</summary>
    public string ClusterId { get; set; } = "scache";

    /// <summary>Orleans service id (stable across deployments of the same service). Default <c>scache</c>.</summary>
    public string ServiceId { get; set; } = "scache";

    /// <summary>
    /// Redis clustering only: the IP address a silo advertises to the others and to clients (<see langword="null"/>, the
    /// default: 127.0.0.1, for silos on one machine). On several machines set each silo's own reachable address; it then
    /// listens on every interface.
    /// </summary>
    public string? AdvertisedAddress { get; set; }

    /// <summary>Silo-to-silo port of a silo (TCP). Default 11111.</summary>
    public int SiloPort { get; set; } = 11111;

    /// <summary>Client gateway port of a silo (TCP). Default 30000.</summary>
    public int GatewayPort { get; set; } = 30000;

    /// <summary>
    /// Localhost clustering only: the silo port of the primary silo, which the others join (default: <see cref="SiloPort"/>,
    /// so a lone silo is its own primary).
    /// </summary>
    public int? PrimarySiloPort { get; set; }

    /// <summary>
    /// Localhost clustering only: the gateway ports a client connects to (default: <see cref="GatewayPort"/>). With Redis
    /// clustering clients read the gateways from the membership table.
    /// </summary>
    public IList<int> GatewayPorts { get; set; } = [];

    /// <summary>
    /// Longest wait for one shard's answer, in seconds (default 10): a shard that does not answer in time fails the
    /// whole call with a <see cref="CacheShardException"/> naming it. Also the Orleans response timeout of clients.
    /// </summary>
    public double CallTimeoutSeconds { get; set; } = 10;

    /// <summary>
    /// Largest payload of one grain call, in bytes (default 16 MiB; Orleans refuses messages over 100 MiB): a shard's part
    /// of a larger add travels in several calls (staged once complete), a larger query batch in several sub-batches (all
    /// answered at one version). Range 64 KiB … 64 MiB.
    /// </summary>
    public int MessageBytes { get; set; } = 16 << 20;

    /// <summary>
    /// Silos only: folder (shared by every silo that may host a shard, e.g. a network file system across machines) where
    /// each cache keeps its manifest, every shard's part of each add (written before the add commits) and the shards'
    /// checkpoint cache files. A shard grain that re-activates, on any silo, restores itself from there.
    /// <see langword="null"/> (the default): caches live in memory only, and a shard whose silo dies has lost its keys
    /// (its queries then fail, naming it).
    /// </summary>
    public string? StateDirectory { get; set; }

    /// <summary>A copy, so later changes to the options object do not affect what was built from it.</summary>
    public OrleansCacheOptions Clone()
    {
        var copy = (OrleansCacheOptions)MemberwiseClone();
        copy.GatewayPorts = [.. GatewayPorts];
        return copy;
    }

    /// <summary>The call timeout as a <see cref="TimeSpan"/>.</summary>
    public TimeSpan CallTimeout => TimeSpan.FromSeconds(CallTimeoutSeconds);

    /// <summary>Every problem with these settings, as messages naming the setting; empty when they are valid.</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (string.IsNullOrWhiteSpace(Inner))
        {
            errors.Add("Cache:Orleans:Inner must name the provider of each shard's store (Exact, Hnsw or RandomProjection).");
        }
        else if (string.Equals(Inner.Trim(), OrleansCacheMemory.ProviderName, StringComparison.OrdinalIgnoreCase))
        {
            errors.Add("Cache:Orleans:Inner must not be Orleans itself; name the store each shard holds (e.g. Exact or Hnsw).");
        }

        if (Shards is < 1 or > MaxShards)
        {
            errors.Add($"Cache:Orleans:Shards must be between 1 and {MaxShards} (got {Shards}).");
        }

        if (!Enum.IsDefined(Clustering))
        {
            errors.Add($"Cache:Orleans:Clustering '{Clustering}' is not one of {string.Join(", ", Enum.GetNames<OrleansClustering>())}.");
        }

        if (Clustering == OrleansClustering.Redis && string.IsNullOrWhiteSpace(RedisConfiguration))
        {
            errors.Add("Cache:Orleans:RedisConfiguration must be set when Cache:Orleans:Clustering is Redis.");
        }

        if (AdvertisedAddress is not null && !System.Net.IPAddress.TryParse(AdvertisedAddress, out _))
        {
            errors.Add($"Cache:Orleans:AdvertisedAddress '{AdvertisedAddress}' is not an IP address.");
        }

        if (string.IsNullOrWhiteSpace(ClusterId) || string.IsNullOrWhiteSpace(ServiceId))
        {
            errors.Add("Cache:Orleans:ClusterId and Cache:Orleans:ServiceId must not be empty.");
        }

        foreach (var (name, port) in new[] { ("SiloPort", SiloPort), ("GatewayPort", GatewayPort), ("PrimarySiloPort", PrimarySiloPort ?? 1) }
                     .Concat(GatewayPorts.Select(p => ("GatewayPorts", p))))
        {
            if (port is < 1 or > 65535)
            {
                errors.Add($"Cache:Orleans:{name} must be a TCP port, 1 … 65535 (got {port}).");
            }
        }

        if (!(CallTimeoutSeconds > 0) || !double.IsFinite(CallTimeoutSeconds) || CallTimeoutSeconds > 86_400)
        {
            errors.Add($"Cache:Orleans:CallTimeoutSeconds must be positive seconds, at most a day (got {CallTimeoutSeconds}).");
        }

        if (MessageBytes is < (64 << 10) or > (64 << 20))
        {
            errors.Add($"Cache:Orleans:MessageBytes must be between {64 << 10} and {64 << 20} bytes (got {MessageBytes}).");
        }

        if (StateDirectory is not null && string.IsNullOrWhiteSpace(StateDirectory))
        {
            errors.Add("Cache:Orleans:StateDirectory must be a folder path when set.");
        }

        return errors;
    }

    /// <summary>A copy that <see cref="Validate"/> accepts; otherwise an <see cref="ArgumentException"/> listing every problem.</summary>
    internal OrleansCacheOptions ValidatedClone(string paramName)
    {
        var errors = Validate();
        return errors.Count == 0
            ? Clone()
            : throw new ArgumentException("Invalid Orleans cache options: " + string.Join(" ", errors), paramName);
    }
}

/// <summary>How the silos of a cluster find each other (Orleans membership) and clients find silos.</summary>
public enum OrleansClustering
{
    /// <summary>Orleans development clustering on this machine: a primary silo at <see cref="OrleansCacheOptions.PrimarySiloPort"/>; for one machine only.</summary>
    Localhost,

    /// <summary>The membership table in Redis (<see cref="OrleansCacheOptions.RedisConfiguration"/>): one machine or many.</summary>
    Redis,
}
