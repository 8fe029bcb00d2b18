using ScalableCache.Core.Evaluation;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core;

/// <summary>
/// Chooses θ and λ of the cache model on a validation set by exhaustive search over a grid (Orhan 2018, §2): the error of
/// <c>(1 − λ) p_net + λ p_mem(θ)</c> for every (θ, λ), with ties going to the smaller λ, then the smaller θ.
/// </summary>
/// <remarks>
/// Each batch of queries costs one <see cref="ICacheMemory.ClassLogMass"/> call for all θ at once, so every key–query
/// similarity is computed once for the whole grid; λ only re-weights the two distributions. Inputs are never disposed.
/// </remarks>
public static class CacheGridSearch
{
    /// <summary>
    /// Searches <paramref name="options"/>' grid on queries <c>[n, d]</c> with network probabilities <c>[n, C]</c> and true
    /// labels <c>[n]</c> (integer), querying the memory <paramref name="batchSize"/> rows at a time.
    /// </summary>
    public static GridSearchResult Search(
        ICacheMemory memory, Tensor queries, Tensor netProbabilities, Tensor labels, GridSearchOptions options, int batchSize)
    {
        ArgumentNullException.ThrowIfNull(memory);
        ArgumentNullException.ThrowIfNull(queries);
        ArgumentNullException.ThrowIfNull(netProbabilities);
        ArgumentNullException.ThrowIfNull(labels);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        var problems = options.Validate();
        if (problems.Count > 0)
        {
            throw new ArgumentException("Invalid grid: " + string.Join(" ", problems), nameof(options));
        }

        CacheMixer.CheckBatch(memory, queries, netProbabilities, labels);
        if (queries.shape[0] == 0)
        {
            throw new ArgumentException("The validation set is empty.", nameof(queries));
        }

        return Search((start, rows, thetas) => memory.ClassLogMass(queries.narrow(0, start, rows), thetas), netProbabilities, labels, options, batchSize);
    }

    /// <summary>
    /// The grid search over any source of per-class log-mass: <paramref name="logMass"/> <c>(start, rows, θs)</c> gives
    /// <c>[T, rows, C]</c> for validation rows <c>[start, start + rows)</c>, as <see cref="ICacheMemory.ClassLogMass"/> does for
    /// their keys; asked <paramref name="batchSize"/> rows at a time. The inputs are checked by the caller.
    /// </summary>
    internal static GridSearchResult Search(
        Func<long, long, double[], Tensor> logMass, Tensor netProbabilities, Tensor labels, GridSearchOptions options, int batchSize)
    {
        var n = labels.shape[0];
        var thetas = options.Thetas.ToArray();
        var lambdas = options.EffectiveLambdas.ToArray();
        var errors = new long[thetas.Length, lambdas.Length];
        long baseline = 0;

        using (no_grad())
        {
            for (long start = 0; start < n; start += batchSize)
            {
                using var scope = NewDisposeScope();
                var rows = Math.Min(batchSize, n - start);
                var mass = logMass(start, rows, thetas); // [T, b, C], CPU
                var pNet = netProbabilities.narrow(0, start, rows);
                var y = labels.narrow(0, start, rows);
                baseline += pNet.argmax(1).ne(y.to(ScalarType.Int64, pNet.device)).sum().item<long>();
                MixtureErrors.Accumulate(mass, pNet, y, lambdas, errors);
            }
        }

        var (bestTheta, bestLambda) = MixtureErrors.Best(errors, thetas, lambdas);
        var grid = new IReadOnlyList<double>[thetas.Length];
        for (var t = 0; t < thetas.Length; t++)
        {
            var row = new double[lambdas.Length];
            for (var l = 0; l < lambdas.Length; l++)
            {
                row[l] = (double)errors[t, l] / n;
            }

            grid[t] = row;
        }

        return new GridSearchResult(
            thetas[bestTheta],
            lambdas[bestLambda],
            (double)errors[bestTheta, bestLambda] / n,
            (double)baseline / n,
            thetas,
            lambdas,
            grid,
            n);
    }

    /// <summary>Error (fraction misclassified) of the mixture at a fixed (θ, λ); see <see cref="CacheMixer.Predict"/>.</summary>
    public static double Evaluate(
        ICacheMemory memory, Tensor queries, Tensor netProbabilities, Tensor labels, double theta, double lambda,
        int batchSize = CacheMixer.DefaultBatchSize)
    {
        ArgumentNullException.ThrowIfNull(memory);
        ArgumentNullException.ThrowIfNull(queries);
        ArgumentNullException.ThrowIfNull(netProbabilities);
        ArgumentNullException.ThrowIfNull(labels);
        CacheMixer.CheckBatch(memory, queries, netProbabilities, labels);
        var n = queries.shape[0];
        if (n == 0)
        {
            throw new ArgumentException("The evaluation set is empty.", nameof(queries));
        }

        using var scope = NewDisposeScope();
        var predictions = CacheMixer.Predict(memory, queries, netProbabilities, theta, lambda, batchSize);
        var wrong = predictions.ne(labels.to(ScalarType.Int64, predictions.device)).sum().item<long>();
        return (double)wrong / n;
    }
}
