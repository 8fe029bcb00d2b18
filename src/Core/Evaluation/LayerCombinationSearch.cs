using ScalableCache.Core;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Evaluation;

/// <summary>One candidate layer's unit-norm keys for the cache (training set) and for the validation queries.</summary>
/// <param name="Layer">Module name, e.g. <c>layer3.2</c>.</param>
/// <param name="TrainKeys"><c>[N, D]</c>, L2-normalised rows (float32 or float16).</param>
/// <param name="ValidationKeys"><c>[n, D]</c>, L2-normalised rows (float32 or float16).</param>
/// <param name="TrainNorms">The L2 norms <c>[N]</c> of the training activations the unit keys came from (needed for <see cref="KeyNormalization.Concatenated"/>).</param>
/// <param name="ValidationNorms">The L2 norms <c>[n]</c> of the validation activations (likewise).</param>
public sealed record LayerCandidate(string Layer, Tensor TrainKeys, Tensor ValidationKeys, Tensor? TrainNorms = null, Tensor? ValidationNorms = null);

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
/// A layer set's key similarity is a weighted sum of its members' unit-key similarities, so each candidate's query–key
/// similarity matrix is computed once (stored as float16, <c>n × N</c> each) and every set is scored from its members'
/// matrices instead of rebuilding a cache per set. With <see cref="KeyNormalization.PerLayer"/> keys (per-layer unit keys
/// concatenated and re-normalised) for k layers <c>φ(x)·μ = (1/k) Σ_l φ_l(x)·μ_l</c>, the mean. With
/// <see cref="KeyNormalization.Concatenated"/> keys (raw activations concatenated, normalised once) each activation is
/// <c>n_l u_l</c>, so <c>φ(x)·μ = Σ_l a_l(x) b_l u_l(x)·v_l</c> with <c>a_l(x) = n_l(x) / √(Σ_m n_m(x)²)</c> over the set's layers
/// and <c>b_l</c> likewise for the key: the candidates' norms weight each matrix per query row and key column. Round r adds the candidate that lowers the validation error most; the search stops after
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
        int rowBlock = 512,
        KeyNormalization normalization = KeyNormalization.PerLayer)
    {
        ArgumentNullException.ThrowIfNull(candidates);
        if (normalization == KeyNormalization.Concatenated && candidates.Any(c => c.TrainNorms is null || c.ValidationNorms is null))
        {
            throw new ArgumentException("Concatenated keys weight each layer by its activation norms: give every candidate its TrainNorms and ValidationNorms.", nameof(candidates));
        }

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

        var norms = normalization == KeyNormalization.Concatenated
            ? candidates.Select(c => (c.ValidationNorms!, c.TrainNorms!)).ToArray()
            : null;
        return Run(
            [.. candidates.Select(c => c.Layer)], similarities, trainLabels, validationProbabilities, validationLabels, classCount, thetas, lambdas,
            maxLayers, progress, rowBlock, norms);
    }

    /// <summary>
    /// Runs the search from each candidate's query–key similarities <c>[n, N]</c> (<see cref="Similarities"/>, or the same values
    /// computed while the training images were extracted: <see cref="LayerSearchKeys"/>), so no candidate's keys need be held.
    /// </summary>
    /// <param name="layers">Candidate names, one per similarity matrix.</param>
    /// <param name="similarities">Per candidate: validation-query × training-key cosine similarities (float16 or float32).</param>
    /// <param name="trainLabels">Labels <c>[N]</c> of the training keys (the similarities' columns).</param>
    /// <param name="validationProbabilities"><c>p_net</c> <c>[n, C]</c> of the validation queries.</param>
    /// <param name="validationLabels">Labels <c>[n]</c> of the validation queries.</param>
    /// <param name="classCount">Classes C.</param>
    /// <param name="thetas">θ grid.</param>
    /// <param name="lambdas">λ grid.</param>
    /// <param name="maxLayers">Largest set.</param>
    /// <param name="progress">Told of every scored set.</param>
    /// <param name="rowBlock">Query rows scored at a time.</param>
    /// <param name="norms">
    /// Per candidate (query norms <c>[n]</c>, key norms <c>[N]</c>) for <see cref="KeyNormalization.Concatenated"/> keys;
    /// <see langword="null"/> for <see cref="KeyNormalization.PerLayer"/> keys (the sets' similarity is the mean).
    /// </param>
    public static LayerCombinationResult Run(
        IReadOnlyList<string> layers,
        IReadOnlyList<Tensor> similarities,
        Tensor trainLabels,
        Tensor validationProbabilities,
        Tensor validationLabels,
        int classCount,
        IReadOnlyList<double> thetas,
        IReadOnlyList<double> lambdas,
        int maxLayers = 3,
        IProgress<string>? progress = null,
        int rowBlock = 512,
        IReadOnlyList<(Tensor QueryNorms, Tensor KeyNorms)>? norms = null)
    {
        ArgumentNullException.ThrowIfNull(layers);
        ArgumentNullException.ThrowIfNull(similarities);
        ArgumentNullException.ThrowIfNull(thetas);
        ArgumentNullException.ThrowIfNull(lambdas);
        if (layers.Count == 0 || layers.Count != similarities.Count || (norms is not null && norms.Count != layers.Count))
        {
            throw new ArgumentException(
                $"{layers.Count} candidate layers, {similarities.Count} similarity matrices and {norms?.Count.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "no"} norm pairs; expected one of each per candidate, at least one.",
                nameof(layers));
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(maxLayers, 1);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var evaluated = new List<LayerSetScore>();
        var path = new List<LayerSetScore>();
        var chosen = new List<int>();
        LayerSetScore? best = null;
        for (var round = 0; round < Math.Min(maxLayers, layers.Count); round++)
        {
            LayerSetScore? roundBest = null;
            var roundPick = -1;
            for (var c = 0; c < layers.Count; c++)
            {
                if (chosen.Contains(c))
                {
                    continue;
                }

                using var setScope = NewDisposeScope();
                var set = chosen.Append(c).ToArray();
                var weights = norms is not null
                    ? ConcatenatedWeights(set.Select(i => norms[i]).ToArray())
                    : null;
                var score = Score(set.Select(i => similarities[i]).ToArray(), set.Select(i => layers[i]).ToArray(),
                    trainLabels, validationProbabilities, validationLabels, classCount, thetas, lambdas, rowBlock, weights);
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

    /// <summary>
    /// The per-layer weights <c>(a_l [n], b_l [N])</c> of concatenated-then-normalised keys from the activation norms
    /// <c>(query norms, key norms)</c> of a set's layers: <c>a_l = n_l / √(Σ_m n_m²)</c>. Joins the caller's dispose scope.
    /// </summary>
    public static (Tensor Query, Tensor Key)[] ConcatenatedWeights(IReadOnlyList<(Tensor QueryNorms, Tensor KeyNorms)> norms)
    {
        ArgumentNullException.ThrowIfNull(norms);
        using var scope = NewDisposeScope();
        Tensor Total(IEnumerable<Tensor> parts) => parts.Select(p => p.to_type(ScalarType.Float32).square()).Aggregate((a, b) => a + b).sqrt_().clamp_min_(KeyRecipe.NormEpsilon);
        var queryTotal = Total(norms.Select(n => n.QueryNorms));
        var keyTotal = Total(norms.Select(n => n.KeyNorms));
        return [.. norms.Select(n => (
            (n.QueryNorms.to_type(ScalarType.Float32) / queryTotal).MoveToOuterDisposeScope(),
            (n.KeyNorms.to_type(ScalarType.Float32) / keyTotal).MoveToOuterDisposeScope()))];
    }

    /// <summary>
    /// Best validation error over the grid for the given similarity matrices combined: their mean, or, with
    /// <paramref name="weights"/> (per layer: query-row weights <c>[n]</c> and key-column weights <c>[N]</c>), their weighted sum.
    /// </summary>
    public static LayerSetScore Score(
        IReadOnlyList<Tensor> similarities,
        IReadOnlyList<string> layers,
        Tensor trainLabels,
        Tensor probabilities,
        Tensor labels,
        int classCount,
        IReadOnlyList<double> thetas,
        IReadOnlyList<double> lambdas,
        int rowBlock = 512,
        IReadOnlyList<(Tensor Query, Tensor Key)>? weights = null)
    {
        ArgumentNullException.ThrowIfNull(similarities);
        ArgumentNullException.ThrowIfNull(labels);
        if (weights is not null && weights.Count != similarities.Count)
        {
            throw new ArgumentException($"{weights.Count} weight pairs for {similarities.Count} similarity matrices.", nameof(weights));
        }

        using var scope = NewDisposeScope();
        var n = labels.shape[0];
        var errors = new long[thetas.Count, lambdas.Count];
        var thetaArray = thetas.ToArray();
        for (long start = 0; start < n; start += rowBlock)
        {
            using var inner = NewDisposeScope();
            var len = Math.Min(rowBlock, n - start);
            Tensor Part(int i)
            {
                var part = similarities[i].narrow(0, start, len).to_type(ScalarType.Float32);
                return weights is null ? part : part.mul_(weights[i].Query.narrow(0, start, len).unsqueeze(1)).mul_(weights[i].Key.unsqueeze(0));
            }

            var s = Part(0);
            for (var i = 1; i < similarities.Count; i++)
            {
                s = s.add_(Part(i));
            }

            if (weights is null)
            {
                s = s.div_(similarities.Count);
            }
            var logMass = SimilarityLogMass.Compute(s, trainLabels, classCount, thetaArray);
            MixtureErrors.Accumulate(logMass, probabilities.narrow(0, start, len), labels.narrow(0, start, len), lambdas, errors);
        }

        var (bt, bl) = MixtureErrors.Best(errors, thetas, lambdas);
        return new LayerSetScore(layers.ToArray(), errors[bt, bl] / (double)n, thetas[bt], lambdas[bl]);
    }
}
