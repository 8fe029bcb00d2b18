using Microsoft.Extensions.Options;

namespace ScalableCache.Core;

/// <summary>Resolves the configured provider among the registered <see cref="ICacheMemoryFactory"/> services.</summary>
public sealed class CacheProviderSelector
{
    private readonly IReadOnlyList<ICacheMemoryFactory> _factories;
    private readonly string _configured;

    /// <summary>Creates the selector; an unknown provider name fails here, listing the registered ones.</summary>
    public CacheProviderSelector(IEnumerable<ICacheMemoryFactory> factories, IOptions<CacheOptions> options)
    {
        ArgumentNullException.ThrowIfNull(factories);
        ArgumentNullException.ThrowIfNull(options);
        _factories = factories.ToList();
        _configured = options.Value.Provider;
        Selected = Find(_configured);
    }

    /// <summary>The factory named by <c>Cache:Provider</c>.</summary>
    public ICacheMemoryFactory Selected { get; }

    /// <summary>Registered provider names.</summary>
    public IReadOnlyList<string> Registered => _factories.Select(f => f.Provider).ToList();

    /// <summary>The registered factories, in registration order.</summary>
    public IReadOnlyList<ICacheMemoryFactory> Factories => _factories;

    /// <summary>The factory registered under <paramref name="provider"/>, or an error listing the registered names.</summary>
    public ICacheMemoryFactory Find(string provider) => Find(_factories, provider);

    /// <summary>
    /// The provider lookup every caller shares: the factory of <paramref name="factories"/> named <paramref name="provider"/>
    /// (case-insensitively; the last registration wins).
    /// </summary>
    /// <exception cref="UnknownProviderException">None is; the message lists the registered names.</exception>
    public static ICacheMemoryFactory Find(IReadOnlyList<ICacheMemoryFactory> factories, string provider)
    {
        ArgumentNullException.ThrowIfNull(factories);
        ArgumentNullException.ThrowIfNull(provider);
        var match = factories.LastOrDefault(f => string.Equals(f.Provider, provider, StringComparison.OrdinalIgnoreCase));
        return match ?? throw new UnknownProviderException(provider, [.. factories.Select(f => f.Provider)]);
    }
}

/// <summary>The configured cache provider is not registered.</summary>
public sealed class UnknownProviderException(string provider, IReadOnlyList<string> registered)
    : InvalidOperationException(
        $"Unknown cache provider '{provider}'. Registered providers: " +
        (registered.Count == 0 ? "(none)" : string.Join(", ", registered)) + ". Set Cache:Provider (or SCACHE_Cache__Provider) to one of them.")
{
    /// <summary>The name that was asked for.</summary>
    public string Provider { get; } = provider;

    /// <summary>The names that are registered.</summary>
    public IReadOnlyList<string> Registered { get; } = registered;
}
