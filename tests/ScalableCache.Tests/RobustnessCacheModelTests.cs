using ScalableCache.Core;
using ScalableCache.Core.Evaluation;
using ScalableCache.Core.Features;
using ScalableCache.Core.Robustness;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>The differentiable cache model: same keys as the extractor, same log-mass as the reference kernel, exact gradients.</summary>
public sealed class RobustnessCacheModelTests
{
    private static readonly string[] Layers = ["conv", "act"];

    private static Tensor Images(int count, int seed, ScalarType dtype) =>
        tensor(KnownClassifiers.Uniform(count * 2 * 4 * 4, seed, 0.05, 0.95), [count, 2, 4, 4], dtype: dtype);

    /// <summary>Keys of random images through the model's own tap (so similarities are realistic), with the given labels.</summary>
    private static (Tensor Keys, Tensor Labels) RandomCache(TinyTapNet net, int count, long[] labels, ScalarType dtype)
    {
        using var extractor = new LayerTapExtractor(net, Layers);
        var images = Images(count, 99, dtype);
        var normalized = (images - tensor(new[] { 0.4, 0.6 }, [1, 2, 1, 1], dtype: dtype)) / tensor(new[] { 0.25, 0.5 }, [1, 2, 1, 1], dtype: dtype);
        using var tap = extractor.Extract(normalized);
        return (tap.Keys.clone(), tensor(labels));
    }

    [Fact]
    public void QueryKeysMatchTheExtractorAndLogMassMatchesTheReferenceKernel()
    {
        using var scope = NewDisposeScope();
        using var net = TinyTapNet.Create(1, ScalarType.Float32);
        long[] labels = [0, 1, 2, 0, 1, 2, 0, 0, 1, 2, 2];
        var (keys, y) = RandomCache(net, labels.Length, labels, ScalarType.Float32);
        using var model = new CacheModel(net, TinyTapNet.Normalization, Layers, keys, y, new CacheModelOptions { KeyBlockSize = 2 });
        Assert.Equal(11, model.KeyCount);
        Assert.Equal(3 * 16 * 2, model.Dimension);

        var x = Images(5, 7, ScalarType.Float32);
        using var extractor = new LayerTapExtractor(net, Layers);
        using var expected = extractor.Extract(TinyTapNet.Normalization.Normalize(x));
        var queries = model.QueryKeys(x);
        Assert.True(queries.allclose(expected.Keys, rtol: 1e-5, atol: 1e-6));

        // Blocked per-class logsumexp against the shared kernel, for two θ.
        foreach (var theta in new[] { 3.0, 60.0 })
        {
            var reference = SimilarityLogMass.Compute(expected.Keys.mm(keys.t()), y, 3, [theta])[0];
            var logMass = model.ClassLogMass(queries, theta);
            Assert.True(logMass.allclose(reference, rtol: 1e-5, atol: 1e-4), $"θ = {theta}");

            // Variants: cache-only is p_mem; the cache model mixes with the network's softmax.
            var pMem = LogMass.ToProbabilities(reference);
            var pNet = expected.Probabilities;
            Assert.True(model.Probabilities(x, CacheVariant.CacheOnly(theta)).allclose(pMem, rtol: 1e-4, atol: 1e-6));
            Assert.True(model.Probabilities(x, CacheVariant.Cache(theta, 0.3)).allclose((pNet * 0.7) + (pMem * 0.3), rtol: 1e-4, atol: 1e-6));
            Assert.True(model.Probabilities(x, CacheVariant.Baseline).allclose(pNet, rtol: 1e-5, atol: 1e-6));
        }
    }

    [Fact]
    public void ClassesWithoutKeysGetZeroMemoryProbabilityAndFiniteGradients()
    {
        using var scope = NewDisposeScope();
        using var net = TinyTapNet.Create(2);
        var (keys, y) = RandomCache(net, 6, [0, 1, 0, 1, 1, 0], ScalarType.Float64);
        using var model = new CacheModel(net, TinyTapNet.Normalization, Layers, keys, y);
        var x = Images(3, 8, ScalarType.Float64);
        var logMass = model.ClassLogMass(model.QueryKeys(x), 10);
        Assert.True(logMass[.., 2].isneginf().all().item<bool>());
        Assert.True(model.Probabilities(x, CacheVariant.CacheOnly(10))[.., 2].eq(0).all().item<bool>());
        var jacobian = InputJacobian.Compute(model.Classifier(CacheVariant.Cache(10, 0.5)), x);
        Assert.True(jacobian.isfinite().all().item<bool>());
    }

    public static TheoryData<string, double, double> Variants => new()
    {
        { "baseline", 1, 0 },
        { "cache", 4, 0.4 },
        { "cache-only", 4, 1 },
        { "cache-only-hot", 40, 1 },
    };

    [Theory]
    [MemberData(nameof(Variants))]
    public void GradientsToThePixelsMatchFiniteDifferences(string name, double theta, double lambda)
    {
        using var scope = NewDisposeScope();
        using var net = TinyTapNet.Create(3);
        var (keys, y) = RandomCache(net, 13, [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 1], ScalarType.Float64);
        using var model = new CacheModel(net, TinyTapNet.Normalization, Layers, keys, y, new CacheModelOptions { KeyBlockSize = 4 });
        var variant = new CacheVariant(name, theta, lambda);
        var classifier = model.Classifier(variant);
        var x = Images(2, 11, ScalarType.Float64);
        var jacobian = InputJacobian.Compute(classifier, x); // [2, 3, 32]

        const double h = 1e-6;
        var flat = x.flatten(1);
        double worst = 0;
        using var noGrad = no_grad();
        for (var d = 0; d < flat.shape[1]; d++)
        {
            var step = zeros_like(flat);
            step.select(1, d).fill_(h);
            var plus = classifier((flat + step).view(x.shape));
            var minus = classifier((flat - step).view(x.shape));
            var numeric = (plus - minus) / (2 * h); // [2, 3]
            var analytic = jacobian[.., .., d];
            var error = (numeric - analytic).abs().max().item<double>();
            var scale = Math.Max(1e-3, analytic.abs().max().item<double>());
            worst = Math.Max(worst, error / scale);
        }

        Assert.True(worst < 1e-6, $"{variant}: worst relative difference {worst:G3}");
        Assert.True(jacobian.abs().max().item<double>() > 1e-6, "the Jacobian should not vanish");
    }

    [Fact]
    public void InvalidInputsFailClearly()
    {
        using var scope = NewDisposeScope();
        using var net = TinyTapNet.Create(4);
        var (keys, y) = RandomCache(net, 4, [0, 1, 2, 0], ScalarType.Float64);
        Assert.Throws<ArgumentException>(() => new CacheModel(net, TinyTapNet.Normalization, ["nope"], keys, y));
        Assert.Throws<ArgumentException>(() => new CacheModel(net, TinyTapNet.Normalization, Layers, keys, tensor(new long[] { 0, 1, 3, 0 })));
        using var model = new CacheModel(net, TinyTapNet.Normalization, Layers, keys, y);
        Assert.Throws<ArgumentOutOfRangeException>(() => model.Probabilities(Images(1, 1, ScalarType.Float64), CacheVariant.Cache(0, 0.5)));
        Assert.Throws<ArgumentOutOfRangeException>(() => model.Probabilities(Images(1, 1, ScalarType.Float64), new CacheVariant("bad", 1, 1.5)));
        Assert.Throws<ArgumentException>(() => model.Probabilities(zeros(1, 3, 4, 4, dtype: ScalarType.Float64), CacheVariant.Baseline));
    }
}
