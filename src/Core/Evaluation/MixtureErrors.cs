using ScalableCache.Core;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Evaluation;

/// <summary>Counts errors of the mixture <c>(1 − λ) p_net + λ p_mem</c> over a θ × λ grid from per-class log-masses.</summary>
public static class MixtureErrors
{
    /// <summary>
    /// Adds, for every θ (first axis of <paramref name="logMass"/> <c>[T, b, C]</c>) and every λ, the number of rows whose
    /// mixed prediction differs from <paramref name="labels"/> to <paramref name="errors"/> <c>[T, Λ]</c>.
    /// </summary>
    public static void Accumulate(Tensor logMass, Tensor netProbabilities, Tensor labels, IReadOnlyList<double> lambdas, long[,] errors)
    {
        ArgumentNullException.ThrowIfNull(logMass);
        ArgumentNullException.ThrowIfNull(netProbabilities);
        ArgumentNullException.ThrowIfNull(labels);
        ArgumentNullException.ThrowIfNull(lambdas);
        ArgumentNullException.ThrowIfNull(errors);
        using var scope = NewDisposeScope();
        var pMem = LogMass.ToProbabilities(logMass); // [T, b, C]
        var pNet = netProbabilities.to(ScalarType.Float32, pMem.device);
        var y = labels.to(ScalarType.Int64, pMem.device);
        for (var l = 0; l < lambdas.Count; l++)
        {
            var lambda = lambdas[l];
            var mixed = lambda == 1 ? pMem : CacheMixer.Mix(pNet, pMem, lambda);
            var wrong = mixed.argmax(2).ne(y.unsqueeze(0)).sum(1).data<long>().ToArray(); // [T]
            for (var t = 0; t < wrong.Length; t++)
            {
                errors[t, l] += wrong[t];
            }
        }
    }

    /// <summary>The grid cell with the fewest errors; ties go to the smaller λ value, then the smaller θ value.</summary>
    public static (int Theta, int Lambda) Best(long[,] errors, IReadOnlyList<double> thetas, IReadOnlyList<double> lambdas)
    {
        ArgumentNullException.ThrowIfNull(errors);
        ArgumentNullException.ThrowIfNull(thetas);
        ArgumentNullException.ThrowIfNull(lambdas);
        var best = (Theta: 0, Lambda: 0);
        for (var t = 0; t < thetas.Count; t++)
        {
            for (var l = 0; l < lambdas.Count; l++)
            {
                var e = errors[t, l];
                var b = errors[best.Theta, best.Lambda];
                var better = e < b
                    || (e == b && lambdas[l] < lambdas[best.Lambda])
                    || (e == b && lambdas[l] == lambdas[best.Lambda] && thetas[t] < thetas[best.Theta]);
                if (better)
                {
                    best = (t, l);
                }
            }
        }

        return best;
    }
}
