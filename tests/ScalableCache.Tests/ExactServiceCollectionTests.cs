using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using ScalableCache.Core;
using ScalableCache.Exact;
using TorchSharp;
using Xunit;

namespace ScalableCache.Tests;

public sealed class ExactServiceCollectionTests
{
    private static ServiceProvider Build(Dictionary<string, string?> settings)
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(settings).Build();
        var services = new ServiceCollection();
        services.AddOptions<CacheOptions>().Bind(configuration.GetSection(CacheOptions.SectionName));
        services.AddOptions<TorchOptions>().Bind(configuration.GetSection(TorchOptions.SectionName));
        services.AddExactCache(configuration.GetSection(ExactCacheOptions.SectionName));
        services.AddSingleton<CacheProviderSelector>();
        return services.BuildServiceProvider(new ServiceProviderOptions { ValidateOnBuild = true, ValidateScopes = true });
    }

    [Fact]
    public async Task TheSelectorResolvesExactFromConfiguration()
    {
        using var provider = Build(new()
        {
            ["Cache:Provider"] = "exact",
            ["Cache:Exact:KeyBlockSize"] = "128",
            ["Cache:Exact:QueryBlockSize"] = "32",
            ["Cache:Exact:StorageType"] = "Float16",
            ["Torch:Device"] = "cpu",
        });
        await provider.GetRequiredService<IAsyncStartupValidator>().ValidateAsync(TestContext.Current.CancellationToken);

        var selector = provider.GetRequiredService<CacheProviderSelector>();
        Assert.Equal("Exact", selector.Selected.Provider);
        Assert.Contains("Exact", selector.Registered);

        var options = provider.GetRequiredService<IOptions<ExactCacheOptions>>().Value;
        Assert.Equal(128, options.KeyBlockSize);
        Assert.Equal(32, options.QueryBlockSize);

        using var memory = selector.Selected.Create(16, 3);
        var exact = Assert.IsType<ExactCacheMemory>(memory);
        Assert.Equal(torch.ScalarType.Float16, exact.StorageType);
        Assert.Equal(DeviceType.CPU, exact.Device.type);
        Assert.Equal(16, memory.Dimension);
        Assert.Equal(3, memory.ClassCount);
    }

    [Fact]
    public void AnUnknownProviderNameFailsListingExact()
    {
        using var provider = Build(new() { ["Cache:Provider"] = "Annoy" });
        var e = Assert.Throws<UnknownProviderException>(() => provider.GetRequiredService<CacheProviderSelector>());
        Assert.Equal("Annoy", e.Provider);
        Assert.Contains("Exact", e.Registered);
        Assert.Contains("Exact", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("Cache:Exact:KeyBlockSize", "0", "KeyBlockSize")]
    [InlineData("Cache:Exact:QueryBlockSize", "-5", "QueryBlockSize")]
    [InlineData("Cache:Exact:Device", "tpu", "Device")]
    [InlineData("Cache:Exact:Device", "cuda:x", "Device")]
    public async Task InvalidOptionsFailAtStartUpNamingTheSetting(string key, string value, string named)
    {
        using var provider = Build(new() { ["Cache:Provider"] = "Exact", [key] = value });
        var e = await Assert.ThrowsAsync<OptionsValidationException>(
            () => provider.GetRequiredService<IAsyncStartupValidator>().ValidateAsync(TestContext.Current.CancellationToken));
        Assert.Contains(named, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task CudaWhereThereIsNoneFailsAtStartUp()
    {
        if (torch.cuda.is_available())
        {
            Assert.Skip("CUDA is available here: this test covers builds and machines without it.");
        }

        using var provider = Build(new() { ["Cache:Exact:Device"] = "cuda" });
        var e = await Assert.ThrowsAsync<OptionsValidationException>(
            () => provider.GetRequiredService<IAsyncStartupValidator>().ValidateAsync(TestContext.Current.CancellationToken));
        Assert.Contains("CUDA", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void RegisteringTwiceAddsOneFactoryAndTheDelegateOverloadConfigures()
    {
        var services = new ServiceCollection();
        services.AddExactCache(o => o.KeyBlockSize = 99);
        services.AddExactCache();
        using var provider = services.BuildServiceProvider();
        var factory = Assert.Single(provider.GetServices<ICacheMemoryFactory>());
        Assert.Equal("Exact", factory.Provider);
        Assert.Equal(99, provider.GetRequiredService<IOptions<ExactCacheOptions>>().Value.KeyBlockSize);
        using var memory = factory.Create(4, 2);
        Assert.Equal(0, memory.Count);
    }

    [Fact]
    public void TheFactoryRejectsInvalidOptionsWithoutDependencyInjection()
    {
        var e = Assert.Throws<ArgumentException>(() => new ExactCacheMemoryFactory(new ExactCacheOptions { KeyBlockSize = 0 }));
        Assert.Contains("KeyBlockSize", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void TheStoreCanBeCreatedWithoutDependencyInjection()
    {
        var options = new ExactCacheOptions { StorageType = ExactStorageType.Float16 };
        using var memory = new ExactCacheMemory(4, 2, options);
        options.StorageType = ExactStorageType.Float32; // the memory keeps a copy
        Assert.Equal((4, 2, 0L), (memory.Dimension, memory.ClassCount, memory.Count));
        Assert.Equal(torch.ScalarType.Float16, memory.StorageType);
        Assert.Equal(DeviceType.CPU, memory.Device.type);
        using (var defaults = new ExactCacheMemory(4, 2))
        {
            Assert.Equal(torch.ScalarType.Float32, defaults.StorageType);
        }

        var e = Assert.Throws<ArgumentException>(() => new ExactCacheMemory(4, 2, new ExactCacheOptions { QueryBlockSize = 0 }));
        Assert.Contains("QueryBlockSize", e.Message, StringComparison.Ordinal);
        Assert.Equal("options", e.ParamName);
    }
}
