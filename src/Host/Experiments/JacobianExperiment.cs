using System.Diagnostics;
using ScalableCache.Core.Robustness;

namespace ScalableCache.Host.Experiments;

/// <summary>Per-variant summary of the input Jacobians (Figure 4).</summary>
/// <param name="Variant">baseline, cache or cache-only.</param>
/// <param name="Theta">θ (NaN for the baseline).</param>
/// <param name="Lambda">λ.</param>
/// <param name="MeanFrobeniusNorm">Mean over images of ‖J(x)‖_F.</param>
/// <param name="MedianFrobeniusNorm">Median over images of ‖J(x)‖_F.</param>
/// <param name="MeanSingularValues">Mean over images of the k-th largest singular value, k = 1…min(10, C).</param>
/// <param name="MeanPredictedClassGradientNorm">Mean over images of ‖∂p(ŷ|x)/∂x‖₂ for the variant's predicted class ŷ.</param>
/// <param name="FrobeniusNorms">Per image ‖J(x)‖_F.</param>
/// <param name="Seconds">Wall time.</param>
internal sealed record JacobianVariantSummary(
    string Variant, double Theta, double Lambda, double MeanFrobeniusNorm, double MedianFrobeniusNorm, IReadOnlyList<double> MeanSingularValues,
    double MeanPredictedClassGradientNorm, IReadOnlyList<double> FrobeniusNorms, double Seconds);

/// <summary>The Figure 4 analysis for one model.</summary>
internal sealed record JacobianReport(
    string Model,
    int Seed,
    int Images,
    IReadOnlyList<int> ImageIndices,
    string Jacobian,
    IReadOnlyList<JacobianVariantSummary> Variants,
    double CacheBelowBaselineFraction,
    double CacheOnlyBelowBaselineFraction,
    RobustnessBackboneInfo Backbone,
    IReadOnlyDictionary<string, double> Seconds);

/// <summary>
/// Figure 4 of the paper: the input Jacobian <c>J(x) = ∂p(·|x)/∂x</c> (x in the [0, 1] pixel domain) of the baseline, cache and
/// cache-only models at seeded test points — its Frobenius norm and singular values.
/// </summary>
internal sealed class JacobianExperiment(RobustnessExperiment robustness)
{
    /// <summary>Largest number of singular values reported.</summary>
    public const int TopSingularValues = 10;

    public async Task<JacobianReport> RunAsync(RobustnessRequest backbone, int images, int batchSize, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(backbone);
        var total = Stopwatch.StartNew();
        var seconds = new Dictionary<string, double>();
        using var model = await robustness.PrepareAsync(backbone, cancellationToken).ConfigureAwait(false);
        seconds["prepare"] = total.Elapsed.TotalSeconds;
        var (indices, pixels, labels) = RobustnessExperiment.Sample(model, images, backbone.Seed);
        using var p = pixels;
        using var l = labels;
        var summaries = new List<JacobianVariantSummary>();
        foreach (var variant in model.Variants)
        {
            var watch = Stopwatch.StartNew();
            var stats = InputJacobian.Analyze(model.Cache.Classifier(variant), p, batchSize, cancellationToken);
            var norms = stats.Select(s => s.FrobeniusNorm).ToArray();
            var k = stats.Count == 0 ? 0 : Math.Min(TopSingularValues, stats.Min(s => s.SingularValues.Count));
            var meanSingular = Enumerable.Range(0, k).Select(i => stats.Average(s => s.SingularValues[i])).ToArray();
            var sorted = norms.Order().ToArray();
            summaries.Add(new JacobianVariantSummary(
                variant.Name, variant.UsesMemory ? variant.Theta : double.NaN, variant.Lambda, norms.Average(), sorted[sorted.Length / 2], meanSingular,
                stats.Average(s => s.PredictedClassGradientNorm), norms, watch.Elapsed.TotalSeconds));
            robustness.Session.Progress.Status(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"{model.Name} {variant}: mean ‖J‖_F {norms.Average():G4} over {norms.Length} images ({watch.Elapsed.TotalSeconds:0.0} s)"));
        }

        seconds["total"] = total.Elapsed.TotalSeconds;
        double Below(int variant) =>
            summaries[variant].FrobeniusNorms.Where((n, i) => n < summaries[0].FrobeniusNorms[i]).Count() / (double)Math.Max(1, indices.Length);
        return new JacobianReport(
            model.Name, backbone.Seed, indices.Length, indices,
            "J = ∂p(·|x)/∂x, the full C × D Jacobian of the probability vector (C backward passes) w.r.t. pixels in [0, 1]; " +
            "the single-class gradient is that of the variant's predicted class",
            summaries, Below(1), Below(2), model.Info, seconds);
    }
}
