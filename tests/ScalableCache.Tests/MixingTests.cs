using ScalableCache.Core;
using ScalableCache.Exact;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

public sealed class MixingTests
{
    private const int Dim = 16, Classes = 5;

    private static (ExactCacheMemory Memory, TestData Data, Tensor NetProbabilities) Setup(int seed)
    {
        var data = TestData.Clustered(Dim, Classes, keysPerClass: 12, queriesPerClass: 4, seed: seed, noise: 0.8);
        var memory = new ExactCacheMemory(Dim, Classes, CPU, new ExactCacheOptions { KeyBlockSize = 10 });
        using (var k = data.KeyTensor())
        using (var y = data.KeyLabelTensor())
        {
            memory.Add(k, y);
        }

        var generator = new Generator(7);
        var net = rand([data.QueryCount, Classes], generator: generator).softmax(1);
        return (memory, data, net);
    }

    [Fact]
    public void LambdaZeroIsTheNetworkAndLambdaOneTheMemoryExactly()
    {
        var (memory, data, net) = Setup(200);
        using (memory)
        using (net)
        using (var q = data.QueryTensor())
        using (var pMem = memory.MemoryProbabilities(q, 40))
        {
            using var zero = CacheMixer.Mix(net, pMem, 0);
            using var one = CacheMixer.Mix(net, pMem, 1);
            Assert.True(zero.eq(net).all().item<bool>());
            Assert.True(one.eq(pMem).all().item<bool>());

            using var viaMemoryZero = CacheMixer.Probabilities(memory, q, net, 40, 0);
            using var viaMemoryOne = CacheMixer.Probabilities(memory, q, net, 40, 1);
            Assert.True(viaMemoryZero.eq(net).all().item<bool>());
            Assert.True(viaMemoryOne.eq(pMem).all().item<bool>());
        }
    }

    [Fact]
    public void AnInteriorLambdaIsTheConvexCombinationAndSumsToOne()
    {
        var (memory, data, net) = Setup(201);
        using (memory)
        using (net)
        using (var q = data.QueryTensor())
        using (var pMem = memory.MemoryProbabilities(q, 25))
        using (var mixed = CacheMixer.Probabilities(memory, q, net, 25, 0.3))
        using (var expected = net * 0.7 + pMem * 0.3)
        {
            Assert.True(mixed.allclose(expected, rtol: 0, atol: 1e-7));
            Assert.True(mixed.sum(1).allclose(ones(data.QueryCount), rtol: 0, atol: 1e-6));
        }
    }

    [Fact]
    public void PredictInBatchesEqualsTheArgMaxOfTheMixture()
    {
        var (memory, data, net) = Setup(202);
        using (memory)
        using (net)
        using (var q = data.QueryTensor())
        using (var predictions = CacheMixer.Predict(memory, q, net, 30, 0.6, batchSize: 3))
        using (var mixed = CacheMixer.Probabilities(memory, q, net, 30, 0.6))
        using (var expected = mixed.argmax(1))
        {
            Assert.Equal(ScalarType.Int64, predictions.dtype);
            Assert.True(predictions.eq(expected).all().item<bool>());
        }
    }

    [Fact]
    public void LambdaOutsideTheUnitIntervalAndMismatchedShapesAreRejected()
    {
        using var a = ones(2, 3) / 3;
        using var b = ones(2, 4) / 4;
        Assert.Throws<ArgumentOutOfRangeException>(() => CacheMixer.Mix(a, a, -0.1));
        Assert.Throws<ArgumentOutOfRangeException>(() => CacheMixer.Mix(a, a, 1.5));
        Assert.Throws<ArgumentOutOfRangeException>(() => CacheMixer.Mix(a, a, double.NaN));
        Assert.Throws<ArgumentException>(() => CacheMixer.Mix(a, b, 0.5));

        var (memory, data, net) = Setup(203);
        using (memory)
        using (net)
        using (var q = data.QueryTensor())
        using (var wrongNet = ones(data.QueryCount, Classes + 1))
        {
            Assert.Throws<ArgumentException>(() => CacheMixer.Probabilities(memory, q, wrongNet, 10, 0.5));
        }
    }

    [Fact]
    public void AnEmptyMemoryLeavesOnlyTheNetworkShare()
    {
        using var memory = new ExactCacheMemory(Dim, Classes, CPU, new ExactCacheOptions());
        using var q = TestData.RandomUnit(3, Dim, seed: 204);
        using var net = ones(3, Classes) / Classes;
        using var mixed = CacheMixer.Probabilities(memory, q, net, 10, 0.25);
        Assert.True(mixed.allclose(net * 0.75, rtol: 0, atol: 1e-7));
    }
}
