using ScalableCache.Core.Robustness;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>Each attack on hand-built classifiers whose minimal adversarial examples are known in closed form.</summary>
public sealed class AttackTests
{
    private const int D = 2 * 4 * 4;

    /// <summary>
    /// Two classes on 2×4×4 images: <c>logit₀ − logit₁ = w·(x − 0.5)</c>. Image i is <c>0.5 + 0.1 tᵢ sign(w)</c>, so its margin is
    /// <c>0.1 tᵢ ‖w‖₁</c> and a step ε along <c>−sign(w)</c> (the gradient-sign direction) flips it exactly when ε &gt; ε*ᵢ = 0.1 tᵢ.
    /// </summary>
    private static (Func<Tensor, Tensor> Classifier, Tensor Images, Tensor Labels, Tensor Direction) LinearCase(params double[] t)
    {
        var w = KnownClassifiers.SignedWeights(D, 5);
        var weights = tensor(w.Concat(new double[D]).ToArray(), [2, D], dtype: ScalarType.Float64);
        var bias = tensor(new[] { -0.5 * w.Sum(), 0 }, dtype: ScalarType.Float64);
        var sign = tensor(w.Select(Math.Sign).Select(s => (double)s).ToArray(), dtype: ScalarType.Float64);
        var images = stack(t.Select(ti => (0.5 + (0.1 * ti * sign)).view(2, 4, 4)).ToArray());
        return (KnownClassifiers.Linear(weights, bias), images, zeros(t.Length, dtype: ScalarType.Int64), -sign.view(2, 4, 4));
    }

    private static double FirstAbove(IEnumerable<double> grid, double threshold) => grid.First(g => g > threshold);

    private static IEnumerable<double> Linspace(double max, int count) => Enumerable.Range(1, count).Select(i => i == count ? max : max * i / count);

    [Fact]
    public void FgsmFindsTheAnalyticMinimalEpsilonOnALinearModel()
    {
        using var scope = NewDisposeScope();
        double[] critical = [0.1234, 0.0031, 0.0452];
        var (classifier, images, labels, direction) = LinearCase([.. critical.Select(c => c / 0.1)]);
        using var result = new FgsmAttack().Run(classifier, images, labels, TestContext.Current.CancellationToken);

        Assert.All(result.Success, Assert.True);
        for (var i = 0; i < critical.Length; i++)
        {
            // The default grid is linspace(0, 0.5, 1001)[1:]; a first success among its first 20 values is refined on linspace(0, ε, 21)[1:].
            var coarse = Linspace(0.5, 1000).ToList();
            var expected = FirstAbove(coarse, critical[i]);
            if (coarse.IndexOf(expected) < FgsmAttack.RefineBelow)
            {
                expected = FirstAbove(Linspace(expected, 20), critical[i]);
            }

            Assert.Equal(expected, result.Strength[i], tolerance: 1e-12);
            var expectedImage = images[i] + (expected * direction);
            Assert.True(result.Adversarial[i].allclose(expectedImage, rtol: 0, atol: 1e-12));
            var expectedRho = expected * Math.Sqrt(D) / images[i].norm().item<double>();
            Assert.Equal(expectedRho, result.Rho[i], tolerance: 1e-10);
        }

        Assert.Equal(0.0035, FirstAbove(Linspace(0.5, 1000), critical[1]), tolerance: 1e-12); // image 1 goes through the refinement
        Assert.True(result.Strength[1] < 0.0035 - 1e-9);
        Assert.Equal(result.Rho.Average(), result.MeanRho, tolerance: 1e-12);
        Assert.Equal([1L, 1L, 1L], classifier(result.Adversarial).argmax(1).data<long>().ToArray());
    }

    [Fact]
    public void IterativeFgsmStopsAtTheFirstStepOfTheFirstSufficientEpsilon()
    {
        using var scope = NewDisposeScope();
        double[] critical = [0.1234, 0.0031];
        var (classifier, images, labels, direction) = LinearCase([.. critical.Select(c => c / 0.1)]);
        using var result = new IterativeFgsmAttack().Run(classifier, images, labels, TestContext.Current.CancellationToken);

        Assert.All(result.Success, Assert.True);
        for (var i = 0; i < critical.Length; i++)
        {
            // Per-step ε over linspace(0, 0.1, 101)[1:], 10 steps each: the first (ε, t) with t·ε > ε*.
            var (epsilon, steps) = Linspace(0.1, 100)
                .Select(e => (e, Enumerable.Range(1, 10).FirstOrDefault(t => t * e > critical[i])))
                .First(p => p.Item2 > 0);
            Assert.Equal(epsilon, result.Strength[i], tolerance: 1e-12);
            Assert.True(result.Adversarial[i].allclose(images[i] + (steps * epsilon * direction), rtol: 0, atol: 1e-12), $"image {i}: ε {epsilon}, {steps} steps");
        }

        Assert.Equal(0.013, result.Strength[0], tolerance: 1e-12);
        Assert.Equal(0.001, result.Strength[1], tolerance: 1e-12);
    }

    /// <summary>Class 1 exactly when the two channels at (row 2, column 3) sum above 1.5 (and pixel (0, 0) of channel 0 is below 0.9).</summary>
    private static Tensor OnePixelModel(Tensor x)
    {
        var key = x[.., 0, 2, 3] + x[.., 1, 2, 3] - 1.5 - (100 * (x[.., 0, 0, 0] - 0.9).relu());
        return nn.functional.softmax(stack([zeros_like(key), 10 * key], 1), 1);
    }

    [Fact]
    public void SinglePixelFindsTheOnePixelThatMattersAndCountsTheImageItCannotFool()
    {
        using var scope = NewDisposeScope();
        var fooled = full(2, 4, 4, 0.5, dtype: ScalarType.Float64);
        var immune = full(2, 4, 4, 0.5, dtype: ScalarType.Float64);
        immune[0, 0, 0] = tensor(1.0, dtype: ScalarType.Float64);
        var images = stack([fooled, immune]);
        var labels = zeros(2, dtype: ScalarType.Int64);
        var attack = new SinglePixelAttack(new SinglePixelOptions { Seed = 3 });
        using var result = attack.Run(OnePixelModel, images, labels, TestContext.Current.CancellationToken);

        // Pixel 2·4 + 3 = 11 is found where the seeded order puts it; the low value (0) is tried first and fails.
        var position = attack.PixelOrder(0, 4, 4).ToList().IndexOf(11);
        Assert.True(position >= 0);
        Assert.Equal([true, false], result.Success);
        Assert.Equal(position + 1, result.Strength[0]);
        var expected = fooled.clone();
        expected[.., 2, 3] = tensor(1.0, dtype: ScalarType.Float64);
        Assert.True(result.Adversarial[0].eq(expected).all().item<bool>());
        Assert.Equal(0.25, result.Rho[0], tolerance: 1e-12); // √(2 · 0.5²) / √(32 · 0.5²)

        // The immune image is counted, kept unchanged and left out of the mean.
        Assert.Equal(1, result.SuccessCount);
        Assert.Equal(1, result.FailureCount);
        Assert.True(double.IsNaN(result.Rho[1]));
        Assert.True(double.IsNaN(result.Strength[1]));
        Assert.True(result.Adversarial[1].eq(immune).all().item<bool>());
        Assert.Equal(0.25, result.MeanRho, tolerance: 1e-12);
    }

    [Fact]
    public void SinglePixelCanUseTheImagesOwnRange()
    {
        using var scope = NewDisposeScope();
        var image = full(2, 4, 4, 0.5, dtype: ScalarType.Float64);
        image[1, 0, 1] = tensor(0.8, dtype: ScalarType.Float64);
        image[0, 3, 3] = tensor(0.2, dtype: ScalarType.Float64);
        var attack = new SinglePixelAttack(new SinglePixelOptions { Seed = 1, Values = PixelExtremes.ImageRange });
        using var result = attack.Run(OnePixelModel, image.unsqueeze(0), zeros(1, dtype: ScalarType.Int64), TestContext.Current.CancellationToken);
        Assert.True(result.Success[0]);
        Assert.Equal(0.8, result.Adversarial[0, 0, 2, 3].item<double>(), tolerance: 1e-12);
        Assert.Equal(0.8, result.Adversarial[0, 1, 2, 3].item<double>(), tolerance: 1e-12);
    }

    /// <summary>scipy.ndimage gaussian_filter semantics, written out naively: separable, reflect borders, radius ⌊4σ + 0.5⌋.</summary>
    private static double[,,] NaiveBlur(double[,,] image, double sigma)
    {
        int c = image.GetLength(0), h = image.GetLength(1), w = image.GetLength(2);
        int Reflect(int p, int n)
        {
            while (p < 0 || p >= n)
            {
                p = p < 0 ? -p - 1 : (2 * n) - p - 1;
            }

            return p;
        }

        var radius = (int)((4 * sigma) + 0.5);
        var kernel = Enumerable.Range(-radius, (2 * radius) + 1).Select(t => sigma == 0 ? (t == 0 ? 1.0 : 0) : Math.Exp(-0.5 * t * t / (sigma * sigma))).ToArray();
        var sum = kernel.Sum();
        var rows = new double[c, h, w];
        var result = new double[c, h, w];
        for (var ch = 0; ch < c; ch++)
        {
            for (var i = 0; i < h; i++)
            {
                for (var j = 0; j < w; j++)
                {
                    for (var t = -radius; t <= radius; t++)
                    {
                        rows[ch, i, j] += kernel[t + radius] / sum * image[ch, Reflect(i + t, h), j];
                    }
                }
            }

            for (var i = 0; i < h; i++)
            {
                for (var j = 0; j < w; j++)
                {
                    for (var t = -radius; t <= radius; t++)
                    {
                        result[ch, i, j] += kernel[t + radius] / sum * rows[ch, i, Reflect(j + t, w)];
                    }
                }
            }
        }

        return result;
    }

    private static double[,,] ToArray(Tensor image)
    {
        var (c, h, w) = ((int)image.shape[0], (int)image.shape[1], (int)image.shape[2]);
        var data = image.to_type(ScalarType.Float64).contiguous().data<double>().ToArray();
        var result = new double[c, h, w];
        Buffer.BlockCopy(data, 0, result, 0, data.Length * sizeof(double));
        return result;
    }

    [Fact]
    public void GaussianBlurMatchesScipyAndTheNaiveReference()
    {
        using var scope = NewDisposeScope();

        // scipy.ndimage.gaussian_filter1d([1, 2, 3, 4, 5], σ) from scipy's documentation, for σ = 1 and σ = 4.
        var row = tensor(new[] { 1.0, 2, 3, 4, 5 }, [1, 1, 1, 5], dtype: ScalarType.Float64);
        // The documented values have 8 decimals, so they are within 5e-9 of the exact ones.
        var blurred = GaussianBlur.Blur(row.expand(2, -1, -1, -1), [1.0, 4.0]);
        static bool Close(double documented, double actual) => Math.Abs(documented - actual) <= 5e-9 + 1e-12;
        Assert.Equal([1.42704095, 2.06782203, 3, 3.93217797, 4.57295905], blurred[0].flatten().data<double>().ToArray(), Close);
        Assert.Equal([2.91948343, 2.95023502, 3, 3.04976498, 3.08051657], blurred[1].flatten().data<double>().ToArray(), Close);

        // Random 2×5×7 images, σ from 0 to a radius far beyond the image (several reflections), all in one batch.
        double[] sigmas = [0, 0.3, 1, 2.5, 9];
        var images = tensor(KnownClassifiers.Uniform(sigmas.Length * 2 * 5 * 7, 17, 0, 1), [sigmas.Length, 2, 5, 7], dtype: ScalarType.Float64);
        var fast = GaussianBlur.Blur(images, sigmas);
        for (var i = 0; i < sigmas.Length; i++)
        {
            var expected = NaiveBlur(ToArray(images[i]), sigmas[i]);
            var actual = ToArray(fast[i]);
            var worst = expected.Cast<double>().Zip(actual.Cast<double>(), (a, b) => Math.Abs(a - b)).Max();
            Assert.True(worst < 1e-12, $"σ = {sigmas[i]}: max difference {worst:G3}");
        }
    }

    [Fact]
    public void BlurFlipsAModelThatKeysOnHighFrequenciesAtTheFirstSufficientSigma()
    {
        using var scope = NewDisposeScope();

        // A checkerboard: class 0 while its high-frequency energy h = mean((x − 0.5) · checker) stays above 0.2 (clean: 0.4).
        var checker = tensor(Enumerable.Range(0, 2 * 8 * 8).Select(k => ((k / 8) + (k % 8)) % 2 == 0 ? 1.0 : -1.0).ToArray(), [1, 2, 8, 8], dtype: ScalarType.Float64);
        Tensor Classifier(Tensor x)
        {
            var energy = ((x - 0.5) * checker).flatten(1).mean([1]);
            return nn.functional.softmax(stack([20 * (energy - 0.2), zeros_like(energy)], 1), 1);
        }

        var image = 0.5 + (0.4 * checker);
        var options = new GaussianBlurOptions { Steps = 200 };
        using var result = new GaussianBlurAttack(options).Run(Classifier, image, zeros(1, dtype: ScalarType.Int64), TestContext.Current.CancellationToken);

        var reference = ToArray(image[0]);
        var checkerArray = ToArray(checker[0]);
        double Energy(double[,,] x) => x.Cast<double>().Zip(checkerArray.Cast<double>(), (v, c) => (v - 0.5) * c).Average();
        var expected = Linspace(1, 200).Select(e => e * 8).First(s => Energy(NaiveBlur(reference, s)) < 0.2);
        Assert.True(result.Success[0]);
        Assert.Equal(expected, result.Strength[0], tolerance: 1e-12);
        Assert.True(expected > 0.1 && expected < 3, $"σ = {expected}");
        Assert.Equal(1L, Classifier(result.Adversarial).argmax(1).item<long>());
    }

    [Fact]
    public void ImagesNoAttackCanFoolAreCountedAndNotAveraged()
    {
        using var scope = NewDisposeScope();

        // Depends on the input (so it has a gradient) but never changes its mind.
        static Tensor Stubborn(Tensor x)
        {
            var mean = x.flatten(1).mean([1]);
            return nn.functional.softmax(stack([10 + (0.01 * mean), zeros_like(mean)], 1), 1);
        }

        var images = tensor(KnownClassifiers.Uniform(3 * D, 4, 0, 1), [3, 2, 4, 4], dtype: ScalarType.Float64);
        var labels = zeros(3, dtype: ScalarType.Int64);
        IAdversarialAttack[] attacks =
        [
            new FgsmAttack(new FgsmOptions { Epsilons = 50 }),
            new IterativeFgsmAttack(new IterativeFgsmOptions { Epsilons = 5, Steps = 3 }),
            new SinglePixelAttack(new SinglePixelOptions { MaxPixels = 10 }),
            new GaussianBlurAttack(new GaussianBlurOptions { Steps = 20 }),
        ];
        foreach (var attack in attacks)
        {
            using var result = attack.Run(Stubborn, images, labels, TestContext.Current.CancellationToken);
            Assert.Equal(0, result.SuccessCount);
            Assert.Equal(3, result.FailureCount);
            Assert.True(double.IsNaN(result.MeanRho), attack.Name);
            Assert.All(result.Rho, r => Assert.True(double.IsNaN(r)));
            Assert.True(result.Adversarial.eq(images).all().item<bool>(), attack.Name);
        }
    }

    [Fact]
    public void RhoIsTheRelativeL2Distance()
    {
        using var scope = NewDisposeScope();
        var x = tensor(new[] { 3.0, 4, 0, 0, 0, 0, 0 }, [1, 7]);
        var adversarial = tensor(new[] { 3.0, 4, 1, 0, 0, 0, 0 }, [1, 7]);
        Assert.Equal(0.2, AdversarialDistance.Rho(x, adversarial)[0], tolerance: 1e-12);
        Assert.Equal([0.0], AdversarialDistance.Rho(zeros(1, 3), zeros(1, 3)));

        using var result = new AttackResult("test", zeros(3, 2), [true, false, true], [0.1, double.NaN, 0.3], [1, double.NaN, 2]);
        Assert.Equal(0.2, result.MeanRho, tolerance: 1e-12);
        Assert.Equal([0, 2], result.SuccessfulIndices);
    }

    [Fact]
    public void AttacksWorkOnTheCacheModel()
    {
        using var scope = NewDisposeScope();
        using var net = TinyTapNet.Create(6);
        var keys = nn.functional.normalize(tensor(KnownClassifiers.Uniform(9 * 96, 3, -1, 1), [9, 96], dtype: ScalarType.Float64), 2, 1);
        using var model = new CacheModel(net, TinyTapNet.Normalization, ["conv", "act"], keys, tensor(new long[] { 0, 1, 2, 0, 1, 2, 0, 1, 2 }));
        var images = tensor(KnownClassifiers.Uniform(4 * D, 9, 0.1, 0.9), [4, 2, 4, 4], dtype: ScalarType.Float64);
        foreach (var variant in new[] { CacheVariant.Baseline, CacheVariant.Cache(20, 0.5), CacheVariant.CacheOnly(20) })
        {
            var classifier = model.Classifier(variant);
            var clean = classifier(images).argmax(1);
            using var result = new FgsmAttack(new FgsmOptions { Epsilons = 200 }).Run(classifier, images, clean, TestContext.Current.CancellationToken);
            var after = classifier(result.Adversarial).argmax(1);
            for (var i = 0; i < 4; i++)
            {
                Assert.Equal(result.Success[i], after[i].item<long>() != clean[i].item<long>());
            }

            Assert.True(result.SuccessCount > 0, variant.ToString());
        }
    }
}
