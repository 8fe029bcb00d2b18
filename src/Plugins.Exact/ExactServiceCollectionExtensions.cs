using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using ScalableCache.Core;
using ScalableCache.Exact;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers the exact key store.</summary>
public static class ExactServiceCollectionExtensions
{
    /// <summary>
    /// Registers the exact store's <see cref="ICacheMemoryFactory"/> (provider <c>Exact</c>) and
    /// <see cref="ExactCacheOptions"/>, validated when the host starts (and on first use): a block size out of range or a
    /// device that is malformed or unavailable fails there, naming the setting.
    /// </summary>
    public static IServiceCollection AddExactCache(this IServiceCollection services, Action<ExactCacheOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        var builder = services.AddOptions<ExactCacheOptions>();
        if (configure is not null)
        {
            builder.Configure(configure);
        }

        return Register(services, builder);
    }

    /// <summary>
    /// As <see cref="AddExactCache(IServiceCollection, Action{ExactCacheOptions}?)"/>, binding <paramref name="section"/>:
    /// the <c>Cache:Exact</c> section (<see cref="ExactCacheOptions.SectionName"/>) of the application's configuration.
    /// </summary>
    public static IServiceCollection AddExactCache(this IServiceCollection services, IConfiguration section)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(section);
        return Register(services, services.AddOptions<ExactCacheOptions>().Bind(section));
    }

    private static IServiceCollection Register(IServiceCollection services, OptionsBuilder<ExactCacheOptions> builder)
    {
        builder.ValidateOnStart();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<ExactCacheOptions>, ExactCacheOptionsValidator>());
        services.TryAddEnumerable(ServiceDescriptor.Singleton<ICacheMemoryFactory, ExactCacheMemoryFactory>());
        return services;
    }
}

/// <summary>Start-up validation of <see cref="ExactCacheOptions"/>.</summary>
internal sealed class ExactCacheOptionsValidator : IValidateOptions<ExactCacheOptions>
{
    public ValidateOptionsResult Validate(string? name, ExactCacheOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = options.Validate();
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
