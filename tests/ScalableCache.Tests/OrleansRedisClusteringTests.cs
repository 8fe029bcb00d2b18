using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using ScalableCache.Exact;
using ScalableCache.Orleans;
using Xunit;

namespace ScalableCache.Tests;

/// <summary>
/// The production set-up end to end, with the Redis clustering provider (the one for one machine or many): two silo hosts
/// configured as <c>scache silo</c> configures them (<c>UseCacheClustering</c>, <c>AddCacheShards</c>) and a factory with
/// its own client that finds the gateways in Redis, against the <c>redis-server</c> that <c>.ci/run</c> starts and names in
/// <c>SCACHE_TEST_REDIS</c>. Without that variable the test is skipped on a developer's machine and fails under CI.
/// </summary>
public sealed class OrleansRedisClusteringTests
{
    [Fact]
    public async Task SilosJoinedThroughRedisServeTheExactAnswerToAClientThatFoundThemThere()
    {
        var redis = Environment.GetEnvironmentVariable("SCACHE_TEST_REDIS");
        if (string.IsNullOrEmpty(redis))
        {
            Assert.True(string.IsNullOrEmpty(Environment.GetEnvironmentVariable("CI")), "CI must start redis-server and set SCACHE_TEST_REDIS (.ci/run does).");
            Assert.Skip("SCACHE_TEST_REDIS is not set (host:port of a redis-server); .ci/run starts one.");
        }

        var ct = TestContext.Current.CancellationToken;
        var options = new OrleansCacheOptions
        {
            Clustering = OrleansClustering.Redis,
            RedisConfiguration = redis,
            ClusterId = "test-" + Guid.NewGuid().ToString("N"),
            Shards = 4,
        };
        var silos = new List<IHost>();
        try
        {
            for (var i = 0; i < 2; i++)
            {
                var silo = options.Clone();
                (silo.SiloPort, silo.GatewayPort) = (FreePort(), FreePort());
                var builder = Microsoft.Extensions.Hosting.Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
                builder.Services.AddExactCache();
                builder.UseOrleans(s => s.UseCacheClustering(silo).AddCacheShards());
                var host = builder.Build();
                silos.Add(host);
                await host.StartAsync(ct);
            }

            var data = TestData.Clustered(20, 4, keysPerClass: 30, queriesPerClass: 3, seed: 70, noise: 0.4);
            using var keys = data.KeyTensor();
            using var labels = data.KeyLabelTensor();
            using var queries = data.QueryTensor();
            using var single = new ExactCacheMemory(20, 4);
            single.Add(keys, labels);
            using var factory = new OrleansCacheMemoryFactory(options);
            using var sharded = factory.CreateSharded(20, 4);
            sharded.Add(keys, labels);
            Assert.Equal(2, sharded.ShardStatuses().Select(s => s.Silo).Distinct().Count());
            double[] thetas = [10, 50];
            using var expected = single.ClassLogMass(queries, thetas);
            using var actual = sharded.ClassLogMass(queries, thetas);
            BruteForce.AssertClose(actual, BruteForce.ToArrays(expected), thetas, 3e-7);
        }
        finally
        {
            foreach (var host in silos)
            {
                using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(20));
                await host.StopAsync(stop.Token);
                host.Dispose();
            }
        }
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
