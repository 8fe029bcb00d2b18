using ScalableCache.Core;

namespace ScalableCache.RandomProjection;

/// <summary>
/// Settings of the random-projection store (configuration section <c>Cache:RandomProjection</c>). It wraps another
/// provider (<see cref="Inner"/>): keys and queries of dimension d are multiplied by a seeded Johnson–Lindenstrauss
/// matrix to dimension k (<see cref="OutputDimension"/>, or <c>⌈d · <see cref="Ratio"/>⌉</c>), optionally rescaled to
/// their original length (<see cref="Renormalize"/>), and the inner store holds and searches the k-dimensional vectors.
/// </summary>
public sealed class RandomProjectionCacheOptions
{
    /// <summary>Configuration section name.</summary>
    public const string SectionName = "Cache:RandomProjection";

    /// <summary>Ratio used when neither <see cref="OutputDimension"/> nor <see cref="Ratio"/> is set: k = ⌈d / 8⌉.</summary>
    public const double DefaultRatio = 0.125;

    /// <summary>
    /// Registered provider that stores the projected keys: <c>Exact</c> (the default), <c>Hnsw</c>, or any other registered
    /// name except <c>RandomProjection</c> itself. Matched case-insensitively.
    /// </summary>
    public string Inner { get; set; } = "Exact";

    /// <summary>
    /// k, the projected dimension, in components (≥ 1 and at most the key dimension d of each memory). Set this or
    /// <see cref="Ratio"/>, not both; when neither is set, k = ⌈d · <see cref="DefaultRatio"/>⌉.
    /// </summary>
    public int? OutputDimension { get; set; }

    /// <summary>k as a fraction of the key dimension d: k = ⌈d · ratio⌉, ratio in (0, 1]. Set this or <see cref="OutputDimension"/>, not both.</summary>
    public double? Ratio { get; set; }

    /// <summary>Matrix kind: <see cref="RandomProjectionKind.Gaussian"/> (default), <see cref="RandomProjectionKind.Achlioptas"/> or <see cref="RandomProjectionKind.VerySparse"/>.</summary>
    public RandomProjectionKind Kind { get; set; } = RandomProjectionKind.Gaussian;

    /// <summary>Generator seed; the same seed, kind and dimensions give the same matrix on every machine.</summary>
    public ulong Seed { get; set; } = 20180;

    /// <summary>
    /// Rescale every projected key and query to the length of its input (unit length for the contract's L2-normalised
    /// vectors), so the inner store scores <c>‖x‖‖y‖ · cos(Rx, Ry)</c>. Default <see langword="true"/>.
    /// </summary>
    /// <remarks>
    /// A projection preserves each length only to <c>‖Rx‖² = ‖x‖²(1 ± √(2/k))</c> (±3 % in length at k = 512);
    /// un-normalised, a key whose projection came out 5 % long scores 5 % higher against every query, +0.05 on a near
    /// neighbour, which θ (tens in the cache model) turns into a factor <c>e^{θ·0.05}</c> (12 at θ = 50) in its weight. Rescaling removes the length error and keeps only the angle error, which vanishes for
    /// near neighbours (the variance of the estimated cosine ρ is about <c>(1 − ρ²)²/k</c> instead of <c>(1 + ρ²)/k</c>), so
    /// θ keeps its meaning and an inner store built for unit vectors (HNSW's cosine metric) sees unit vectors.
    /// </remarks>
    public bool Renormalize { get; set; } = true;

    /// <summary>
    /// Device that holds the matrix and projects: <c>cpu</c>, <c>cuda</c> or <c>cuda:N</c>. <see langword="null"/> (the default)
    /// uses <see cref="TorchOptions.Device"/> (<c>Torch:Device</c>). The inner store keeps its own device setting.
    /// </summary>
    public string? Device { get; set; }

    /// <summary>A copy, so a memory is not affected by later changes to the options object it was created from.</summary>
    public RandomProjectionCacheOptions Clone() => (RandomProjectionCacheOptions)MemberwiseClone();

    /// <summary>The projected dimension k for keys of dimension <paramref name="dimension"/>.</summary>
    /// <exception cref="ArgumentException"><see cref="OutputDimension"/> exceeds <paramref name="dimension"/>.</exception>
    public int ResolveOutputDimension(int dimension)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(dimension, 1);
        if (OutputDimension is { } k)
        {
            if (k > dimension)
            {
                throw new ArgumentException(
                    $"Cache:RandomProjection:OutputDimension ({k}) exceeds the key dimension ({dimension}); a projection " +
                    "must reduce the dimension. Lower it, or set Ratio instead.", nameof(dimension));
            }

            return k;
        }

        var product = dimension * (Ratio ?? DefaultRatio);
        var rounded = Math.Ceiling(product - (1e-9 * product)); // 100 · 0.07 = 7.000000000000001 is 7
        return (int)Math.Clamp(rounded, 1, dimension);
    }

    /// <summary>
    /// Every problem with these settings, as messages naming the setting; empty when they are valid. Whether
    /// <see cref="Inner"/> is registered is checked at start-up by the DI validator, which knows the registered providers.
    /// </summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (string.IsNullOrWhiteSpace(Inner))
        {
            errors.Add("Cache:RandomProjection:Inner must name the provider that stores the projected keys (e.g. Exact or Hnsw).");
        }
        else if (string.Equals(Inner.Trim(), RandomProjectionCacheMemory.ProviderName, StringComparison.OrdinalIgnoreCase))
        {
            errors.Add("Cache:RandomProjection:Inner must not be RandomProjection itself; name the store that holds the " +
                "projected keys (e.g. Exact or Hnsw).");
        }

        if (OutputDimension is not null && Ratio is not null)
        {
            errors.Add($"Set Cache:RandomProjection:OutputDimension ({OutputDimension}) or Cache:RandomProjection:Ratio ({Ratio}), not both.");
        }

        if (OutputDimension is < 1)
        {
            errors.Add($"Cache:RandomProjection:OutputDimension must be at least 1 (got {OutputDimension}).");
        }

        if (Ratio is { } ratio && !(ratio > 0 && ratio <= 1))
        {
            errors.Add($"Cache:RandomProjection:Ratio must lie in (0, 1] (got {ratio}).");
        }

        if (!Enum.IsDefined(Kind))
        {
            errors.Add($"Cache:RandomProjection:Kind '{Kind}' is not one of {string.Join(", ", Enum.GetNames<RandomProjectionKind>())}.");
        }

        if (Device is not null)
        {
            try
            {
                TorchDevices.Resolve(Device);
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException)
            {
                errors.Add($"Cache:RandomProjection:Device: {e.Message}");
            }
        }

        return errors;
    }
}
