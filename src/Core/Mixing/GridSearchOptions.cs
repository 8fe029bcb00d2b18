namespace ScalableCache.Core;

/// <summary>
/// The θ × λ grid that <see cref="CacheGridSearch"/> tries (configuration section <c>GridSearch</c>). The defaults are the
/// paper's: θ ∈ {10, 20, …, 90}, λ ∈ {0.1, 0.2, …, 0.9}.
/// </summary>
/// <remarks>
/// The configuration binder appends configured list items to these defaults; to replace a list, clear it (or assign a
/// new one) before binding.
/// </remarks>
public sealed class GridSearchOptions
{
    /// <summary>Configuration section name.</summary>
    public const string SectionName = "GridSearch";

    /// <summary>Temperatures θ (dimensionless, each finite and &gt; 0) multiplying the key–query similarity.</summary>
    public IReadOnlyList<double> Thetas { get; set; } = [10, 20, 30, 40, 50, 60, 70, 80, 90];

    /// <summary>Mixture weights λ of the cache (each in [0, 1]).</summary>
    public IReadOnlyList<double> Lambdas { get; set; } = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

    /// <summary>
    /// Adaptive widening: while the chosen θ (of the cache model or of the cache-only model) is the largest or the smallest of the
    /// grid, the grid gains one more θ beyond that edge (the grid's mean spacing further out; below the smallest, half of it when the
    /// step would reach 0) and is searched again — at most this many times. 0 (the default) keeps the grid as given. Where it
    /// stopped and why is reported (<see cref="Evaluation.CacheTuning.ThetaWidenings"/>).
    /// </summary>
    public int MaxThetaWidenings { get; set; }

    /// <summary>Largest accepted <see cref="MaxThetaWidenings"/>.</summary>
    public const int MaxThetaWideningsLimit = 100;

    /// <summary>Whether λ = 1 (the cache alone) joins the grid when <see cref="Lambdas"/> lacks it.</summary>
    public bool IncludeCacheOnly { get; set; }

    /// <summary>The λ values searched: <see cref="Lambdas"/>, plus 1 when <see cref="IncludeCacheOnly"/> asks for it.</summary>
    public IReadOnlyList<double> EffectiveLambdas =>
        IncludeCacheOnly && !Lambdas.Contains(1.0) ? [.. Lambdas, 1.0] : Lambdas;

    /// <summary>Every problem with these settings, as messages naming the setting; empty when they are valid.</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (Thetas is null || Thetas.Count == 0)
        {
            errors.Add("GridSearch:Thetas must list at least one θ.");
        }
        else
        {
            errors.AddRange(Thetas.Where(t => !(t > 0) || !double.IsFinite(t))
                .Select(t => $"GridSearch:Thetas: θ = {t} is not finite and greater than 0."));
        }

        if (MaxThetaWidenings is < 0 or > MaxThetaWideningsLimit)
        {
            errors.Add($"GridSearch:MaxThetaWidenings must lie in [0, {MaxThetaWideningsLimit}] (got {MaxThetaWidenings}).");
        }

        if (Lambdas is null || (Lambdas.Count == 0 && !IncludeCacheOnly))
        {
            errors.Add("GridSearch:Lambdas must list at least one λ.");
        }
        else
        {
            errors.AddRange(Lambdas.Where(l => !(l >= 0 && l <= 1)).Select(l => $"GridSearch:Lambdas: λ = {l} is not in [0, 1]."));
        }

        return errors;
    }
}
