using System.Net;
using System.Net.Sockets;
using ScalableCache.Host;
using ScalableCache.Orleans;
using Xunit;

namespace ScalableCache.Tests;

/// <summary>The Orleans provider's client side without a cluster: a bounded, clear failure; bad silo settings refused before any start.</summary>
public sealed class OrleansClientTests
{
    [Fact]
    public void AFactoryWithNoClusterToReachFailsWithinItsBoundNamingTheGateway()
    {
        var port = UnusedPort();
        using var factory = new OrleansCacheMemoryFactory(new OrleansCacheOptions { GatewayPort = port, CallTimeoutSeconds = 1, ClusterId = "nobody" });
        var e = Assert.Throws<InvalidOperationException>(() => factory.Create(8, 2));
        Assert.Contains("Cannot reach the Orleans cluster 'nobody'", e.Message, StringComparison.Ordinal);
        Assert.Contains($"gateway ports {port}", e.Message, StringComparison.Ordinal);
        Assert.Contains("scache silo", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task SiloRefusesABadFlagAsUsageAndABadSettingAsConfigurationBeforeStarting()
    {
        var (code, stdout, _) = await CliTestSupport.Run(null, "silo", "--silo-port", "70000", "--json");
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains("Cache:Orleans:SiloPort", CliTestSupport.SingleJsonObject(stdout).GetProperty("error").GetString(), StringComparison.Ordinal);

        (code, stdout, _) = await CliTestSupport.Run(null, "silo", "--set", "Cache:Orleans:Shards=0", "--json");
        Assert.Equal(ExitCodes.Configuration, code);
        Assert.Contains("Cache:Orleans:Shards", CliTestSupport.SingleJsonObject(stdout).GetProperty("error").GetString(), StringComparison.Ordinal);
    }

    private static int UnusedPort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
