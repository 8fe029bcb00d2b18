using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using ScalableCache.Core;
using ScalableCache.RandomProjection;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers the random-projection key store.</summary>
public static class RandomProjectionServiceCollectionExtensions
{
    /// <summary>
    /// Registers <see cref="RandomProjectionCacheMemoryFactory"/> as an <see cref="ICacheMemoryFactory"/> (provider
    /// <c>RandomProjection</c>) and <see cref="RandomProjectionCacheOptions"/>, validated when the host starts (and on first
    /// use): invalid settings, <c>Inner</c> = <c>RandomProjection</c>, and an <c>Inner</c> that names no registered provider
    /// fail there, naming the setting (and listing the registered providers). Register the inner provider too
    /// (e.g. <c>AddExactCache()</c>), in any order.
    /// </summary>
    public static IServiceCollection AddRandomProjectionCache(
        this IServiceCollection services, Action<RandomProjectionCacheOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        var builder = services.AddOptions<RandomProjectionCacheOptions>();
        if (configure is not null)
        {
            builder.Configure(configure);
        }

        return Register(services, builder);
    }

    /// <summary>
    /// As <see cref="AddRandomProjectionCache(IServiceCollection, Action{RandomProjectionCacheOptions}?)"/>, binding the
    /// <c>Cache:RandomProjection</c> section (<see cref="RandomProjectionCacheOptions.SectionName"/>). Pass the application's
    /// configuration, or that section itself (<c>configuration.GetSection("Cache:RandomProjection")</c>); both bind the same keys.
    /// </summary>
    public static IServiceCollection AddRandomProjectionCache(this IServiceCollection services, IConfiguration configuration)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configuration);
        var section = configuration is IConfigurationSection given
            && string.Equals(given.Path, RandomProjectionCacheOptions.SectionName, StringComparison.OrdinalIgnoreCase)
            ? given
            : configuration.GetSection(RandomProjectionCacheOptions.SectionName);
        return Register(services, services.AddOptions<RandomProjectionCacheOptions>().Bind(section));
    }

    private static IServiceCollection Register(IServiceCollection services, OptionsBuilder<RandomProjectionCacheOptions> builder)
    {
        builder.ValidateOnStart();
        services.AddOptions<TorchOptions>();
        services.TryAddEnumerable(
            ServiceDescriptor.Singleton<IValidateOptions<RandomProjectionCacheOptions>, RandomProjectionCacheOptionsValidator>());
        services.TryAddSingleton(static provider => new RandomProjectionCacheMemoryFactory(
            provider.GetRequiredService<IOptions<RandomProjectionCacheOptions>>(),
            provider.GetRequiredService<IOptions<TorchOptions>>(),
            provider));
        services.TryAddEnumerable(ServiceDescriptor.Singleton<ICacheMemoryFactory, RandomProjectionCacheMemoryFactory>(
            static provider => provider.GetRequiredService<RandomProjectionCacheMemoryFactory>()));
        return services;
    }
}

/// <summary>
/// Start-up validation of <see cref="RandomProjectionCacheOptions"/>: the settings themselves, then whether
/// <see cref="RandomProjectionCacheOptions.Inner"/> names a registered provider.
/// </summary>
internal sealed class RandomProjectionCacheOptionsValidator(IServiceProvider services) : IValidateOptions<RandomProjectionCacheOptions>
{
    public ValidateOptionsResult Validate(string? name, RandomProjectionCacheOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = options.Validate().ToList();
        if (errors.Count == 0)
        {
            // Resolving the factories constructs them; the random-projection factory reads nothing until first use, so
            // this does not re-enter these options. Another provider whose own options are invalid reports that itself.
            List<string> registered;
            try
            {
                registered = services.GetServices<ICacheMemoryFactory>()
                    .Select(f => f.Provider)
                    .Where(p => !string.Equals(p, RandomProjectionCacheMemoryFactory.ProviderName, StringComparison.OrdinalIgnoreCase))
                    .ToList();
            }
            catch (OptionsValidationException)
            {
                return ValidateOptionsResult.Success;
            }

            var inner = options.Inner.Trim();
            if (!registered.Contains(inner, StringComparer.OrdinalIgnoreCase))
            {
                errors.Add(RandomProjectionCacheMemoryFactory.UnknownInnerMessage(inner, registered));
            }
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
