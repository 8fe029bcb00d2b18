using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Orleans;
using ScalableCache.Core;

namespace ScalableCache.Orleans;

/// <summary>
/// Creates Orleans memories (provider <c>Orleans</c>): caches of <see cref="OrleansCacheOptions.Shards"/> shard grains on a
/// running cluster. Given an <see cref="IGrainFactory"/> (an application's <c>IClusterClient</c>) it uses that; otherwise it
/// starts an Orleans client of its own on first use, from the clustering settings, and stops it when disposed.
/// </summary>
public sealed class OrleansCacheMemoryFactory : IDurableCacheMemoryFactory, IDisposable
{
    private readonly OrleansCacheOptions _options;
    private readonly IGrainFactory? _grains;
    private readonly Lock _gate = new();
    private IHost? _client;
    private bool _disposed;

    /// <summary>Creates the factory over the caller's cluster client (or a silo's grain factory); the options are validated and copied.</summary>
    /// <exception cref="ArgumentException">The options are invalid; the message names every setting at fault.</exception>
    public OrleansCacheMemoryFactory(OrleansCacheOptions options, IGrainFactory grains)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(grains);
        _options = options.ValidatedClone(nameof(options));
        _grains = grains;
    }

    /// <summary>
    /// Creates the factory with a client of its own, connected on first use to the cluster the clustering settings name
    /// (<see cref="OrleansCacheOptions.Clustering"/>, ports, cluster id); the options are validated and copied.
    /// </summary>
    public OrleansCacheMemoryFactory(OrleansCacheOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options.ValidatedClone(nameof(options));
    }

    /// <summary>The dependency-injection constructor (own client).</summary>
    public OrleansCacheMemoryFactory(IOptions<OrleansCacheOptions> options)
        : this(options?.Value ?? throw new ArgumentNullException(nameof(options)))
    {
    }

    /// <inheritdoc />
    public string Provider => OrleansCacheMemory.ProviderName;

    /// <summary>The options memories are created with (a copy).</summary>
    public OrleansCacheOptions Options => _options.Clone();

    /// <inheritdoc />
    /// <exception cref="InvalidOperationException">No cluster could be reached (the message says which clustering it tried).</exception>
    public ICacheMemory Create(int dimension, int classCount) => CreateSharded(dimension, classCount);

    /// <summary>Creates an empty cache on the cluster, typed as the implementation; see <see cref="OrleansCacheMemory.Create"/>.</summary>
    public OrleansCacheMemory CreateSharded(int dimension, int classCount, string? cacheId = null) =>
        OrleansCacheMemory.CreateCore(Grains(), dimension, classCount, _options, cacheId, null);

    /// <summary>Attaches to the existing cache <paramref name="cacheId"/>; see <see cref="OrleansCacheMemory.Open"/>.</summary>
    public OrleansCacheMemory Open(string cacheId) => OrleansCacheMemory.OpenCore(Grains(), cacheId, _options, null);

    /// <inheritdoc cref="Open"/>
    public IDurableCacheMemory Reopen(string durableId) => Open(durableId);

    /// <summary>Stops the client this factory started, if any; memories it made stop working.</summary>
    public void Dispose()
    {
        IHost? client;
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            client = _client;
            _client = null;
        }

        if (client is not null)
        {
            Task.Run(async () =>
            {
                using var stop = new CancellationTokenSource(_options.CallTimeout);
                await client.StopAsync(stop.Token).ConfigureAwait(false);
            }).GetAwaiter().GetResult();
            client.Dispose();
        }
    }

    private IGrainFactory Grains()
    {
        if (_grains is not null)
        {
            return _grains;
        }

        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_client is null)
            {
                try
                {
                    using var connect = new CancellationTokenSource(OrleansClusterSetup.ConnectTimeout(_options));
                    _client = Task.Run(() => OrleansClusterSetup.StartClientAsync(_options, connect.Token)).GetAwaiter().GetResult();
                }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    var why = e is OperationCanceledException or TimeoutException
                        ? $"no gateway answered within {OrleansClusterSetup.ConnectTimeout(_options).TotalSeconds} s."
                        : e.Message;
                    var where = _options.Clustering == OrleansClustering.Redis
                        ? $"Redis clustering at '{_options.RedisConfiguration}'"
                        : $"localhost clustering, gateway ports {string.Join(", ", _options.GatewayPorts.Count > 0 ? _options.GatewayPorts : [_options.GatewayPort])}";
                    throw new InvalidOperationException(
                        $"Cannot reach the Orleans cluster '{_options.ClusterId}' ({where}): {why} Start the silos (scache silo) or set Cache:Orleans:Clustering and its settings.",
                        e);
                }
            }

            return _client.Services.GetService(typeof(IClusterClient)) as IGrainFactory
                ?? throw new InvalidOperationException("The Orleans client host has no IClusterClient.");
        }
    }
}
