using System.Globalization;

namespace ScalableCache.Core.Robustness;

/// <summary>
/// One of the three models the paper compares on a backbone: the network alone (λ = 0), the cache model
/// <c>(1 − λ) p_net + λ p_mem</c> at (θ, λ), and the cache-only model (λ = 1).
/// </summary>
/// <param name="Name">Display name: <c>baseline</c>, <c>cache</c> or <c>cache-only</c> (or the caller's).</param>
/// <param name="Theta">Temperature θ of <c>p_mem</c> (finite, &gt; 0; ignored when <paramref name="Lambda"/> is 0).</param>
/// <param name="Lambda">Mixture weight λ of the cache, in [0, 1].</param>
public sealed record CacheVariant(string Name, double Theta, double Lambda)
{
    /// <summary>The network alone: λ = 0.</summary>
    public static CacheVariant Baseline { get; } = new("baseline", 1, 0);

    /// <summary>The cache model at (θ, λ).</summary>
    public static CacheVariant Cache(double theta, double lambda) => new("cache", theta, lambda);

    /// <summary>The cache alone: λ = 1.</summary>
    public static CacheVariant CacheOnly(double theta) => new("cache-only", theta, 1);

    /// <summary>Whether the memory takes part (λ &gt; 0).</summary>
    public bool UsesMemory => Lambda > 0;

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> unless λ ∈ [0, 1] and (λ = 0 or θ is finite and positive).</summary>
    public void Validate()
    {
        if (!(Lambda >= 0 && Lambda <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(Lambda), Lambda, $"Variant '{Name}': λ must lie in [0, 1].");
        }

        if (UsesMemory && !(Theta > 0 && double.IsFinite(Theta)))
        {
            throw new ArgumentOutOfRangeException(nameof(Theta), Theta, $"Variant '{Name}': θ must be finite and positive.");
        }
    }

    /// <inheritdoc />
    public override string ToString() => UsesMemory
        ? string.Create(CultureInfo.InvariantCulture, $"{Name} (θ={Theta}, λ={Lambda})")
        : Name;
}
