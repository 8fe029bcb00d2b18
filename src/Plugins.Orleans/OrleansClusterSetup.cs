using System.Net;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Orleans.Configuration;
using Orleans.Hosting;

namespace ScalableCache.Orleans;

/// <summary>The clustering every silo and client of a cache cluster shares, from <see cref="OrleansCacheOptions"/>.</summary>
internal static class OrleansClusterSetup
{
    /// <summary>Bound on a client's first connection to the cluster (three call timeouts, at least 15 s).</summary>
    public static TimeSpan ConnectTimeout(OrleansCacheOptions options) => TimeSpan.FromSeconds(Math.Max(3 * options.CallTimeoutSeconds, 15));

    /// <summary>Bound on restores, checkpoints and opens, which read or write a shard's whole store.</summary>
    public static TimeSpan MaintenanceTimeout(OrleansCacheOptions options) =>
        TimeSpan.FromSeconds(Math.Max(options.CallTimeoutSeconds, 300));

    public static void ConfigureSilo(ISiloBuilder silo, OrleansCacheOptions options)
    {
        silo.Configure<ClusterOptions>(o =>
        {
            o.ClusterId = options.ClusterId;
            o.ServiceId = options.ServiceId;
        });
        if (options.Clustering == OrleansClustering.Redis)
        {
            silo.UseRedisClustering(options.RedisConfiguration);
            var advertised = options.AdvertisedAddress is null ? IPAddress.Loopback : IPAddress.Parse(options.AdvertisedAddress);
            silo.ConfigureEndpoints(advertised, options.SiloPort, options.GatewayPort, listenOnAnyHostAddress: !IPAddress.IsLoopback(advertised));
        }
        else
        {
            var primary = new IPEndPoint(IPAddress.Loopback, options.PrimarySiloPort ?? options.SiloPort);
            silo.UseLocalhostClustering(options.SiloPort, options.GatewayPort, primary, options.ServiceId, options.ClusterId);
        }
    }

    public static void ConfigureClient(IClientBuilder client, OrleansCacheOptions options)
    {
        client.Configure<ClusterOptions>(o =>
        {
            o.ClusterId = options.ClusterId;
            o.ServiceId = options.ServiceId;
        });
        client.Configure<ClientMessagingOptions>(o => o.ResponseTimeout = MaintenanceTimeout(options));
        if (options.Clustering == OrleansClustering.Redis)
        {
            client.UseRedisClustering(options.RedisConfiguration);
        }
        else
        {
            var ports = options.GatewayPorts.Count > 0 ? options.GatewayPorts.ToArray() : [options.GatewayPort];
            client.UseLocalhostClustering(ports, options.ServiceId, options.ClusterId);
        }
    }

    /// <summary>The silo services shard grains need (their options, their placement, response timeouts long enough for restores).</summary>
    public static void AddShardServices(ISiloBuilder silo)
    {
        silo.Services.AddPlacementDirector<ShardPlacementStrategy, ShardPlacementDirector>();
        silo.Services.AddOptions<SiloMessagingOptions>().Configure<Microsoft.Extensions.Options.IOptions<OrleansCacheOptions>>(
            (o, cache) => o.ResponseTimeout = MaintenanceTimeout(cache.Value));
    }

    /// <summary>A started Orleans client for <paramref name="options"/>, in a host of its own.</summary>
    public static async Task<IHost> StartClientAsync(OrleansCacheOptions options, CancellationToken cancellationToken)
    {
        var host = new HostBuilder()
            .UseOrleansClient(client => ConfigureClient(client, options))
            .Build();
        try
        {
            await host.StartAsync(cancellationToken).WaitAsync(cancellationToken).ConfigureAwait(false);
            return host;
        }
        catch
        {
            host.Dispose();
            throw;
        }
    }
}
