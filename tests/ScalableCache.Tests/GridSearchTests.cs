using ScalableCache.Core;
using ScalableCache.Exact;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

public sealed class GridSearchTests
{
    /// <summary>
    /// Two classes; sample i has label i mod 2. The network is right with p = 0.6 except on every fifth sample, where it gives
    /// the true class 0.4. The memory is certain and right at θ = <paramref name="goodTheta"/> and gives the true class 0.45
    /// elsewhere. At the good θ the mixture fixes the network's mistakes once 0.4(1 − λ) + λ &gt; 0.5, i.e. λ ≥ 0.2; elsewhere
    /// it keeps them, and from λ = 0.7 on (0.6(1 − λ) + 0.45λ &lt; 0.5) it breaks every other sample too.
    /// </summary>
    private static (DesignedMemory Memory, Tensor Queries, Tensor Net, Tensor Labels) Constructed(int n, double goodTheta)
    {
        var labels = Enumerable.Range(0, n).Select(i => (long)(i % 2)).ToArray();
        var net = new float[n * 2];
        for (var i = 0; i < n; i++)
        {
            var pTrue = i % 5 == 0 ? 0.4f : 0.6f;
            net[2 * i + labels[i]] = pTrue;
            net[2 * i + 1 - labels[i]] = 1 - pTrue;
        }

        var memory = new DesignedMemory(labels, (theta, _) => theta == goodTheta ? 1.0 : 0.45);
        var queries = tensor(Enumerable.Range(0, n).Select(i => (float)i).ToArray(), [n, 1]);
        return (memory, queries, tensor(net, [n, 2]), tensor(labels));
    }

    [Fact]
    public void PicksTheKnownBestCellAndReportsTheWholeGrid()
    {
        var (memory, queries, net, labels) = Constructed(50, goodTheta: 30);
        using (queries)
        using (net)
        using (labels)
        {
            var result = CacheGridSearch.Search(memory, queries, net, labels, new GridSearchOptions(), batchSize: 16);
            Assert.Equal(30, result.Theta);
            Assert.Equal(0.2, result.Lambda);
            Assert.Equal(0, result.Error);
            Assert.Equal(0.2, result.BaselineError, tolerance: 1e-12);
            Assert.Equal(0.2, result.Improvement, tolerance: 1e-12);
            Assert.False(result.ThetaAtGridEdge);
            Assert.Equal(50, result.SampleCount);
            Assert.Equal(9, result.Thetas.Count);
            Assert.Equal(9, result.Lambdas.Count);

            // One memory call per batch of queries, each for the whole θ grid.
            Assert.Equal(4, memory.Calls);
            Assert.All(memory.ThetaCounts, count => Assert.Equal(9, count));

            for (var t = 0; t < 9; t++)
            {
                for (var l = 0; l < 9; l++)
                {
                    var theta = result.Thetas[t];
                    var lambda = result.Lambdas[l];
                    var expected = theta == 30 ? (lambda < 0.2 - 1e-9 ? 0.2 : 0) : (lambda < 0.7 - 1e-9 ? 0.2 : 1.0);
                    Assert.Equal(expected, result.ErrorAt(t, l), tolerance: 1e-12);
                }
            }
        }
    }

    [Fact]
    public void ABestThetaOnTheGridEdgeIsFlagged()
    {
        var (memory, queries, net, labels) = Constructed(20, goodTheta: 90);
        using (queries)
        using (net)
        using (labels)
        {
            var result = CacheGridSearch.Search(memory, queries, net, labels, new GridSearchOptions(), batchSize: 100);
            Assert.Equal(90, result.Theta);
            Assert.True(result.ThetaAtGridEdge);
        }
    }

    [Fact]
    public void TiesGoToTheSmallerLambdaThenTheSmallerThetaWhateverTheGridOrder()
    {
        // The memory is right and certain at every θ, and so is the network: every cell has no errors.
        var labels = new long[] { 0, 1, 1, 0 };
        var memory = new DesignedMemory(labels, (_, _) => 1.0);
        using var queries = tensor(new float[] { 0, 1, 2, 3 }, [4, 1]);
        using var net = tensor(new float[] { 0.9f, 0.1f, 0.2f, 0.8f, 0.3f, 0.7f, 0.6f, 0.4f }, [4, 2]);
        using var y = tensor(labels);
        var options = new GridSearchOptions { Thetas = [50, 20, 80], Lambdas = [0.5, 0.3, 0.9], IncludeCacheOnly = true };
        var result = CacheGridSearch.Search(memory, queries, net, y, options, batchSize: 3);
        Assert.Equal(20, result.Theta);
        Assert.Equal(0.3, result.Lambda);
        Assert.Equal(0, result.Error);
        Assert.Equal([0.5, 0.3, 0.9, 1.0], result.Lambdas);
        Assert.Equal([50.0, 20, 80], result.Thetas);
        Assert.True(result.ThetaAtGridEdge); // 20 is the smallest θ of the grid
    }

    [Fact]
    public void EvaluateAtAFixedCellMatchesTheGridAndPredictGivesTheLabels()
    {
        var (memory, queries, net, labels) = Constructed(30, goodTheta: 40);
        using (queries)
        using (net)
        using (labels)
        {
            var result = CacheGridSearch.Search(memory, queries, net, labels, new GridSearchOptions(), batchSize: 8);
            for (var t = 0; t < result.Thetas.Count; t += 4)
            {
                for (var l = 0; l < result.Lambdas.Count; l += 3)
                {
                    var error = CacheGridSearch.Evaluate(memory, queries, net, labels, result.Thetas[t], result.Lambdas[l], batchSize: 7);
                    Assert.Equal(result.ErrorAt(t, l), error, tolerance: 1e-12);
                }
            }

            Assert.Equal(0.0, CacheGridSearch.Evaluate(memory, queries, net, labels, 40, 0.5));
            using var predictions = CacheMixer.Predict(memory, queries, net, 40, 0.5, batchSize: 4);
            Assert.True(predictions.eq(labels).all().item<bool>());
        }
    }

    [Fact]
    public void OnAnExactMemoryTheBatchSizeDoesNotChangeTheResultAndTheCacheHelps()
    {
        var data = TestData.Clustered(16, 4, keysPerClass: 30, queriesPerClass: 10, seed: 300, noise: 0.5);
        using var memory = new ExactCacheMemory(16, 4, CPU, new ExactCacheOptions { KeyBlockSize = 32 });
        using (var k = data.KeyTensor())
        using (var y = data.KeyLabelTensor())
        {
            memory.Add(k, y);
        }

        using var queries = data.QueryTensor();
        using var labels = data.QueryLabelTensor();
        using var net = rand([data.QueryCount, 4], generator: new Generator(9)).softmax(1);
        var small = CacheGridSearch.Search(memory, queries, net, labels, new GridSearchOptions(), batchSize: 7);
        var large = CacheGridSearch.Search(memory, queries, net, labels, new GridSearchOptions(), batchSize: 1000);
        Assert.Equal(large.Theta, small.Theta);
        Assert.Equal(large.Lambda, small.Lambda);
        for (var t = 0; t < 9; t++)
        {
            Assert.Equal(large.Errors[t], small.Errors[t]);
        }

        Assert.True(small.Error < small.BaselineError);
    }

    [Fact]
    public void InvalidGridsAndInputsAreRejected()
    {
        var (memory, queries, net, labels) = Constructed(10, goodTheta: 30);
        using (queries)
        using (net)
        using (labels)
        {
            Assert.Throws<ArgumentException>(() =>
                CacheGridSearch.Search(memory, queries, net, labels, new GridSearchOptions { Thetas = [] }, 4));
            Assert.Throws<ArgumentException>(() =>
                CacheGridSearch.Search(memory, queries, net, labels, new GridSearchOptions { Thetas = [10, -1] }, 4));
            Assert.Throws<ArgumentException>(() =>
                CacheGridSearch.Search(memory, queries, net, labels, new GridSearchOptions { Lambdas = [0.5, 1.2] }, 4));
            Assert.Throws<ArgumentOutOfRangeException>(() =>
                CacheGridSearch.Search(memory, queries, net, labels, new GridSearchOptions(), 0));
            using var shortLabels = labels.narrow(0, 0, 5);
            Assert.Throws<ArgumentException>(() =>
                CacheGridSearch.Search(memory, queries, net, shortLabels, new GridSearchOptions(), 4));
        }
    }

    /// <summary>
    /// A stand-in memory of dimension 1 whose query value is a sample index: it gives the sample's label probability
    /// <c>pTrue(θ)</c> (the rest to the other of two classes), and counts its calls.
    /// </summary>
    /// <summary>
    /// Adaptive θ widening: the memory gets query i right once θ ≥ 10·(i mod 12), so the cache-only error keeps falling up to
    /// θ = 110, past the grid's 90. Widening adds 100 and 110, then 120 (no better, so the choice leaves the edge) and stops;
    /// without widening the choice sits on the edge at 90.
    /// </summary>
    [Fact]
    public void AdaptiveWideningExtendsTheThetaGridWhileTheOptimumIsOnItsEdge()
    {
        const int n = 120;
        var labels = Enumerable.Range(0, n).Select(i => (long)(i % 2)).ToArray();
        using var memory = new DesignedMemory(labels, (theta, row) => theta >= 10 * (row % 12) ? 0.9 : 0.1);
        using var scope = NewDisposeScope();
        var net = tensor(Enumerable.Range(0, n).SelectMany(i => i % 2 == 0 ? new[] { 0.4f, 0.6f } : [0.6f, 0.4f]).ToArray(), [n, 2]);
        using var table = new ScalableCache.Core.Evaluation.FeatureTable(
            tensor(Enumerable.Range(0, n).Select(i => (float)i).ToArray(), [n, 1]), net, tensor(labels), ["designed"]);
        var fixedGrid = ScalableCache.Core.Evaluation.CacheEvaluation.Tune(memory, table, new GridSearchOptions(), batchSize: 64);
        Assert.Equal(90, fixedGrid.CacheOnlyTheta);
        Assert.True(fixedGrid.CacheOnlyThetaAtGridEdge);
        Assert.Equal(0, fixedGrid.ThetaWidenings);

        var widened = ScalableCache.Core.Evaluation.CacheEvaluation.Tune(memory, table, new GridSearchOptions { MaxThetaWidenings = 5 }, batchSize: 64);
        Assert.Equal(110, widened.CacheOnlyTheta);
        Assert.Equal(0, widened.ValidationCacheOnlyError);
        Assert.InRange(fixedGrid.ValidationCacheOnlyError, 0.166, 0.167); // 20 of 120 queries need θ = 100 or 110
        Assert.Equal(3, widened.ThetaWidenings);
        Assert.Equal([10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120], widened.Grid.Thetas);
        Assert.False(widened.CacheOnlyThetaAtGridEdge);

        var bounded = ScalableCache.Core.Evaluation.CacheEvaluation.Tune(memory, table, new GridSearchOptions { MaxThetaWidenings = 1 }, batchSize: 64);
        Assert.Equal(1, bounded.ThetaWidenings);
        Assert.Equal(100, bounded.CacheOnlyTheta);
        Assert.True(bounded.CacheOnlyThetaAtGridEdge);
    }

    private sealed class DesignedMemory(long[] labels, Func<double, int, double> pTrue) : ICacheMemory
    {
        public List<int> ThetaCounts { get; } = [];

        public int Calls => ThetaCounts.Count;

        public string Provider => "Designed";

        public int Dimension => 1;

        public int ClassCount => 2;

        public long Count => labels.Length;

        public void Add(Tensor keys, Tensor labels) => throw new NotSupportedException();

        public Tensor ClassLogMass(Tensor queries, ReadOnlySpan<double> thetas)
        {
            ThetaCounts.Add(thetas.Length);
            var rows = queries.data<float>().ToArray();
            var values = new float[thetas.Length * rows.Length * 2];
            for (var t = 0; t < thetas.Length; t++)
            {
                for (var i = 0; i < rows.Length; i++)
                {
                    var p = pTrue(thetas[t], (int)rows[i]);
                    var label = labels[(int)rows[i]];
                    values[(t * rows.Length + i) * 2 + label] = (float)Math.Log(p);
                    values[(t * rows.Length + i) * 2 + 1 - label] = (float)Math.Log(1 - p);
                }
            }

            return tensor(values, [thetas.Length, rows.Length, 2]);
        }

        public void Dispose()
        {
        }
    }
}
