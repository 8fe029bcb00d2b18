using Microsoft.Extensions.DependencyInjection;
using Orleans.Configuration;
using Orleans.Hosting;
using Orleans.TestingHost;
using ScalableCache.Orleans;
using Xunit;

namespace ScalableCache.Tests;

/// <summary>
/// An in-process Orleans test cluster (<see cref="InProcessTestCluster"/>) whose silos host cache shards with the Exact,
/// Hnsw and RandomProjection providers registered, and keep caches' state in a temporary folder shared by every silo.
/// Membership probes are fast, so a killed silo is declared dead within a few seconds.
/// </summary>
public sealed class OrleansTestCluster : IAsyncDisposable
{
    private readonly bool _ownsFolder;

    private OrleansTestCluster(InProcessTestCluster cluster, string stateDirectory, bool ownsFolder)
    {
        Cluster = cluster;
        StateDirectory = stateDirectory;
        _ownsFolder = ownsFolder;
    }

    public InProcessTestCluster Cluster { get; }

    public string StateDirectory { get; }

    public global::Orleans.IClusterClient Client => Cluster.Client;

    /// <summary>Starts <paramref name="silos"/> silos; <paramref name="stateDirectory"/> (default: a new temporary folder, deleted on dispose) holds caches' state.</summary>
    public static async Task<OrleansTestCluster> StartAsync(int silos = 3, string? stateDirectory = null, bool persist = true)
    {
        var ownsFolder = stateDirectory is null;
        var folder = stateDirectory ?? Directory.CreateTempSubdirectory("scache-orleans-").FullName;
        var builder = new InProcessTestClusterBuilder((short)silos);
        builder.ConfigureSilo((_, silo) =>
        {
            silo.Services.AddExactCache();
            silo.Services.AddHnswCache(o => o.Threads = 1);
            silo.Services.AddRandomProjectionCache(o => o.Ratio = 0.5);
            silo.AddCacheShards(o => o.StateDirectory = persist ? folder : null);
            silo.Configure<ClusterMembershipOptions>(o =>
            {
                o.ProbeTimeout = TimeSpan.FromSeconds(1);
                o.NumMissedProbesLimit = 2;
                o.NumVotesForDeathDeclaration = 1;
                o.TableRefreshTimeout = TimeSpan.FromSeconds(1);
                o.IAmAliveTablePublishTimeout = TimeSpan.FromSeconds(1);
            });
        });
        var cluster = builder.Build();
        await cluster.DeployAsync();
        return new OrleansTestCluster(cluster, folder, ownsFolder);
    }

    /// <summary>A factory over this cluster's client.</summary>
    public OrleansCacheMemoryFactory Factory(string inner = "Exact", int shards = 3, double callTimeoutSeconds = 10) =>
        new(new OrleansCacheOptions { Inner = inner, Shards = shards, CallTimeoutSeconds = callTimeoutSeconds }, Client);

    public async ValueTask DisposeAsync()
    {
        try
        {
            await Cluster.StopAllSilosAsync();
        }
        finally
        {
            await Cluster.DisposeAsync();
            if (_ownsFolder && Directory.Exists(StateDirectory))
            {
                Directory.Delete(StateDirectory, recursive: true);
            }
        }
    }
}

/// <summary>One 3-silo cluster shared by the tests of the <c>orleans</c> collection (they do not stop silos).</summary>
public sealed class SharedOrleansCluster : IAsyncLifetime
{
    private OrleansTestCluster? _cluster;

    public OrleansTestCluster Cluster => _cluster ?? throw new InvalidOperationException("The cluster has not started.");

    public async ValueTask InitializeAsync() => _cluster = await OrleansTestCluster.StartAsync();

    public async ValueTask DisposeAsync()
    {
        if (_cluster is not null)
        {
            await _cluster.DisposeAsync();
        }
    }
}

[CollectionDefinition(Name)]
public sealed class OrleansClusterCollection : ICollectionFixture<SharedOrleansCluster>
{
    public const string Name = "orleans";
}
