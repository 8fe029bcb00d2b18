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
        var pNet = netProbabilities.to_type(ScalarType.Float32).to(logMass.device);
        var y = labels.to(logMass.device).to_type(ScalarType.Int64);
        for (var t = 0; t < logMass.shape[0]; t++)
        {
            var pMem = LogMass.ToProbabilities(logMass[t]);
            for (var l = 0; l < lambdas.Count; l++)
            {
                var lambda = lambdas[l];
                var mixed = pNet * (1 - lambda) + pMem * lambda;
                errors[t, l] += mixed.argmax(1).ne(y).sum().item<long>();
            }
        }
    }

    /// <summary>The grid cell with the fewest errors; ties go to the smaller λ, then the smaller θ (grids ascending).</summary>
    public static (int Theta, int Lambda) ArgMin(long[,] errors)
    {
        ArgumentNullException.ThrowIfNull(errors);
        var best = (Theta: 0, Lambda: 0);
        for (var l = 0; l < errors.GetLength(1); l++)
        {
            for (var t = 0; t < errors.GetLength(0); t++)
            {
                if (errors[t, l] < errors[best.Theta, best.Lambda])
                {
                    best = (t, l);
                }
            }
        }

        return best;
    }
}
