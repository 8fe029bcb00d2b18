using ScalableCache.Core;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Evaluation;

/// <summary>One candidate layer's unit-norm keys for the cache (training set) and for the validation queries.</summary>
/// <param name="Layer">Module name, e.g. <c>layer3.2</c>.</param>
/// <param name="TrainKeys"><c>[N, D]</c>, L2-normalised rows (float32 or float16).</param>
/// <param name="ValidationKeys"><c>[n, D]</c>, L2-normalised rows (float32 or float16).</param>
public sealed record LayerCandidate(string Layer, Tensor TrainKeys, Tensor ValidationKeys);

/// <summary>One evaluated layer set: its best validation error over the θ × λ grid and where it was reached.</summary>
public sealed record LayerSetScore(IReadOnlyList<string> Layers, double Error, double Theta, double Lambda);

/// <summary>Outcome of the greedy forward selection.</summary>
/// <param name="Layers">The chosen layer set (in selection order).</param>
/// <param name="Score">Its validation score.</param>
/// <param name="Path">The best set after each round (round 1 = best single layer).</param>
/// <param name="Evaluated">Every set scored, in evaluation order.</param>
public sealed record LayerCombinationResult(
    IReadOnlyList<string> Layers, LayerSetScore Score, IReadOnlyList<LayerSetScore> Path, IReadOnlyList<LayerSetScore> Evaluated);

/// <summary>
/// Greedy forward selection of cache layers on validation data (Orhan 2018 chose them by hand).
/// </summary>
/// <remarks>
/// Keys of a layer set are the per-layer unit keys concatenated and re-normalised, so for k layers
/// <c>φ(x)·μ = (1/k) Σ_l φ_l(x)·μ_l</c>. Each candidate's query–key similarity matrix is therefore computed once
/// (stored as float16, <c>n × N</c> each) and every set is scored from the mean of its members' matrices, instead of
/// rebuilding a cache per set. Round r adds the candidate that lowers the validation error most; the search stops after
/// <c>maxLayers</c> rounds or when no addition improves the error. Ties go to the earlier candidate.
/// </remarks>
public static class LayerCombinationSearch
{
    /// <summary>Runs the search.</summary>
    public static LayerCombinationResult Run(
        IReadOnlyList<LayerCandidate> candidates,
        Tensor trainLabels,
        Tensor validationProbabilities,
        Tensor validationLabels,
        int classCount,
        IReadOnlyList<double> thetas,
        IReadOnlyList<double> lambdas,
        int maxLayers = 3,
        IProgress<string>? progress = null,
        int rowBlock = 512)
    {
        ArgumentNullException.ThrowIfNull(candidates);
        ArgumentNullException.ThrowIfNull(thetas);
        ArgumentNullException.ThrowIfNull(lambdas);
        if (candidates.Count == 0)
        {
            throw new ArgumentException("At least one candidate layer is needed.", nameof(candidates));
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(maxLayers, 1);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var similarities = new Tensor[candidates.Count];
        for (var i = 0; i < candidates.Count; i++)
        {
            progress?.Report($"similarities for {candidates[i].Layer} ({i + 1}/{candidates.Count})");
            similarities[i] = Similarities(candidates[i].ValidationKeys, candidates[i].TrainKeys, rowBlock);
        }

        var evaluated = new List<LayerSetScore>();
        var path = new List<LayerSetScore>();
        var chosen = new List<int>();
        LayerSetScore? best = null;
        for (var round = 0; round < Math.Min(maxLayers, candidates.Count); round++)
        {
            LayerSetScore? roundBest = null;
            var roundPick = -1;
            for (var c = 0; c < candidates.Count; c++)
            {
                if (chosen.Contains(c))
                {
                    continue;
                }

                var set = chosen.Append(c).ToArray();
                var score = Score(set.Select(i => similarities[i]).ToArray(), set.Select(i => candidates[i].Layer).ToArray(),
                    trainLabels, validationProbabilities, validationLabels, classCount, thetas, lambdas, rowBlock);
                evaluated.Add(score);
                progress?.Report($"[{string.Join(", ", score.Layers)}] validation error {score.Error:P2} (θ={score.Theta}, λ={score.Lambda})");
                if (roundBest is null || score.Error < roundBest.Error)
                {
                    roundBest = score;
                    roundPick = c;
                }
            }

            if (roundBest is null || (best is not null && roundBest.Error >= best.Error))
            {
                break;
            }

            chosen.Add(roundPick);
            best = roundBest;
            path.Add(roundBest);
        }

        return new LayerCombinationResult(best!.Layers, best, path, evaluated);
    }

    /// <summary>Query–key cosine similarities <c>[n, N]</c> in float16, computed in row blocks.</summary>
    public static Tensor Similarities(Tensor queries, Tensor keys, int rowBlock = 512)
    {
        ArgumentNullException.ThrowIfNull(queries);
        ArgumentNullException.ThrowIfNull(keys);
        using var scope = NewDisposeScope();
        var n = queries.shape[0];
        var result = empty(n, keys.shape[0], dtype: ScalarType.Float16);
        var keysT = keys.to_type(ScalarType.Float32).t();
        for (long start = 0; start < n; start += rowBlock)
        {
            using var inner = NewDisposeScope();
            var len = Math.Min(rowBlock, n - start);
            var block = queries.narrow(0, start, len).to_type(ScalarType.Float32).mm(keysT);
            result.narrow(0, start, len).copy_(block);
        }

        return result.MoveToOuterDisposeScope();
    }

    /// <summary>Best validation error over the grid for the mean of the given similarity matrices.</summary>
    public static LayerSetScore Score(
        IReadOnlyList<Tensor> similarities,
        IReadOnlyList<string> layers,
        Tensor trainLabels,
        Tensor probabilities,
        Tensor labels,
        int classCount,
        IReadOnlyList<double> thetas,
        IReadOnlyList<double> lambdas,
        int rowBlock = 512)
    {
        ArgumentNullException.ThrowIfNull(similarities);
        ArgumentNullException.ThrowIfNull(labels);
        using var scope = NewDisposeScope();
        var n = labels.shape[0];
        var errors = new long[thetas.Count, lambdas.Count];
        var thetaArray = thetas.ToArray();
        for (long start = 0; start < n; start += rowBlock)
        {
            using var inner = NewDisposeScope();
            var len = Math.Min(rowBlock, n - start);
            var s = similarities[0].narrow(0, start, len).to_type(ScalarType.Float32);
            for (var i = 1; i < similarities.Count; i++)
            {
                s = s.add_(similarities[i].narrow(0, start, len).to_type(ScalarType.Float32));
            }

            s = s.div_(similarities.Count);
            var logMass = SimilarityLogMass.Compute(s, trainLabels, classCount, thetaArray);
            MixtureErrors.Accumulate(logMass, probabilities.narrow(0, start, len), labels.narrow(0, start, len), lambdas, errors);
        }

        var (bt, bl) = MixtureErrors.Best(errors, thetas, lambdas);
        return new LayerSetScore(layers.ToArray(), errors[bt, bl] / (double)n, thetas[bt], lambdas[bl]);
    }
}
