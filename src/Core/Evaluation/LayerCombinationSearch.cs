using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
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
    /// <summary>Keys per call of the fused kernel: one block's key-major similarities stay in cache between its passes.</summary>
    internal const int KeyBlock = 4096;

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
        ArgumentNullException.ThrowIfNull(similarities);
        return Run(
            layers, InMemory(similarities), trainLabels, validationProbabilities, validationLabels, classCount, thetas, lambdas, maxLayers, progress,
            rowBlock, norms);
    }

    /// <summary>
    /// Runs the search from each candidate's similarity matrix read tile by tile (<see cref="SimilarityMatrix"/>: in memory, or a
    /// <see cref="SimilarityFile"/> written while the training images were extracted), as the overload over tensors does.
    /// </summary>
    /// <param name="layers">Candidate names, one per similarity matrix.</param>
    /// <param name="similarities">Per candidate: validation-query × training-key cosine similarities.</param>
    /// <param name="trainLabels">Labels <c>[N]</c> of the training keys (the similarities' columns).</param>
    /// <param name="validationProbabilities"><c>p_net</c> <c>[n, C]</c> of the validation queries.</param>
    /// <param name="validationLabels">Labels <c>[n]</c> of the validation queries.</param>
    /// <param name="classCount">Classes C.</param>
    /// <param name="thetas">θ grid.</param>
    /// <param name="lambdas">λ grid.</param>
    /// <param name="maxLayers">Largest set.</param>
    /// <param name="progress">Told of every scored set.</param>
    /// <param name="rowBlock">Query rows scored at a time.</param>
    /// <param name="norms">Per candidate (query norms, key norms) for <see cref="KeyNormalization.Concatenated"/> keys, else <see langword="null"/>.</param>
    public static LayerCombinationResult Run(
        IReadOnlyList<string> layers,
        IReadOnlyList<SimilarityMatrix> similarities,
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
    /// <remarks>
    /// Per block of <paramref name="rowBlock"/> queries and <see cref="KeyBlock"/> keys the combined similarities are written
    /// once, key-major in float32, and <see cref="LogMassKernel"/> (the exact store's fused CPU kernel) turns them into every θ's
    /// per-class log-mass, merged across key blocks in float64 and rounded to float32 once. The combined similarities are
    /// those of the tensor path this replaced (<see cref="SimilarityLogMass.Compute"/> on query-major blocks) bit for bit; the
    /// log-mass equals that path's up to float32 rounding (within a few float32 steps of <c>θ + ln N</c>), so a set's errors
    /// can differ from it only where a query's two best mixed probabilities tie to within that rounding. Never differentiated;
    /// inputs are not modified.
    /// </remarks>
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
        return Score(InMemory(similarities), layers, trainLabels, probabilities, labels, classCount, thetas, lambdas, rowBlock, weights);
    }

    /// <summary>As the overload over tensors, with the similarity matrices read tile by tile (<see cref="SimilarityMatrix"/>).</summary>
    public static LayerSetScore Score(
        IReadOnlyList<SimilarityMatrix> similarities,
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
        ArgumentNullException.ThrowIfNull(labels);
        var errors = Errors(similarities, trainLabels, probabilities, labels, classCount, thetas, lambdas, rowBlock, weights, fused: true);
        return Best(layers, errors, thetas, lambdas, labels.shape[0]);
    }

    /// <summary>The score of <paramref name="layers"/>: the best cell of the error counts <c>[T, Λ]</c> over <paramref name="n"/> queries.</summary>
    internal static LayerSetScore Best(IReadOnlyList<string> layers, long[,] errors, IReadOnlyList<double> thetas, IReadOnlyList<double> lambdas, long n)
    {
        ArgumentNullException.ThrowIfNull(layers);
        var (bt, bl) = MixtureErrors.Best(errors, thetas, lambdas);
        return new LayerSetScore(layers.ToArray(), errors[bt, bl] / (double)n, thetas[bt], lambdas[bl]);
    }

    /// <summary>The error counts <c>[T, Λ]</c> behind <c>Score</c> over held tensors.</summary>
    internal static long[,] Errors(
        IReadOnlyList<Tensor> similarities, Tensor trainLabels, Tensor probabilities, Tensor labels, int classCount, IReadOnlyList<double> thetas,
        IReadOnlyList<double> lambdas, int rowBlock, IReadOnlyList<(Tensor Query, Tensor Key)>? weights, bool fused) =>
        Errors(InMemory(similarities), trainLabels, probabilities, labels, classCount, thetas, lambdas, rowBlock, weights, fused);

    /// <summary>The error counts <c>[T, Λ]</c> behind <c>Score</c>, from <c>LogMass</c> per block of <paramref name="rowBlock"/> queries.</summary>
    internal static long[,] Errors(
        IReadOnlyList<SimilarityMatrix> similarities, Tensor trainLabels, Tensor probabilities, Tensor labels, int classCount, IReadOnlyList<double> thetas,
        IReadOnlyList<double> lambdas, int rowBlock, IReadOnlyList<(Tensor Query, Tensor Key)>? weights, bool fused)
    {
        ArgumentNullException.ThrowIfNull(labels);
        ArgumentNullException.ThrowIfNull(thetas);
        ArgumentNullException.ThrowIfNull(lambdas);
        ArgumentOutOfRangeException.ThrowIfLessThan(rowBlock, 1);
        ArgumentNullException.ThrowIfNull(similarities);
        rowBlock = Math.Max(rowBlock, similarities.Count == 0 ? 0 : similarities.Max(m => m.PreferredRowBlock)); // a query's result does not depend on its block
        using var scope = NewDisposeScope();
        var n = labels.shape[0];
        var errors = new long[thetas.Count, lambdas.Count];
        var thetaArray = thetas.ToArray();
        for (long start = 0; start < n; start += rowBlock)
        {
            using var inner = NewDisposeScope();
            var len = (int)Math.Min(rowBlock, n - start);
            var logMass = LogMass(similarities, weights, trainLabels, classCount, thetaArray, start, len, fused);
            MixtureErrors.Accumulate(logMass, probabilities.narrow(0, start, len), labels.narrow(0, start, len), lambdas, errors);
        }

        return errors;
    }

    /// <summary>
    /// Log-mass <c>[T, len, C]</c> (float32; −∞ for classes without keys) of queries <c>[start, start + len)</c> under the
    /// combined similarities: through <see cref="LogMassKernel"/>, or (<paramref name="fused"/> false) through
    /// <see cref="SimilarityLogMass.Compute"/> on the query-major block — the tensor path the scoring used before, kept as the
    /// reference that tests and the <c>search-score</c> benchmark compare with.
    /// </summary>
    internal static Tensor LogMass(
        IReadOnlyList<Tensor> similarities, IReadOnlyList<(Tensor Query, Tensor Key)>? weights, Tensor trainLabels, int classCount,
        double[] thetas, long start, int len, bool fused) =>
        LogMass(InMemory(similarities), weights, trainLabels, classCount, thetas, start, len, fused);

    /// <summary>As the overload over tensors, with the matrices read tile by tile; the reference path (<paramref name="fused"/> false) needs them in memory.</summary>
    internal static Tensor LogMass(
        IReadOnlyList<SimilarityMatrix> similarities, IReadOnlyList<(Tensor Query, Tensor Key)>? weights, Tensor trainLabels, int classCount,
        double[] thetas, long start, int len, bool fused)
    {
        ArgumentNullException.ThrowIfNull(similarities);
        ArgumentNullException.ThrowIfNull(thetas);
        if (similarities.Count == 0)
        {
            throw new ArgumentException("At least one similarity matrix is needed.", nameof(similarities));
        }

        if (weights is not null && weights.Count != similarities.Count)
        {
            throw new ArgumentException($"{weights.Count} weight pairs for {similarities.Count} similarity matrices.", nameof(weights));
        }

        using var noGrad = no_grad();
        return fused
            ? FusedLogMass(similarities, weights, start, len, KeyLabels(trainLabels, similarities[0].Columns, classCount, thetas), classCount,
                LogMassKernel.ThetaGrid.Create(thetas))
            : SimilarityLogMass.Compute(Combined(Held(similarities), weights, start, len, 0, similarities[0].Columns), trainLabels, classCount, thetas);
    }

    /// <summary>
    /// The combined similarities <c>[len, rows]</c> (float32, query-major) of queries <c>[start, start + len)</c> and keys
    /// <c>[keyOffset, keyOffset + rows)</c>: <c>((s₀ + s₁) + …) / k</c>, or <c>Σ_l (s_l · a_l) · b_l</c> with weights.
    /// </summary>
    private static Tensor Combined(
        IReadOnlyList<Tensor> similarities, IReadOnlyList<(Tensor Query, Tensor Key)>? weights, long start, int len, long keyOffset, long rows)
    {
        Tensor Part(int i)
        {
            var part = similarities[i].narrow(0, start, len).narrow(1, keyOffset, rows).to_type(ScalarType.Float32, copy: true);
            return weights is null
                ? part
                : part.mul_(weights[i].Query.narrow(0, start, len).unsqueeze(1)).mul_(weights[i].Key.narrow(0, keyOffset, rows).unsqueeze(0));
        }

        var s = Part(0);
        for (var i = 1; i < similarities.Count; i++)
        {
            s = s.add_(Part(i));
        }

        return weights is null ? s.div_(similarities.Count) : s;
    }

    /// <summary>The training labels as a managed array, checked against the similarities' columns, the classes and the θ.</summary>
    private static int[] KeyLabels(Tensor trainLabels, long columns, int classCount, double[] thetas)
    {
        ArgumentNullException.ThrowIfNull(trainLabels);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(classCount);
        foreach (var theta in thetas)
        {
            if (!(theta > 0) || double.IsInfinity(theta))
            {
                throw new ArgumentOutOfRangeException(nameof(thetas), theta, "θ must be finite and positive.");
            }
        }

        if (trainLabels.shape.Length != 1 || trainLabels.shape[0] != columns)
        {
            throw new ArgumentException($"labels has shape [{string.Join(", ", trainLabels.shape)}]; expected [{columns}].", nameof(trainLabels));
        }

        var y = trainLabels.to(ScalarType.Int32, CPU).data<int>().ToArray();
        if (y.Any(label => label < 0 || label >= classCount))
        {
            throw new ArgumentException($"labels must lie in [0, {classCount}).", nameof(trainLabels));
        }

        return y;
    }

    /// <summary>
    /// Log-mass <c>[T, len, C]</c> (float32; −∞ for classes without keys) of queries <c>[start, start + len)</c> through
    /// <see cref="LogMassKernel"/>: per key block the combined similarities (the same elementwise operations, in the same order,
    /// as the tensor path) are transposed into a zero-padded key-major float32 buffer, with the stabiliser bound <c>max |s|</c>
    /// per query of that block.
    /// </summary>
    private static Tensor FusedLogMass(
        IReadOnlyList<SimilarityMatrix> similarities, IReadOnlyList<(Tensor Query, Tensor Key)>? weights, long start, int len, int[] keyLabels,
        int classCount, LogMassKernel.ThetaGrid grid)
    {
        using var scope = NewDisposeScope();
        var total = keyLabels.Length;
        var padded = (len + LogMassKernel.Lanes - 1) / LogMassKernel.Lanes * LogMassKernel.Lanes;
        var capacity = Math.Min(KeyBlock, total);
        var buffer = zeros(capacity, padded, dtype: ScalarType.Float32); // padding columns stay 0
        var running = new LogMassKernel.Running(grid, classCount, padded);
        var present = new bool[classCount];
        var upper = new float[padded];
        var theta0 = new float[padded];
        for (var j = len; j < padded; j++)
        {
            theta0[j] = LogMassKernel.StabiliserTemperature(0);
        }

        // Float16 or float32 tiles (in memory or in files) are read directly; other held matrices go through tensor operations.
        var direct = similarities.All(m => m.Direct(len));
        var single = similarities.Select(m => m.ElementType == ScalarType.Float32).ToArray();
        var held = direct ? null : Held(similarities);
        var sources = new nint[similarities.Count];
        var strides = new long[similarities.Count];
        var queryWeights = direct ? weights?.Select(w => w.Query.narrow(0, start, len).to_type(ScalarType.Float32).data<float>().ToArray()).ToArray() : null;
        var keyWeights = direct ? weights?.Select(w => w.Key.to_type(ScalarType.Float32).data<float>().ToArray()).ToArray() : null;
        var address = Address(buffer);
        for (var offset = 0; offset < total; offset += capacity)
        {
            using var blockScope = NewDisposeScope();
            var rows = Math.Min(capacity, total - offset);
            if (direct)
            {
                for (var l = 0; l < similarities.Count; l++)
                {
                    (sources[l], strides[l]) = similarities[l].Tile(start, len, offset, rows);
                }

                CombineTransposed(sources, single, strides, queryWeights, keyWeights, len, offset, rows, address, padded, upper);
            }
            else
            {
                var combined = Combined(held!, weights, start, len, offset, rows); // [len, rows]
                buffer.narrow(0, 0, rows).narrow(1, 0, len).copy_(combined.t());
                maximum(combined.amax([1]), combined.amin([1]).neg_()).data<float>().CopyTo(upper, 0);
            }

            for (var j = 0; j < len; j++)
            {
                theta0[j] = LogMassKernel.StabiliserTemperature(upper[j]);
            }

            Array.Clear(present);
            foreach (var label in keyLabels.AsSpan(offset, rows))
            {
                present[label] = true;
            }

            LogMassKernel.Accumulate(address, rows, padded, keyLabels, offset, present, theta0, upper, running);
        }

        GC.KeepAlive(buffer);
        GC.KeepAlive(similarities);
        return running.ToTensor(len).permute(0, 2, 1).contiguous().MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Writes the combined similarities of the <paramref name="len"/> queries and keys <c>[offset, offset + rows)</c> of the
    /// contiguous float16 (or, where <paramref name="single"/> says so, float32) matrices <c>[len, columns]</c> at <paramref name="sources"/> into <paramref name="target"/>
    /// <c>[rows, padded]</c> (key-major float32), and <c>max_k |s|</c> of each query into <paramref name="upper"/>. The same
    /// float32 operations in the same order as <see cref="Combined"/> (exact conversions, then <c>((s₀ + s₁) + …) / k</c> or
    /// <c>Σ_l (s_l · a_l) · b_l</c>), so the values are those of the tensor path. Parallel over groups of 8 queries; each
    /// 8 × 8 tile is transposed in registers.
    /// </summary>
    private static unsafe void CombineTransposed(
        nint[] sources, bool[] single, long[] strides, float[][]? queryWeights, float[][]? keyWeights, int len, int offset, int rows,
        nint target, int padded, float[] upper)
    {
        var groups = (len + 7) / 8;
        var layers = sources.Length;
        var full = rows / 8 * 8;
        Parallel.For(0, groups, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount }, group =>
        {
            var j0 = group * 8;
            var width = Math.Min(8, len - j0);
            var tile = stackalloc Vector256<float>[8];
            var largest = stackalloc Vector256<float>[8];
            for (var q = 0; q < 8; q++)
            {
                largest[q] = Vector256<float>.Zero;
            }

            var divisor = Vector256.Create((float)layers);
            for (var k = 0; k < full; k += 8)
            {
                for (var q = 0; q < width; q++)
                {
                    var value = Vector256<float>.Zero;
                    for (var l = 0; l < layers; l++)
                    {
                        var at = ((j0 + q) * strides[l]) + k;
                        var part = single[l] ? Vector256.Load((float*)sources[l] + at) : ToSingle(Vector128.Load((ushort*)sources[l] + at));
                        if (queryWeights is not null)
                        {
                            fixed (float* b = keyWeights![l])
                            {
                                part = part * Vector256.Create(queryWeights[l][j0 + q]) * Vector256.Load(b + offset + k);
                            }
                        }

                        value = l == 0 ? part : value + part;
                    }

                    if (queryWeights is null)
                    {
                        value /= divisor;
                    }

                    tile[q] = value;
                    largest[q] = Vector256.Max(largest[q], Vector256.Abs(value));
                }

                for (var q = width; q < 8; q++)
                {
                    tile[q] = Vector256<float>.Zero; // past the last query: padding columns stay 0
                }

                Transpose8x8(tile);
                for (var r = 0; r < 8; r++)
                {
                    Vector256.Store(tile[r], (float*)target + ((long)(k + r) * padded) + j0);
                }
            }

            for (var q = 0; q < width; q++)
            {
                var bound = 0f;
                for (var lane = 0; lane < Vector256<float>.Count; lane++)
                {
                    bound = Math.Max(bound, largest[q].GetElement(lane));
                }

                // The last rows % 8 keys, one at a time.
                for (var k = full; k < rows; k++)
                {
                    var value = 0f;
                    for (var l = 0; l < layers; l++)
                    {
                        var at = ((j0 + q) * strides[l]) + k;
                        var part = single[l] ? ((float*)sources[l])[at] : (float)BitConverter.UInt16BitsToHalf(((ushort*)sources[l])[at]);
                        if (queryWeights is not null)
                        {
                            part = part * queryWeights[l][j0 + q] * keyWeights![l][offset + k];
                        }

                        value = l == 0 ? part : value + part;
                    }

                    if (queryWeights is null)
                    {
                        value /= layers;
                    }

                    ((float*)target)[((long)k * padded) + j0 + q] = value;
                    bound = Math.Max(bound, Math.Abs(value));
                }

                upper[j0 + q] = bound;
            }
        });
    }

    /// <summary>Views held tensors as similarity matrices (the tensors stay the caller's).</summary>
    private static SimilarityMatrix[] InMemory(IReadOnlyList<Tensor> similarities) => [.. similarities.Select(SimilarityMatrix.InMemory)];

    /// <summary>The held tensors of in-memory matrices (the tensor path needs them).</summary>
    private static Tensor[] Held(IReadOnlyList<SimilarityMatrix> similarities) =>
        [.. similarities.Select(m => m.HeldTensor ?? throw new ArgumentException("Similarity files (and matrices computed from keys) are read tile by tile only; this path needs the matrices in memory.", nameof(similarities)))];

    /// <summary>Transposes the 8 × 8 floats of <paramref name="rows"/> in place (AVX shuffles where available).</summary>
    private static unsafe void Transpose8x8(Vector256<float>* rows)
    {
        if (Avx.IsSupported)
        {
            var t0 = Avx.UnpackLow(rows[0], rows[1]);
            var t1 = Avx.UnpackHigh(rows[0], rows[1]);
            var t2 = Avx.UnpackLow(rows[2], rows[3]);
            var t3 = Avx.UnpackHigh(rows[2], rows[3]);
            var t4 = Avx.UnpackLow(rows[4], rows[5]);
            var t5 = Avx.UnpackHigh(rows[4], rows[5]);
            var t6 = Avx.UnpackLow(rows[6], rows[7]);
            var t7 = Avx.UnpackHigh(rows[6], rows[7]);
            var u0 = Avx.Shuffle(t0, t2, 0x44);
            var u1 = Avx.Shuffle(t0, t2, 0xEE);
            var u2 = Avx.Shuffle(t1, t3, 0x44);
            var u3 = Avx.Shuffle(t1, t3, 0xEE);
            var u4 = Avx.Shuffle(t4, t6, 0x44);
            var u5 = Avx.Shuffle(t4, t6, 0xEE);
            var u6 = Avx.Shuffle(t5, t7, 0x44);
            var u7 = Avx.Shuffle(t5, t7, 0xEE);
            rows[0] = Avx.Permute2x128(u0, u4, 0x20);
            rows[1] = Avx.Permute2x128(u1, u5, 0x20);
            rows[2] = Avx.Permute2x128(u2, u6, 0x20);
            rows[3] = Avx.Permute2x128(u3, u7, 0x20);
            rows[4] = Avx.Permute2x128(u0, u4, 0x31);
            rows[5] = Avx.Permute2x128(u1, u5, 0x31);
            rows[6] = Avx.Permute2x128(u2, u6, 0x31);
            rows[7] = Avx.Permute2x128(u3, u7, 0x31);
            return;
        }

        var values = stackalloc float[64];
        for (var r = 0; r < 8; r++)
        {
            Vector256.Store(rows[r], values + (r * 8));
        }

        for (var r = 0; r < 8; r++)
        {
            rows[r] = Vector256.Create(
                values[r], values[8 + r], values[16 + r], values[24 + r], values[32 + r], values[40 + r], values[48 + r], values[56 + r]);
        }
    }

    /// <summary>
    /// The address of a contiguous CPU tensor's first element (its memory belongs to the tensor or the one it views: keep that
    /// alive while the address is used). TorchSharp has no float16 storage, so float16 tensors (under 2 GiB) go through
    /// their bytes.
    /// </summary>
    internal static unsafe nint Address(Tensor tensor)
    {
        if (tensor.dtype == ScalarType.Float32)
        {
            using var floats = tensor.storage<float>();
            return floats.data_ptr() + (nint)(tensor.storage_offset() * sizeof(float));
        }

        fixed (byte* data = tensor.bytes)
        {
            return (nint)data;
        }
    }

    /// <summary>Eight float16 values (their bits) as float32, exactly: normal and subnormal values, ±0, ±∞ and NaN.</summary>
    private static Vector256<float> ToSingle(Vector128<ushort> bits)
    {
        var u = Vector256.Create(Vector128.WidenLower(bits), Vector128.WidenUpper(bits));
        var magnitude = u & Vector256.Create(0x7fffu);
        var sign = (u & Vector256.Create(0x8000u)) << 16;

        // Exponent and mantissa moved to float32's fields, then scaled by 2¹¹² (the difference of the biases); subnormal
        // float16 values become normal float32 ones by the same product. ∞ and NaN keep float32's largest exponent.
        var shifted = magnitude << 13;
        var value = shifted.AsSingle() * Vector256.Create(BitConverter.UInt32BitsToSingle(0x77800000));
        var special = Vector256.GreaterThanOrEqual(magnitude, Vector256.Create(0x7c00u));
        var result = Vector256.ConditionalSelect(special, shifted | Vector256.Create(0x7f800000u), value.AsUInt32());
        return (result | sign).AsSingle();
    }
}
