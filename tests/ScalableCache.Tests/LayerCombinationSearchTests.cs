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
