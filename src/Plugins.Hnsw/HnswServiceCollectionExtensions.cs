using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using ScalableCache.Core;
using ScalableCache.Hnsw;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers the HNSW key store.</summary>
public static class HnswServiceCollectionExtensions
{
    /// <summary>
    /// Registers <see cref="HnswCacheMemoryFactory"/> as an <see cref="ICacheMemoryFactory"/> (provider <c>Hnsw</c>) and
    /// <see cref="HnswCacheOptions"/>, validated when the host starts (and on first use).
    /// </summary>
    public static IServiceCollection AddHnswCache(this IServiceCollection services, Action<HnswCacheOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        var builder = services.AddOptions<HnswCacheOptions>();
        if (configure is not null)
        {
            builder.Configure(configure);
        }

        return Register(services, builder);
    }

    /// <summary>
    /// As <see cref="AddHnswCache(IServiceCollection, Action{HnswCacheOptions}?)"/>, binding <paramref name="section"/>:
    /// the <c>Cache:Hnsw</c> section (<see cref="HnswCacheOptions.SectionName"/>) of the application's configuration,
    /// e.g. <c>services.AddHnswCache(configuration.GetSection(HnswCacheOptions.SectionName))</c>.
    /// </summary>
    public static IServiceCollection AddHnswCache(this IServiceCollection services, IConfiguration section)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(section);
        return Register(services, services.AddOptions<HnswCacheOptions>().Bind(section));
    }

    private static IServiceCollection Register(IServiceCollection services, OptionsBuilder<HnswCacheOptions> builder)
    {
        builder.ValidateOnStart();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<HnswCacheOptions>, HnswCacheOptionsValidator>());
        services.TryAddSingleton<HnswCacheMemoryFactory>();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<ICacheMemoryFactory, HnswCacheMemoryFactory>(
            static provider => provider.GetRequiredService<HnswCacheMemoryFactory>()));
        return services;
    }
}

/// <summary>Start-up validation of <see cref="HnswCacheOptions"/>.</summary>
internal sealed class HnswCacheOptionsValidator : IValidateOptions<HnswCacheOptions>
{
    public ValidateOptionsResult Validate(string? name, HnswCacheOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = options.Validate();
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
