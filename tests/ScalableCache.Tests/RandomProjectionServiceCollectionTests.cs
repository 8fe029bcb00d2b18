using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using ScalableCache.Core;
using ScalableCache.RandomProjection;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

public sealed class RandomProjectionServiceCollectionTests
{
    private static ServiceProvider Build(Dictionary<string, string?> settings, bool passSection = false, bool addHnsw = false)
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(settings).Build();
        var services = new ServiceCollection();
        services.AddOptions<CacheOptions>().Bind(configuration.GetSection(CacheOptions.SectionName));
        services.AddOptions<TorchOptions>().Bind(configuration.GetSection(TorchOptions.SectionName));
        // Registered before the provider it wraps: the order does not matter.
        services.AddRandomProjectionCache(passSection ? configuration.GetSection(RandomProjectionCacheOptions.SectionName) : configuration);
        services.AddExactCache(configuration.GetSection("Cache:Exact"));
        if (addHnsw)
        {
            services.AddHnswCache(o => o.Threads = 1);
        }

        services.AddSingleton<CacheProviderSelector>();
        return services.BuildServiceProvider(new ServiceProviderOptions { ValidateOnBuild = true, ValidateScopes = true });
    }

    private static Task StartAsync(ServiceProvider provider) =>
        provider.GetRequiredService<IAsyncStartupValidator>().ValidateAsync(TestContext.Current.CancellationToken);

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ProviderRandomProjectionOverExactResolvesFromConfigurationAndWorks(bool passSection)
    {
        using var provider = Build(
            new()
            {
                ["Cache:Provider"] = "RandomProjection",
                ["Cache:RandomProjection:Inner"] = "Exact",
                ["Cache:RandomProjection:OutputDimension"] = "16",
                ["Cache:RandomProjection:Kind"] = "VerySparse",
                ["Cache:RandomProjection:Seed"] = "18446744073709551615",
                ["Cache:RandomProjection:Renormalize"] = "false",
                ["Cache:Exact:KeyBlockSize"] = "64",
            },
            passSection);
        await StartAsync(provider);

        var selector = provider.GetRequiredService<CacheProviderSelector>();
        var factory = Assert.IsType<RandomProjectionCacheMemoryFactory>(selector.Selected);
        Assert.Equal("RandomProjection", factory.Provider);
        Assert.Equal("Exact", factory.InnerFactory.Provider);
        Assert.Equal(DeviceType.CPU, factory.Device.type);
        var options = factory.Options;
        Assert.Equal(16, options.OutputDimension);
        Assert.Equal(RandomProjectionKind.VerySparse, options.Kind);
        Assert.Equal(ulong.MaxValue, options.Seed);
        Assert.False(options.Renormalize);

        using var memory = selector.Selected.Create(64, 4);
        Assert.Equal("RandomProjection", memory.Provider);
        Assert.Equal(64, memory.Dimension);
        var projected = Assert.IsAssignableFrom<IRandomProjectionCacheMemory>(memory);
        Assert.Equal("Exact", projected.Inner.Provider);
        Assert.Equal(16, projected.Inner.Dimension);
        Assert.Equal(new RandomProjectionDefinition(RandomProjectionKind.VerySparse, ulong.MaxValue, 64, 16), projected.Projection.Definition);

        var data = TestData.Clustered(64, 4, keysPerClass: 10, queriesPerClass: 3, seed: 2, noise: 0.2);
        using (var keys = data.KeyTensor())
        using (var labels = data.KeyLabelTensor())
        {
            memory.Add(keys, labels);
        }

        Assert.Equal(data.KeyCount, memory.Count);
        using var queries = data.QueryTensor();
        using var logMass = memory.ClassLogMass(queries, [10.0]);
        Assert.Equal(new long[] { 1, data.QueryCount, 4 }, logMass.shape);
        Assert.Equal(data.QueryLabels, logMass[0].argmax(1).data<long>().ToArray());
    }

    [Fact]
    public async Task DefaultsWrapExactAtAnEighthOfTheDimension()
    {
        using var provider = Build(new() { ["Cache:Provider"] = "randomprojection" });
        await StartAsync(provider);
        using var memory = Assert.IsAssignableFrom<IRandomProjectionCacheMemory>(provider.GetRequiredService<CacheProviderSelector>().Selected.Create(80, 3));
        Assert.Equal(10, memory.Projection.OutputDimension);
        Assert.Equal(RandomProjectionKind.Gaussian, memory.Projection.Kind);
        Assert.True(memory.Renormalize);
        Assert.Equal("Exact", memory.Inner.Provider);
    }

    [Fact]
    public async Task InnerHnswIsResolvedByName()
    {
        using var provider = Build(new() { ["Cache:Provider"] = "RandomProjection", ["Cache:RandomProjection:Inner"] = "hnsw" }, addHnsw: true);
        await StartAsync(provider);
        using var memory = Assert.IsAssignableFrom<IRandomProjectionCacheMemory>(provider.GetRequiredService<CacheProviderSelector>().Selected.Create(64, 3));
        Assert.Equal("Hnsw", memory.Inner.Provider);
        Assert.Equal(8, memory.Inner.Dimension);
    }

    [Fact]
    public async Task InnerRandomProjectionFailsAtStartUp()
    {
        using var provider = Build(new() { ["Cache:RandomProjection:Inner"] = "RandomProjection" });
        var error = await Assert.ThrowsAsync<OptionsValidationException>(() => StartAsync(provider));
        Assert.Contains(error.Failures, f => f.Contains("Cache:RandomProjection:Inner must not be RandomProjection itself", StringComparison.Ordinal));
    }

    [Fact]
    public async Task AnUnknownInnerFailsAtStartUpListingTheRegisteredProviders()
    {
        using var provider = Build(new() { ["Cache:RandomProjection:Inner"] = "Annoy" }, addHnsw: true);
        var error = await Assert.ThrowsAsync<OptionsValidationException>(() => StartAsync(provider));
        var failure = Assert.Single(error.Failures);
        Assert.Contains("Cache:RandomProjection:Inner is 'Annoy', which is not a registered cache provider", failure, StringComparison.Ordinal);
        Assert.Contains("Registered providers it can wrap: Exact, Hnsw.", failure, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("Cache:RandomProjection:Ratio", "0", "Ratio must lie in (0, 1]")]
    [InlineData("Cache:RandomProjection:Ratio", "1.5", "Ratio must lie in (0, 1]")]
    [InlineData("Cache:RandomProjection:OutputDimension", "0", "OutputDimension must be at least 1")]
    [InlineData("Cache:RandomProjection:Inner", " ", "Inner must name the provider")]
    [InlineData("Cache:RandomProjection:Device", "gpu", "Cache:RandomProjection:Device")]
    public async Task InvalidSettingsFailAtStartUpNamingTheSetting(string key, string value, string expected)
    {
        using var provider = Build(new() { [key] = value });
        var error = await Assert.ThrowsAsync<OptionsValidationException>(() => StartAsync(provider));
        Assert.Contains(error.Failures, f => f.Contains(expected, StringComparison.Ordinal));
    }

    [Fact]
    public async Task BothOutputDimensionAndRatioFailAtStartUp()
    {
        using var provider = Build(new() { ["Cache:RandomProjection:Ratio"] = "0.5", ["Cache:RandomProjection:OutputDimension"] = "8" });
        var error = await Assert.ThrowsAsync<OptionsValidationException>(() => StartAsync(provider));
        Assert.Contains(error.Failures, f => f.Contains("not both", StringComparison.Ordinal));
    }

    [Fact]
    public void RepeatedRegistrationKeepsOneFactory()
    {
        var services = new ServiceCollection().AddExactCache();
        services.AddRandomProjectionCache(o => o.Ratio = 0.5);
        services.AddRandomProjectionCache(o => o.Seed = 5);
        using var provider = services.BuildServiceProvider();
        var factories = provider.GetServices<ICacheMemoryFactory>().ToList();
        var factory = Assert.IsType<RandomProjectionCacheMemoryFactory>(Assert.Single(factories, f => f.Provider == "RandomProjection"));
        Assert.Same(factory, provider.GetRequiredService<RandomProjectionCacheMemoryFactory>());
        Assert.Equal(0.5, factory.Options.Ratio);
        Assert.Equal(5UL, factory.Options.Seed);
    }
}
