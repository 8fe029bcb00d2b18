using ScalableCache.Core;
using ScalableCache.Core.Evaluation;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

public sealed class SimilarityLogMassTests
{
    // Reference: log Σ_{k: y_k = c} exp(θ s_k) in double precision, with the per-class max factored out.
    private static double Reference(float[] row, long[] labels, int c, double theta)
    {
        var vals = row.Where((_, k) => labels[k] == c).Select(v => theta * v).ToArray();
        if (vals.Length == 0)
        {
            return double.NegativeInfinity;
        }

        var m = vals.Max();
        return m + Math.Log(vals.Sum(v => Math.Exp(v - m)));
    }

    [Fact]
    public void MatchesDoublePrecisionReferenceForSeveralThetas()
    {
        using var scope = NewDisposeScope();
        var gen = manual_seed(7);
        var s = rand(5, 40, generator: gen) * 2 - 1;
        var y = randint(0, 4, 40, generator: gen); // class 4 of 5 stays empty
        double[] thetas = [10, 50, 200];
        var result = SimilarityLogMass.Compute(s, y, 5, thetas);
        Assert.Equal(new long[] { 3, 5, 5 }, result.shape);
        var sData = s.data<float>().ToArray();
        var yData = y.data<long>().ToArray();
        for (var t = 0; t < thetas.Length; t++)
        {
            for (var i = 0; i < 5; i++)
            {
                var row = sData.Skip(i * 40).Take(40).ToArray();
                for (var c = 0; c < 5; c++)
                {
                    var expected = Reference(row, yData, c, thetas[t]);
                    var actual = result[t, i, c].item<float>();
                    if (double.IsNegativeInfinity(expected))
                    {
                        Assert.True(float.IsNegativeInfinity(actual));
                    }
                    else
                    {
                        // float32 similarities and exp: relative tolerance 1e-5 on the log-mass, absolute 1e-3.
                        Assert.InRange(actual, expected - 1e-3 - 1e-5 * Math.Abs(expected), expected + 1e-3 + 1e-5 * Math.Abs(expected));
                    }
                }
            }
        }
    }

    [Fact]
    public void TheInPlacePathWithoutGradientsIsBitIdenticalToTheTrackedExpressions()
    {
        // The search and the grid scoring run without gradients, in place with one buffer for every θ; the tracked path keeps the
        // plain expressions (subtract the gathered class maxima, multiply, exponentiate). Same numbers, bit for bit, including a
        // class without keys and a width that is no multiple of a vector.
        using var scope = NewDisposeScope();
        var gen = manual_seed(11);
        var s = (rand(67, 5003, generator: gen) * 2) - 1;
        var y = randint(0, 9, 5003, generator: gen); // class 9 of 10 stays empty
        double[] thetas = [10, 20, 30, 40, 50, 60, 70, 80, 90];
        var original = s.clone();
        Tensor fast;
        using (no_grad())
        {
            fast = SimilarityLogMass.Compute(s, y, 10, thetas);
        }

        var tracked = SimilarityLogMass.Compute(s.detach().requires_grad_(true), y, 10, thetas).detach();
        Assert.Equal(tracked.shape, fast.shape);
        Assert.True(fast.eq(tracked).all().item<bool>(), $"{fast.ne(tracked).sum().item<long>()} of {fast.numel()} log-masses differ");
        Assert.True(s.eq(original).all().item<bool>(), "the input is left as it was");
    }

    [Fact]
    public void StaysFiniteAtTheta200WithSimilarityOne()
    {
        using var scope = NewDisposeScope();
        var s = tensor(new float[] { 1f, -1f, 0.99f, -0.5f }, 1, 4);
        var y = tensor(new long[] { 0, 1, 0, 1 });
        var result = SimilarityLogMass.Compute(s, y, 2, [200.0]);
        // float32 values near 200 are 1.5e-5 apart: allow two steps.
        Assert.Equal(200 + Math.Log(1 + Math.Exp(-2)), result[0, 0, 0].item<float>(), tolerance: 3e-5);
        Assert.Equal(-100 + Math.Log(1 + Math.Exp(-400)), result[0, 0, 1].item<float>(), tolerance: 3e-5);
        var p = LogMass.ToProbabilities(result[0]);
        Assert.Equal(1.0, p[0, 0].item<float>(), tolerance: 1e-6); // the other class has e⁻³⁰⁰
    }

    [Fact]
    public void GradientMatchesFiniteDifferences()
    {
        using var scope = NewDisposeScope();
        var gen = manual_seed(3);
        var s = (rand(2, 6, generator: gen, dtype: ScalarType.Float64) * 2 - 1).requires_grad_();
        var y = tensor(new long[] { 0, 1, 2, 0, 1, 2 });
        var loss = SimilarityLogMass.Compute(s.to_type(ScalarType.Float32), y, 3, [20.0]).softmax(-1)[0, 0, 1];
        loss.backward();
        var grad = s.grad!.data<double>().ToArray();
        var baseValue = s.detach().clone();
        for (var k = 0; k < 12; k++)
        {
            const double h = 1e-3;
            var plus = baseValue.clone();
            plus.view(-1)[k] += h;
            var minus = baseValue.clone();
            minus.view(-1)[k] -= h;
            var fp = SimilarityLogMass.Compute(plus.to_type(ScalarType.Float32), y, 3, [20.0]).softmax(-1)[0, 0, 1].item<float>();
            var fm = SimilarityLogMass.Compute(minus.to_type(ScalarType.Float32), y, 3, [20.0]).softmax(-1)[0, 0, 1].item<float>();
            // Central difference of float32 values: truncation O(h²) plus rounding ~ε/h, measured ≤ 2e-4 against gradients up to 4.4.
            Assert.Equal((fp - fm) / (2 * h), grad[k], tolerance: 1e-3);
        }
    }

    [Fact]
    public void RejectsLabelsOutsideTheClassRangeAndNonPositiveTheta()
    {
        using var scope = NewDisposeScope();
        var s = zeros(1, 2);
        Assert.Throws<ArgumentException>(() => SimilarityLogMass.Compute(s, tensor(new long[] { 0, 3 }), 3, [10.0]));
        Assert.Throws<ArgumentOutOfRangeException>(() => SimilarityLogMass.Compute(s, tensor(new long[] { 0, 1 }), 3, [0.0]));
    }
}
