using ScalableCache.Core.Robustness;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>The full input Jacobian against its closed form for a softmax-linear classifier.</summary>
public sealed class JacobianTests
{
    [Fact]
    public void JacobianOfASoftmaxLinearModelIsDiagPMinusPPTransposeTimesW()
    {
        using var scope = NewDisposeScope();
        const int classes = 4;
        const int d = 2 * 3 * 3;
        var weights = tensor(KnownClassifiers.Uniform(classes * d, 21, -1, 1), [classes, d], dtype: ScalarType.Float64);
        var bias = tensor(KnownClassifiers.Uniform(classes, 22, -0.5, 0.5), dtype: ScalarType.Float64);
        var classifier = KnownClassifiers.Linear(weights, bias);
        var images = tensor(KnownClassifiers.Uniform(5 * d, 23, 0, 1), [5, 2, 3, 3], dtype: ScalarType.Float64);

        var jacobian = InputJacobian.Compute(classifier, images);
        Assert.Equal([5L, classes, d], jacobian.shape);
        var p = classifier(images).detach();
        for (var i = 0; i < 5; i++)
        {
            var pi = p[i];
            var expected = (diag(pi) - pi.outer(pi)).mm(weights);
            Assert.True(jacobian[i].allclose(expected, rtol: 1e-10, atol: 1e-12), $"image {i}");
        }

        // Statistics, in batches smaller than the input.
        var stats = InputJacobian.Analyze(classifier, images, batchSize: 2, TestContext.Current.CancellationToken);
        Assert.Equal(5, stats.Count);
        for (var i = 0; i < 5; i++)
        {
            var expected = (diag(p[i]) - p[i].outer(p[i])).mm(weights);
            Assert.Equal(expected.norm().item<double>(), stats[i].FrobeniusNorm, tolerance: 1e-10);
            Assert.Equal(classes, stats[i].SingularValues.Count);
            Assert.True(stats[i].SingularValues.Zip(stats[i].SingularValues.Skip(1), (a, b) => a >= b).All(x => x), "descending");
            Assert.Equal(stats[i].FrobeniusNorm * stats[i].FrobeniusNorm, stats[i].SingularValues.Sum(s => s * s), tolerance: 1e-10);

            // Rows of diag(p) − ppᵀ sum to zero, so J has rank ≤ C − 1: its smallest singular value vanishes.
            Assert.True(stats[i].SingularValues[^1] < 1e-10);
            var predicted = (int)p[i].argmax().item<long>();
            Assert.Equal(predicted, stats[i].PredictedClass);
            Assert.Equal(expected[predicted].norm().item<double>(), stats[i].PredictedClassGradientNorm, tolerance: 1e-10);
        }
    }
}
