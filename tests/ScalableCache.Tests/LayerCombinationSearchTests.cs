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
