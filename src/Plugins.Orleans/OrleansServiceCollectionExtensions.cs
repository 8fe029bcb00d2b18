using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Orleans.Hosting;
using ScalableCache.Core;
using ScalableCache.Orleans;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers the Orleans key store: the client-side provider, and the shard grains' services on silos.</summary>
public static class OrleansServiceCollectionExtensions
{
    /// <summary>
    /// Registers <see cref="OrleansCacheMemoryFactory"/> as an <see cref="ICacheMemoryFactory"/> (provider <c>Orleans</c>) with
    /// a client of its own (started on first use), and <see cref="OrleansCacheOptions"/>, validated when the host starts.
    /// </summary>
    public static IServiceCollection AddOrleansCache(this IServiceCollection services, Action<OrleansCacheOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        var builder = services.AddOptions<OrleansCacheOptions>();
        if (configure is not null)
        {
            builder.Configure(configure);
        }

        return Register(services, builder);
    }

    /// <summary>As <see cref="AddOrleansCache(IServiceCollection, Action{OrleansCacheOptions}?)"/>, binding <paramref name="section"/> (<c>Cache:Orleans</c>).</summary>
    public static IServiceCollection AddOrleansCache(this IServiceCollection services, IConfiguration section)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(section);
        return Register(services, services.AddOptions<OrleansCacheOptions>().Bind(section));
    }

    /// <summary>
    /// Makes a silo able to host cache shards and coordinators: <see cref="OrleansCacheOptions"/> (the silo reads
    /// <see cref="OrleansCacheOptions.StateDirectory"/>), the shard placement (one shard per silo while there are enough) and
    /// response timeouts long enough to restore a shard. Register the inner providers' factories in the silo's services too
    /// (<c>AddExactCache()</c>, <c>AddHnswCache()</c>, …). Clustering is separate: <see cref="UseCacheClustering(ISiloBuilder, OrleansCacheOptions)"/>.
    /// </summary>
    public static ISiloBuilder AddCacheShards(this ISiloBuilder silo, Action<OrleansCacheOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(silo);
        var builder = silo.Services.AddOptions<OrleansCacheOptions>();
        if (configure is not null)
        {
            builder.Configure(configure);
        }

        AddValidation(silo.Services, builder);
        OrleansClusterSetup.AddShardServices(silo);
        return silo;
    }

    /// <summary>Configures the silo's membership, endpoints and cluster id from <paramref name="options"/> (Localhost or Redis clustering).</summary>
    public static ISiloBuilder UseCacheClustering(this ISiloBuilder silo, OrleansCacheOptions options)
    {
        ArgumentNullException.ThrowIfNull(silo);
        ArgumentNullException.ThrowIfNull(options);
        OrleansClusterSetup.ConfigureSilo(silo, options.ValidatedClone(nameof(options)));
        return silo;
    }

    /// <summary>Configures a client's gateway discovery, cluster id and response timeout from <paramref name="options"/>.</summary>
    public static IClientBuilder UseCacheClustering(this IClientBuilder client, OrleansCacheOptions options)
    {
        ArgumentNullException.ThrowIfNull(client);
        ArgumentNullException.ThrowIfNull(options);
        OrleansClusterSetup.ConfigureClient(client, options.ValidatedClone(nameof(options)));
        return client;
    }

    private static IServiceCollection Register(IServiceCollection services, OptionsBuilder<OrleansCacheOptions> builder)
    {
        AddValidation(services, builder);
        services.TryAddSingleton<OrleansCacheMemoryFactory>();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<ICacheMemoryFactory, OrleansCacheMemoryFactory>(
            static provider => provider.GetRequiredService<OrleansCacheMemoryFactory>()));
        return services;
    }

    private static void AddValidation(IServiceCollection services, OptionsBuilder<OrleansCacheOptions> builder)
    {
        builder.ValidateOnStart();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<OrleansCacheOptions>, OrleansCacheOptionsValidator>());
    }
}

/// <summary>Start-up validation of <see cref="OrleansCacheOptions"/>.</summary>
internal sealed class OrleansCacheOptionsValidator : IValidateOptions<OrleansCacheOptions>
{
    public ValidateOptionsResult Validate(string? name, OrleansCacheOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = options.Validate();
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
