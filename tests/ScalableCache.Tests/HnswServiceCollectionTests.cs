using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using ScalableCache.Core;
using ScalableCache.Hnsw;
using Xunit;

namespace ScalableCache.Tests;

public sealed class HnswServiceCollectionTests
{
    private static IConfiguration Configuration(params (string Key, string Value)[] values) =>
        new ConfigurationBuilder()
            .AddInMemoryCollection(values.Select(v => new KeyValuePair<string, string?>(v.Key, v.Value)))
            .Build();

    [Fact]
    public async Task ResolvesTheFactoryFromConfigurationSection()
    {
        var configuration = Configuration(
            ("Cache:Provider", "hnsw"),
            ("Cache:Hnsw:TopK", "10"),
            ("Cache:Hnsw:ExpansionSearch", "32"),
            ("Cache:Hnsw:Connectivity", "8"),
            ("Cache:Hnsw:Threads", "1"),
            ("Cache:Hnsw:ScalarKind", "Float16"));
        var services = new ServiceCollection();
        services.Configure<CacheOptions>(configuration.GetSection(CacheOptions.SectionName));
        services.AddSingleton<CacheProviderSelector>();
        services.AddHnswCache(configuration.GetSection(HnswCacheOptions.SectionName));
        using var provider = services.BuildServiceProvider(new ServiceProviderOptions { ValidateOnBuild = true, ValidateScopes = true });
        await provider.GetRequiredService<IAsyncStartupValidator>().ValidateAsync(TestContext.Current.CancellationToken);

        var factory = Assert.Single(provider.GetServices<ICacheMemoryFactory>());
        Assert.Equal("Hnsw", factory.Provider);
        Assert.Same(factory, provider.GetRequiredService<CacheProviderSelector>().Selected);
        var options = Assert.IsType<HnswCacheMemoryFactory>(factory).Options;
        Assert.Equal(10, options.TopK);
        Assert.Equal(32, options.ExpansionSearch);
        Assert.Equal(8, options.Connectivity);
        Assert.Equal(HnswScalarKind.Float16, options.ScalarKind);
        Assert.Equal(128, options.ExpansionAdd);

        using var memory = factory.Create(16, 4);
        Assert.Equal(16, memory.Dimension);
        Assert.Equal(4, memory.ClassCount);
    }

    [Fact]
    public void ConfigureDelegateAndRepeatedRegistrationKeepOneFactory()
    {
        var services = new ServiceCollection();
        services.AddHnswCache(o => o.TopK = 5);
        services.AddHnswCache(o => o.Threads = 1);
        using var provider = services.BuildServiceProvider();
        var factory = Assert.IsType<HnswCacheMemoryFactory>(Assert.Single(provider.GetServices<ICacheMemoryFactory>()));
        Assert.Equal(5, factory.Options.TopK);
        Assert.Equal(1, factory.Options.Threads);
    }

    [Fact]
    public async Task InvalidConfigurationFailsAtStartUp()
    {
        var configuration = Configuration(("Cache:Hnsw:TopK", "100"), ("Cache:Hnsw:ExpansionSearch", "20"), ("Cache:Hnsw:Connectivity", "0"));
        var services = new ServiceCollection();
        services.AddHnswCache(configuration.GetSection(HnswCacheOptions.SectionName));
        using var provider = services.BuildServiceProvider();
        var error = await Assert.ThrowsAsync<OptionsValidationException>(
            () => provider.GetRequiredService<IAsyncStartupValidator>().ValidateAsync(TestContext.Current.CancellationToken));
        Assert.Contains(error.Failures, f => f.Contains("ExpansionSearch (20) must be at least Cache:Hnsw:TopK (100)", StringComparison.Ordinal));
        Assert.Contains(error.Failures, f => f.Contains("Connectivity must be at least 2", StringComparison.Ordinal));
    }
}
