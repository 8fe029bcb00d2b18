using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Evaluation;

/// <summary>One Table 1 row: the network, the cache model and the cache-only model on the report half.</summary>
/// <param name="BaselineError">Network alone (λ = 0) on the report half.</param>
/// <param name="CacheError">Cache model at (<paramref name="Theta"/>, <paramref name="Lambda"/>) on the report half.</param>
/// <param name="CacheOnlyError">Cache-only model (λ = 1) at <paramref name="CacheOnlyTheta"/> on the report half.</param>
/// <param name="Theta">θ chosen on the validation half (or given).</param>
/// <param name="Lambda">λ chosen on the validation half (or given).</param>
/// <param name="CacheOnlyTheta">θ chosen for λ = 1 on the validation half.</param>
/// <param name="ValidationBaselineError">Network alone on the validation half.</param>
/// <param name="ValidationCacheError">Cache model on the validation half at the chosen (θ, λ).</param>
/// <param name="ValidationCacheOnlyError">Cache-only model on the validation half at its θ.</param>
/// <param name="ThetaAtGridEdge">The chosen θ is the smallest or largest of the grid: widen the grid.</param>
/// <param name="CacheOnlyThetaAtGridEdge">Likewise for the cache-only θ.</param>
/// <param name="Searched">Whether θ and λ were searched (false when given).</param>
/// <param name="Grid">The validation error grid: θ rows × λ columns (λ = 1 is the last column).</param>
public sealed record CacheEvaluationResult(
    double BaselineError,
    double CacheError,
    double CacheOnlyError,
    double Theta,
    double Lambda,
    double CacheOnlyTheta,
    double ValidationBaselineError,
    double ValidationCacheError,
    double ValidationCacheOnlyError,
    bool ThetaAtGridEdge,
    bool CacheOnlyThetaAtGridEdge,
    bool Searched,
    GridSearchResult Grid);

/// <summary>
/// Evaluates a filled cache memory the way the paper reports it: θ and λ are chosen on validation queries, errors are
/// measured on separate report queries, for the mixed model and for the cache-only model (λ = 1).
/// </summary>
public static class CacheEvaluation
{
    /// <summary>
    /// Searches θ × λ (plus the λ = 1 column for the cache-only model) on <paramref name="validation"/> — or takes the given
    /// <paramref name="theta"/>/<paramref name="lambda"/> — and reports errors on <paramref name="report"/>.
    /// With <see cref="GridSearchOptions.IncludeCacheOnly"/> set, λ = 1 may also win the mixed model's search.
    /// </summary>
    public static CacheEvaluationResult Evaluate(
        ICacheMemory memory, FeatureTable validation, FeatureTable report, GridSearchOptions grid, int batchSize,
        double? theta = null, double? lambda = null)
    {
        ArgumentNullException.ThrowIfNull(memory);
        ArgumentNullException.ThrowIfNull(validation);
        ArgumentNullException.ThrowIfNull(report);
        ArgumentNullException.ThrowIfNull(grid);
        if (theta.HasValue != lambda.HasValue)
        {
            throw new ArgumentException("Give both θ and λ, or neither (to search both).");
        }

        // One pass over the validation keys: the configured grid plus the λ = 1 column.
        var searchGrid = new GridSearchOptions { Thetas = grid.Thetas, Lambdas = grid.Lambdas, IncludeCacheOnly = true };
        var searched = CacheGridSearch.Search(memory, validation.Keys, validation.Probabilities, validation.Labels, searchGrid, batchSize);
        var lambdas = searched.Lambdas;
        var cacheOnlyColumn = IndexOfOne(lambdas);
        var mixedAllowsOne = grid.IncludeCacheOnly || grid.Lambdas.Contains(1.0);

        (int Theta, int Lambda)? best = null;
        for (var l = 0; l < lambdas.Count; l++)
        {
            if (l == cacheOnlyColumn && !mixedAllowsOne)
            {
                continue;
            }

            for (var t = 0; t < searched.Thetas.Count; t++)
            {
                if (best is null || searched.ErrorAt(t, l) < searched.ErrorAt(best.Value.Theta, best.Value.Lambda))
                {
                    best = (t, l);
                }
            }
        }

        var (bestTheta, bestLambda) = best ?? throw new ArgumentException("The λ grid has no mixing weight below 1.", nameof(grid));

        var cacheOnlyTheta = 0;
        for (var t = 1; t < searched.Thetas.Count; t++)
        {
            if (searched.ErrorAt(t, cacheOnlyColumn) < searched.ErrorAt(cacheOnlyTheta, cacheOnlyColumn))
            {
                cacheOnlyTheta = t;
            }
        }

        var chosenTheta = theta ?? searched.Thetas[bestTheta];
        var chosenLambda = lambda ?? lambdas[bestLambda];
        var coTheta = searched.Thetas[cacheOnlyTheta];

        // One pass over the report keys for both models: θ ∈ {θ*, θ_cache-only}, λ ∈ {λ*, 1}.
        var reportGrid = new GridSearchOptions { Thetas = [chosenTheta, coTheta], Lambdas = [chosenLambda], IncludeCacheOnly = true };
        var reported = CacheGridSearch.Search(memory, report.Keys, report.Probabilities, report.Labels, reportGrid, batchSize);
        var reportCacheOnlyColumn = IndexOfOne(reported.Lambdas);
        var validationCache = theta.HasValue
            ? CacheGridSearch.Evaluate(memory, validation.Keys, validation.Probabilities, validation.Labels, chosenTheta, chosenLambda, batchSize)
            : searched.ErrorAt(bestTheta, bestLambda);

        var minTheta = searched.Thetas.Min();
        var maxTheta = searched.Thetas.Max();
        bool AtEdge(double value) => searched.Thetas.Distinct().Count() >= 2 && (value == minTheta || value == maxTheta);
        return new CacheEvaluationResult(
            BaselineError: reported.BaselineError,
            CacheError: reported.ErrorAt(0, reported.Lambdas.ToList().IndexOf(chosenLambda)),
            CacheOnlyError: reported.ErrorAt(1, reportCacheOnlyColumn),
            Theta: chosenTheta,
            Lambda: chosenLambda,
            CacheOnlyTheta: coTheta,
            ValidationBaselineError: searched.BaselineError,
            ValidationCacheError: validationCache,
            ValidationCacheOnlyError: searched.ErrorAt(cacheOnlyTheta, cacheOnlyColumn),
            ThetaAtGridEdge: !theta.HasValue && AtEdge(chosenTheta),
            CacheOnlyThetaAtGridEdge: AtEdge(coTheta),
            Searched: !theta.HasValue,
            Grid: searched);
    }

    private static int IndexOfOne(IReadOnlyList<double> lambdas) => lambdas.ToList().IndexOf(1.0);

    /// <summary>Creates a memory from <paramref name="factory"/> and adds <paramref name="train"/>'s keys in chunks.</summary>
    public static ICacheMemory Build(ICacheMemoryFactory factory, FeatureTable train, int classCount, int chunk = 8192)
    {
        ArgumentNullException.ThrowIfNull(factory);
        ArgumentNullException.ThrowIfNull(train);
        var memory = factory.Create((int)train.KeyDimension, classCount);
        try
        {
            for (long start = 0; start < train.Count; start += chunk)
            {
                using var scope = NewDisposeScope();
                var n = Math.Min(chunk, train.Count - start);
                memory.Add(train.Keys.narrow(0, start, n), train.Labels.narrow(0, start, n));
            }

            return memory;
        }
        catch
        {
            memory.Dispose();
            throw;
        }
    }
}
