using System.Globalization;
using ScalableCache.Core.Persistence;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Evaluation;

/// <summary>One Table 1 row: the network, the cache model and the cache-only model on the report half, at the tuning's settings.</summary>
/// <param name="BaselineError">Network alone (λ = 0) on the report half.</param>
/// <param name="CacheError">Cache model at the tuning's (θ, λ) on the report half.</param>
/// <param name="CacheOnlyError">Cache-only model (λ = 1) at the tuning's cache-only θ on the report half.</param>
/// <param name="Tuning">θ, λ and the cache-only θ as chosen on the validation half, with the validation errors.</param>
public sealed record CacheEvaluationResult(double BaselineError, double CacheError, double CacheOnlyError, CacheTuning Tuning)
{
    /// <summary>θ chosen on the validation half (or given).</summary>
    public double Theta => Tuning.Theta;

    /// <summary>λ chosen on the validation half (or given).</summary>
    public double Lambda => Tuning.Lambda;

    /// <summary>θ chosen for λ = 1 on the validation half.</summary>
    public double CacheOnlyTheta => Tuning.CacheOnlyTheta;

    /// <summary>Network alone on the validation half.</summary>
    public double ValidationBaselineError => Tuning.ValidationBaselineError;

    /// <summary>Cache model on the validation half at the chosen (θ, λ).</summary>
    public double ValidationCacheError => Tuning.ValidationCacheError;

    /// <summary>Cache-only model on the validation half at its θ.</summary>
    public double ValidationCacheOnlyError => Tuning.ValidationCacheOnlyError;

    /// <summary>The chosen θ is at the edge of the grid.</summary>
    public bool ThetaAtGridEdge => Tuning.ThetaAtGridEdge;

    /// <summary>The cache-only θ is at the edge of the grid.</summary>
    public bool CacheOnlyThetaAtGridEdge => Tuning.CacheOnlyThetaAtGridEdge;

    /// <summary>Whether θ and λ were searched.</summary>
    public bool Searched => Tuning.Searched;

    /// <summary>The validation error grid.</summary>
    public GridSearchResult Grid => Tuning.Grid;
}

/// <summary>θ and λ chosen for a cache on validation queries (Orhan 2018, §2), with the cache-only model's θ.</summary>
/// <param name="Theta">θ of the cache model, chosen (or given).</param>
/// <param name="Lambda">λ of the cache model, chosen (or given).</param>
/// <param name="CacheOnlyTheta">θ chosen for λ = 1.</param>
/// <param name="ValidationBaselineError">Network alone on the validation queries.</param>
/// <param name="ValidationCacheError">Cache model at (θ, λ) on the validation queries.</param>
/// <param name="ValidationCacheOnlyError">Cache-only model at its θ on the validation queries.</param>
/// <param name="ThetaAtGridEdge">The chosen θ is the smallest or largest of the grid: widen the grid.</param>
/// <param name="CacheOnlyThetaAtGridEdge">Likewise for the cache-only θ.</param>
/// <param name="Searched">Whether θ and λ were searched (false when given).</param>
/// <param name="Grid">The validation error grid: θ rows × λ columns (λ = 1 is the last column).</param>
/// <param name="ThetaWidenings">How many θ values adaptive widening added beyond the configured grid (<see cref="GridSearchOptions.MaxThetaWidenings"/>).</param>
public sealed record CacheTuning(
    double Theta,
    double Lambda,
    double CacheOnlyTheta,
    double ValidationBaselineError,
    double ValidationCacheError,
    double ValidationCacheOnlyError,
    bool ThetaAtGridEdge,
    bool CacheOnlyThetaAtGridEdge,
    bool Searched,
    GridSearchResult Grid,
    int ThetaWidenings = 0)
{
    /// <summary>Warnings for people (a θ at the edge of the grid), empty when there are none.</summary>
    public IReadOnlyList<string> Warnings =>
    [
        .. ThetaWidenings > 0
            ? [$"The θ grid was widened {ThetaWidenings} time(s), to [{string.Join(", ", Grid.Thetas.Select(t => t.ToString("G6", CultureInfo.InvariantCulture)))}]."]
            : Array.Empty<string>(),
        .. ThetaAtGridEdge ? [$"The cache model's θ = {Theta.ToString(CultureInfo.InvariantCulture)} lies at the edge of the θ grid; widen the grid."] : Array.Empty<string>(),
        .. CacheOnlyThetaAtGridEdge ? [$"The cache-only model's θ = {CacheOnlyTheta.ToString(CultureInfo.InvariantCulture)} lies at the edge of the θ grid; widen the grid."] : Array.Empty<string>(),
    ];
}

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
        double? theta = null, double? lambda = null) =>
        Report(memory, Tune(memory, validation, grid, batchSize, theta, lambda), report, batchSize);

    /// <summary>
    /// Chooses θ and λ on <paramref name="validation"/> (one pass over the configured grid plus the λ = 1 column), or takes the
    /// given <paramref name="theta"/>/<paramref name="lambda"/>; the cache-only θ is always searched.
    /// </summary>
    public static CacheTuning Tune(
        ICacheMemory memory, FeatureTable validation, GridSearchOptions grid, int batchSize, double? theta = null, double? lambda = null)
    {
        ArgumentNullException.ThrowIfNull(memory);
        ArgumentNullException.ThrowIfNull(validation);
        return Tune(
            g => CacheGridSearch.Search(memory, validation.Keys, validation.Probabilities, validation.Labels, g, batchSize),
            (t, l) => CacheGridSearch.Evaluate(memory, validation.Keys, validation.Probabilities, validation.Labels, t, l, batchSize),
            grid, theta, lambda);
    }

    /// <summary>
    /// <see cref="Tune(ICacheMemory, FeatureTable, GridSearchOptions, int, double?, double?)"/> over any grid search of the validation
    /// queries: <paramref name="search"/> runs a grid, <paramref name="evaluate"/> gives the error at a fixed (θ, λ).
    /// </summary>
    internal static CacheTuning Tune(
        Func<GridSearchOptions, GridSearchResult> search, Func<double, double, double> evaluate, GridSearchOptions grid, double? theta, double? lambda)
    {
        ArgumentNullException.ThrowIfNull(grid);
        if (theta.HasValue != lambda.HasValue)
        {
            throw new ArgumentException("Give both θ and λ, or neither (to search both).");
        }

        // One pass over the validation keys: the grid plus the λ = 1 column; again with one more θ while a chosen θ is on an edge.
        var thetas = grid.Thetas.ToList();
        var widenings = 0;
        var mixedAllowsOne = grid.IncludeCacheOnly || grid.Lambdas.Contains(1.0);
        GridSearchResult searched;
        int bestTheta, bestLambda, cacheOnlyTheta, cacheOnlyColumn;
        while (true)
        {
            var searchGrid = new GridSearchOptions { Thetas = thetas, Lambdas = grid.Lambdas, IncludeCacheOnly = true };
            searched = search(searchGrid);
            (bestTheta, bestLambda, cacheOnlyTheta, cacheOnlyColumn) = Choose(searched, mixedAllowsOne);
            if (widenings >= grid.MaxThetaWidenings || thetas.Distinct().Count() < 2)
            {
                break;
            }

            var chosen = (theta.HasValue ? [] : new[] { searched.Thetas[bestTheta] }).Append(searched.Thetas[cacheOnlyTheta]).ToArray();
            var (low, high) = (thetas.Min(), thetas.Max());
            var step = (high - low) / (thetas.Distinct().Count() - 1);
            if (chosen.Contains(high))
            {
                thetas.Add(high + step);
            }
            else if (chosen.Contains(low))
            {
                thetas.Insert(0, low - step > 0 ? low - step : low / 2);
            }
            else
            {
                break;
            }

            widenings++;
        }

        var lambdas = searched.Lambdas;
        var chosenTheta = theta ?? searched.Thetas[bestTheta];
        var chosenLambda = lambda ?? lambdas[bestLambda];
        var coTheta = searched.Thetas[cacheOnlyTheta];
        var validationCache = theta.HasValue ? evaluate(chosenTheta, chosenLambda) : searched.ErrorAt(bestTheta, bestLambda);

        var minTheta = searched.Thetas.Min();
        var maxTheta = searched.Thetas.Max();
        bool AtEdge(double value) => searched.Thetas.Distinct().Count() >= 2 && (value == minTheta || value == maxTheta);
        return new CacheTuning(
            Theta: chosenTheta,
            Lambda: chosenLambda,
            CacheOnlyTheta: coTheta,
            ValidationBaselineError: searched.BaselineError,
            ValidationCacheError: validationCache,
            ValidationCacheOnlyError: searched.ErrorAt(cacheOnlyTheta, cacheOnlyColumn),
            ThetaAtGridEdge: !theta.HasValue && AtEdge(chosenTheta),
            CacheOnlyThetaAtGridEdge: AtEdge(coTheta),
            Searched: !theta.HasValue,
            Grid: searched,
            ThetaWidenings: widenings);
    }

    /// <summary>The best (θ, λ) of the mixed model (λ = 1 only when allowed) and the best θ of the λ = 1 column, as grid indices.</summary>
    private static (int Theta, int Lambda, int CacheOnlyTheta, int CacheOnlyColumn) Choose(GridSearchResult searched, bool mixedAllowsOne)
    {
        var lambdas = searched.Lambdas;
        var cacheOnlyColumn = IndexOfOne(lambdas);
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

        var (bestTheta, bestLambda) = best ?? throw new ArgumentException("The λ grid has no mixing weight below 1.");
        var cacheOnlyTheta = 0;
        for (var t = 1; t < searched.Thetas.Count; t++)
        {
            if (searched.ErrorAt(t, cacheOnlyColumn) < searched.ErrorAt(cacheOnlyTheta, cacheOnlyColumn))
            {
                cacheOnlyTheta = t;
            }
        }

        return (bestTheta, bestLambda, cacheOnlyTheta, cacheOnlyColumn);
    }

    /// <summary>Errors on <paramref name="report"/> of the network, the cache model and the cache-only model at <paramref name="tuning"/>'s settings.</summary>
    public static CacheEvaluationResult Report(ICacheMemory memory, CacheTuning tuning, FeatureTable report, int batchSize)
    {
        ArgumentNullException.ThrowIfNull(memory);
        ArgumentNullException.ThrowIfNull(tuning);
        ArgumentNullException.ThrowIfNull(report);

        // One pass over the report keys for both models: θ ∈ {θ*, θ_cache-only}, λ ∈ {λ*, 1}.
        var reportGrid = new GridSearchOptions { Thetas = [tuning.Theta, tuning.CacheOnlyTheta], Lambdas = [tuning.Lambda], IncludeCacheOnly = true };
        var reported = CacheGridSearch.Search(memory, report.Keys, report.Probabilities, report.Labels, reportGrid, batchSize);
        var reportCacheOnlyColumn = IndexOfOne(reported.Lambdas);
        return new CacheEvaluationResult(
            BaselineError: reported.BaselineError,
            CacheError: reported.ErrorAt(0, reported.Lambdas.ToList().IndexOf(tuning.Lambda)),
            CacheOnlyError: reported.ErrorAt(1, reportCacheOnlyColumn),
            Tuning: tuning);
    }

    private static int IndexOfOne(IReadOnlyList<double> lambdas) => lambdas.ToList().IndexOf(1.0);

    /// <summary>
    /// Rows per <see cref="ICacheMemory.Add"/> call when a memory is built from a table or a reader: one chunk of keys exists outside
    /// the memory at a time (200 MB at the 12,288-wide keys of the CIFAR ResNet-56 cache). A multiple of the exact store's key block
    /// (4,096), so the exact store's blocks, and its answers, are those of any other such chunking.
    /// </summary>
    public const int DefaultChunkRows = 4096;

    /// <summary>Creates a memory from <paramref name="factory"/> and adds <paramref name="train"/>'s keys in chunks.</summary>
    public static ICacheMemory Build(ICacheMemoryFactory factory, FeatureTable train, int classCount, int chunk = DefaultChunkRows)
    {
        ArgumentNullException.ThrowIfNull(train);
        return Build(factory, train.Count, (int)train.KeyDimension, classCount,
            (start, n) => (train.Keys.narrow(0, start, n), train.Labels.narrow(0, start, n)), chunk);
    }

    /// <summary>
    /// Creates a memory from <paramref name="factory"/> and adds <paramref name="count"/> keys of dimension
    /// <paramref name="dimension"/> in chunks of <paramref name="chunk"/> rows, each read by <paramref name="read"/>
    /// <c>(start, rows)</c>, so only one chunk need exist outside the memory.
    /// </summary>
    /// <remarks>
    /// Each chunk's tensors belong to this method, which disposes them once they are added (and whatever else <paramref name="read"/>
    /// left in the chunk's dispose scope): return new tensors or views, never a tensor the caller keeps. A chunk detached from every
    /// scope (e.g. a <see cref="FeatureTable"/>'s keys) would otherwise stay resident until the garbage collector finalises it, which
    /// for a store of many chunks is as much memory again as the store.
    /// </remarks>
    public static ICacheMemory Build(
        ICacheMemoryFactory factory, long count, int dimension, int classCount, Func<long, long, (Tensor Keys, Tensor Labels)> read, int chunk = DefaultChunkRows)
    {
        ArgumentNullException.ThrowIfNull(factory);
        ArgumentNullException.ThrowIfNull(read);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(chunk);
        return Filled(factory.Create(dimension, classCount), memory => memory.AddBlocks(count, (start, n) => read(start, n), chunk, null, default));
    }

    /// <summary>
    /// Creates a memory from <paramref name="factory"/> for <paramref name="file"/>'s dimension and class count and adds every key of
    /// the file, <paramref name="chunk"/> keys at a time (<see cref="CacheMemoryExtensions.AddKeyFile"/>: float32 blocks read from the
    /// mapping, so one block, not N × d, exists outside the memory). Builds any provider (random projection, HNSW, …) from a key file.
    /// </summary>
    /// <param name="factory">The provider.</param>
    /// <param name="file">An open key file; it stays open (and owned by the caller).</param>
    /// <param name="chunk">Keys per <see cref="ICacheMemory.Add"/> call.</param>
    /// <param name="progress">Keys added so far, after each chunk.</param>
    /// <param name="cancellationToken">Checked before each chunk; on cancellation the memory is disposed.</param>
    public static ICacheMemory Build(
        ICacheMemoryFactory factory, KeyFile file, int chunk = CacheMemoryExtensions.DefaultKeyFileBlockRows, IProgress<long>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(factory);
        ArgumentNullException.ThrowIfNull(file);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(chunk);
        return Filled(factory.Create(file.Layout.Dimension, file.Layout.ClassCount), memory => memory.AddKeyFile(file, chunk, progress, cancellationToken));
    }

    /// <summary><paramref name="memory"/> after <paramref name="fill"/>, or disposed if it fails.</summary>
    private static ICacheMemory Filled(ICacheMemory memory, Action<ICacheMemory> fill)
    {
        try
        {
            fill(memory);
            return memory;
        }
        catch
        {
            memory.Dispose();
            throw;
        }
    }
}
