using ScalableCache.Core.Evaluation;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

public sealed class LayerCombinationSearchTests
{
    private static Tensor Unit(Tensor x) => nn.functional.normalize(x, p: 2, dim: 1);

    [Fact]
    public void PicksTheInformativeLayerAndScoresSetsLikeConcatenatedKeys()
    {
        using var scope = NewDisposeScope();
        var gen = manual_seed(11);
        const int classes = 3, n = 300, q = 90, d = 8;
        var trainY = arange(n, dtype: ScalarType.Int64) % classes;
        var valY = arange(q, dtype: ScalarType.Int64) % classes;
        var centres = randn(classes, d, generator: gen) * 3;

        // "good" carries the class; "noise" does not; "weak" carries it faintly.
        Tensor Make(Tensor labels, double signal) => Unit(centres.index_select(0, labels) * signal + randn(labels.shape[0], d, generator: gen));
        var candidates = new[]
        {
            new LayerCandidate("noise", Make(trainY, 0), Make(valY, 0)),
            new LayerCandidate("good", Make(trainY, 1), Make(valY, 1)),
            new LayerCandidate("weak", Make(trainY, 0.15), Make(valY, 0.15)),
        };

        // An uninformative network: uniform probabilities, so the cache decides.
        var pNet = full(q, classes, 1.0 / classes);
        var result = LayerCombinationSearch.Run(candidates, trainY, pNet, valY, classes, [10.0, 50.0], [0.5, 1.0], maxLayers: 3);
        Assert.Equal("good", result.Path[0].Layers[0]);
        Assert.True(result.Score.Error < 0.2, $"error {result.Score.Error}");
        Assert.Equal(result.Path.Last(), result.Score);

        // Scoring a pair from per-layer similarities equals scoring the concatenated, re-normalised keys directly.
        var pairTrain = Unit(cat([candidates[1].TrainKeys, candidates[2].TrainKeys], 1));
        var pairVal = Unit(cat([candidates[1].ValidationKeys, candidates[2].ValidationKeys], 1));
        var direct = LayerCombinationSearch.Score(
            [LayerCombinationSearch.Similarities(pairVal, pairTrain)], ["pair"], trainY, pNet, valY, classes, [10.0, 50.0], [0.5, 1.0]);
        var decomposed = LayerCombinationSearch.Score(
            [LayerCombinationSearch.Similarities(candidates[1].ValidationKeys, candidates[1].TrainKeys),
             LayerCombinationSearch.Similarities(candidates[2].ValidationKeys, candidates[2].TrainKeys)],
            ["good", "weak"], trainY, pNet, valY, classes, [10.0, 50.0], [0.5, 1.0]);
        Assert.Equal(direct.Error, decomposed.Error, tolerance: 0.5 / q); // the same number of the q validation errors
    }

    [Fact]
    public void ConcatenatedKeysAreScoredFromWeightedPerLayerSimilarities()
    {
        using var scope = NewDisposeScope();
        var gen = manual_seed(5);
        const int classes = 3, n = 200, q = 60;
        var trainY = arange(n, dtype: ScalarType.Int64) % classes;
        var valY = arange(q, dtype: ScalarType.Int64) % classes;
        var centres = randn(classes, 6, generator: gen) * 2;

        // Raw activations of two layers with very different scales: concatenating then normalising once weights them by their norms.
        Tensor Raw(Tensor labels, int d, double scale) => (centres.index_select(0, labels)[.., ..d] + randn(labels.shape[0], d, generator: gen)) * scale;
        var (aTrain, aVal) = (Raw(trainY, 6, 5.0), Raw(valY, 6, 5.0));
        var (bTrain, bVal) = (Raw(trainY, 4, 0.3), Raw(valY, 4, 0.3));
        LayerCandidate Candidate(string name, Tensor train, Tensor val) =>
            new(name, Unit(train), Unit(val), train.norm(1), val.norm(1));
        var candidates = new[] { Candidate("a", aTrain, aVal), Candidate("b", bTrain, bVal) };

        var directTrain = Unit(cat([aTrain, bTrain], 1));
        var directVal = Unit(cat([aVal, bVal], 1));
        var weights = LayerCombinationSearch.ConcatenatedWeights([(candidates[0].ValidationNorms!, candidates[0].TrainNorms!), (candidates[1].ValidationNorms!, candidates[1].TrainNorms!)]);
        var weighted = (weights[0].Query.unsqueeze(1) * weights[0].Key.unsqueeze(0) * candidates[0].ValidationKeys.mm(candidates[0].TrainKeys.t()))
                     + (weights[1].Query.unsqueeze(1) * weights[1].Key.unsqueeze(0) * candidates[1].ValidationKeys.mm(candidates[1].TrainKeys.t()));
        Assert.True(weighted.allclose(directVal.mm(directTrain.t()), rtol: 1e-4, atol: 1e-5), "weighted per-layer similarities are the concatenated keys' similarities");

        var pNet = full(q, classes, 1.0 / classes);
        double[] thetas = [10.0, 50.0];
        double[] lambdas = [0.5, 1.0];
        var direct = LayerCombinationSearch.Score([LayerCombinationSearch.Similarities(directVal, directTrain)], ["a+b"], trainY, pNet, valY, classes, thetas, lambdas);
        var search = LayerCombinationSearch.Run(candidates, trainY, pNet, valY, classes, thetas, lambdas, maxLayers: 2,
            normalization: ScalableCache.Core.KeyNormalization.Concatenated);
        var pair = search.Evaluated.Single(s => s.Layers.Count == 2);
        Assert.Equal(direct.Error, pair.Error, tolerance: 0.5 / q);
        Assert.Throws<ArgumentException>(() => LayerCombinationSearch.Run(
            [new LayerCandidate("a", candidates[0].TrainKeys, candidates[0].ValidationKeys)], trainY, pNet, valY, classes, thetas, lambdas,
            normalization: ScalableCache.Core.KeyNormalization.Concatenated));
    }

    /// <summary>
    /// Two layers of random class-structured unit keys (16 and 24 dimensions), 10 classes of which the last has no keys,
    /// 9,003 training keys (three blocks of the fused kernel, the last partial and no multiple of 8), float16 similarities as
    /// the search stores them.
    /// </summary>
    internal static (Tensor[] Similarities, (Tensor Query, Tensor Key)[] Weights, Tensor TrainY, Tensor ValY) FusedCase(int seed, int q, double signal)
    {
        var gen = manual_seed(seed);
        const int classes = 10, n = 9003;
        var trainY = randint(0, classes - 1, [n], generator: gen, dtype: ScalarType.Int64); // class 9: no keys
        var valY = randint(0, classes - 1, [q], generator: gen, dtype: ScalarType.Int64);
        var similarities = new Tensor[2];
        var norms = new (Tensor QueryNorms, Tensor KeyNorms)[2];
        foreach (var (layer, d) in new[] { (0, 16), (1, 24) })
        {
            var centres = randn(classes, d, generator: gen);
            Tensor Raw(Tensor labels) => (centres.index_select(0, labels) * signal) + randn(labels.shape[0], d, generator: gen);
            var (train, val) = (Raw(trainY) * (layer + 1), Raw(valY) * (layer + 1));
            similarities[layer] = LayerCombinationSearch.Similarities(Unit(val), Unit(train));
            norms[layer] = (val.norm(1), train.norm(1));
        }

        return (similarities, LayerCombinationSearch.ConcatenatedWeights(norms), trainY, valY);
    }

    [Fact]
    public void FusedLogMassMatchesTheTensorPathWithinFloat32Rounding()
    {
        using var scope = NewDisposeScope();
        const int classes = 10, q = 100;
        double[] thetas = [10, 20, 30, 40, 50, 60, 70, 80, 90];
        var (similarities, weights, trainY, _) = FusedCase(seed: 3, q, signal: 1.5);

        // Mean and weighted sums of one and two layers; a whole block, and an offset one whose width is no multiple of 8.
        foreach (var (parts, w) in new[]
        {
            (similarities[..1], ((Tensor, Tensor)[]?)null),
            (similarities, null),
            (similarities, weights),
        })
        {
            foreach (var (start, len) in new[] { (0L, q), (37L, 50) })
            {
                using var inner = NewDisposeScope();
                var fused = LayerCombinationSearch.LogMass(parts, w, trainY, classes, thetas, start, len, fused: true);
                var reference = LayerCombinationSearch.LogMass(parts, w, trainY, classes, thetas, start, len, fused: false);
                Assert.Equal(reference.shape, fused.shape);
                Assert.Equal(ScalarType.Float32, fused.dtype);
                var finite = isfinite(reference);
                Assert.True(finite.eq(isfinite(fused)).all().item<bool>(), "the same classes are finite (class 9, without keys, is −∞ in both)");
                Assert.False(finite.select(2, classes - 1).any().item<bool>());
                Assert.True(finite.narrow(2, 0, classes - 1).all().item<bool>());

                // L = θ·m + log Σ exp(θ(s − m)) is built from terms of size up to θ·max|s| + ln N (≤ θ + ln N): within 4 float32
                // steps of that, |ΔL| ≤ 4 · 2⁻²³ · (θ + ln N), at most 4.7e-5 at θ = 90 (one or two steps are found).
                var scale = tensor(thetas.Select(t => 4 * Math.Pow(2, -23) * (t + Math.Log(trainY.shape[0]))).ToArray()).view(-1, 1, 1);
                var share = where(finite, (fused.to_type(ScalarType.Float64) - reference.to_type(ScalarType.Float64)).abs() / scale, 0.0).max().item<double>();
                Assert.True(share <= 1, $"largest |ΔL| is {4 * share:F2} float32 steps of θ + ln N ({parts.Length} layer(s), weighted: {w is not null}, rows {start}…{start + len})");
            }
        }
    }

    [Fact]
    public void FusedScoringChoosesWhatTheTensorPathChoosesWhereTheGridIsWellSeparated()
    {
        using var scope = NewDisposeScope();
        const int classes = 10, q = 600;
        double[] thetas = [10, 20, 30, 40, 50, 60, 70, 80, 90];
        double[] lambdas = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];
        var (similarities, weights, trainY, valY) = FusedCase(seed: 8, q, signal: 0.3);

        // A weak network: the true class's logit raised by 1.2 over unit Gaussian noise.
        var gen = manual_seed(9);
        var logits = randn(q, classes, generator: gen) + (nn.functional.one_hot(valY, classes).to_type(ScalarType.Float32) * 1.2);
        var pNet = logits.softmax(1);
        foreach (var w in new[] { null, weights })
        {
            // The whole 9 × 9 grid: a query's prediction can flip between the paths only at a tie within float32 rounding,
            // so cells may differ by a count or so (on this data none does).
            var reference = LayerCombinationSearch.Errors(similarities, trainY, pNet, valY, classes, thetas, lambdas, 256, w, fused: false);
            var fused = LayerCombinationSearch.Errors(similarities, trainY, pNet, valY, classes, thetas, lambdas, 256, w, fused: true);
            var differences = reference.Cast<long>().Zip(fused.Cast<long>(), (r, f) => Math.Abs(r - f)).ToArray();
            Assert.True(differences.Max() <= 1, $"largest difference of a cell: {differences.Max()} errors; {differences.Count(d => d > 0)} cells differ");

            // On a coarser grid whose best cell leads by several errors both paths choose the same (error, θ, λ).
            double[] coarseThetas = [10, 30, 60, 90];
            double[] coarseLambdas = [0.2, 0.5, 0.8];
            var coarse = LayerCombinationSearch.Errors(similarities, trainY, pNet, valY, classes, coarseThetas, coarseLambdas, 256, w, fused: false);
            var cells = coarse.Cast<long>().Order().ToArray();
            Assert.True(cells[1] - cells[0] >= 5, $"the best cell ({cells[0]} errors) leads the next ({cells[1]}) by at least 5");
            var old = LayerCombinationSearch.Best(["a", "b"], coarse, coarseThetas, coarseLambdas, q);
            var score = LayerCombinationSearch.Score(similarities, ["a", "b"], trainY, pNet, valY, classes, coarseThetas, coarseLambdas, 256, w);
            Assert.Equal((old.Error, old.Theta, old.Lambda), (score.Error, score.Theta, score.Lambda));
        }
    }

    [Fact]
    public void TiesGoToSmallerLambdaThenSmallerTheta()
    {
        var errors = new long[,] { { 5, 3 }, { 3, 3 } };
        Assert.Equal((1, 0), MixtureErrors.Best(errors, [10.0, 20.0], [0.5, 0.9]));
        var flat = new long[,] { { 2, 2 }, { 2, 2 } };
        Assert.Equal((0, 0), MixtureErrors.Best(flat, [10.0, 20.0], [0.5, 0.9]));
        // Value order decides ties, not position: with a descending λ grid the smaller λ (index 1) wins.
        Assert.Equal((0, 1), MixtureErrors.Best(flat, [10.0, 20.0], [0.9, 0.5]));
    }
}
