using System.Globalization;
using System.Text;
using ScalableCache.Host.Reports;

namespace ScalableCache.Host.Experiments;

/// <summary>Markdown and plots of the attack (Tables 2–4) and Jacobian (Figure 4) analyses.</summary>
internal static class RobustnessReport
{
    private static string Rho(double value) => double.IsNaN(value) ? "—" : value.ToString("0.0000", CultureInfo.InvariantCulture);

    private static string Percent(double value) => double.IsNaN(value) ? "—" : Markdown.Percent(value);

    private static string Parameters(double theta, double lambda) =>
        double.IsNaN(theta) ? "—" : $"θ={Markdown.Number(theta)}, λ={Markdown.Number(lambda)}";

    public static IReadOnlyList<string> WhiteBoxHeader { get; } = ["model", "variant", "θ, λ", "clean acc.", "fooled", "failed", "mean ρ_adv", "median ρ_adv", "mean strength", "time"];

    public static IReadOnlyList<string> WhiteBoxCells(WhiteBoxRow r) =>
    [
        r.Model, r.Variant, Parameters(r.Theta, r.Lambda), Percent(r.CleanAccuracy), $"{r.Successes}/{r.Images}", r.Failures.ToString(CultureInfo.InvariantCulture),
        Rho(r.MeanRho), Rho(r.MedianRho), Markdown.Number(r.MeanStrength), $"{r.Seconds.ToString("0", CultureInfo.InvariantCulture)} s",
    ];

    public static IReadOnlyList<string> TransferHeader { get; } = ["target", "variant", "θ, λ", "images", "clean acc.", "adversarial acc."];

    public static IReadOnlyList<string> TransferCells(TransferRow r) =>
    [
        r.Target, r.Variant, Parameters(r.Theta, r.Lambda), r.Images.ToString(CultureInfo.InvariantCulture), Percent(r.CleanAccuracy), Percent(r.AdversarialAccuracy),
    ];

    /// <summary>One Markdown document for the attacks of one run: a section per attack, then the shared cache models.</summary>
    public static string AttackMarkdown(IReadOnlyList<AttackReport> reports)
    {
        ArgumentNullException.ThrowIfNull(reports);
        if (reports.Count == 0)
        {
            throw new ArgumentException("No attack reports.", nameof(reports));
        }

        var first = reports[0];
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture, $"# Adversarial robustness: {string.Join(", ", reports.Select(r => r.Attack))}, source {first.Source}").AppendLine();
        sb.AppendLine(CultureInfo.InvariantCulture,
            $"{first.Images} seeded random images (seed {first.Seed}) of the report half of the test set; pixels in [0, 1], perturbations clipped to [0, 1].").AppendLine();
        foreach (var report in reports)
        {
            var settings = string.Join(", ", report.AttackSettings.Select(kv => $"{kv.Key} = {Convert.ToString(kv.Value, CultureInfo.InvariantCulture)}"));
            sb.AppendLine(CultureInfo.InvariantCulture, $"## {report.Attack}").AppendLine();
            sb.AppendLine(CultureInfo.InvariantCulture, $"Attack settings: {settings}.").AppendLine();
            sb.AppendLine(CultureInfo.InvariantCulture, $"### Table 3 — white box ({report.Attack}): mean ρ_adv = ‖x_adv − x‖₂ / ‖x‖₂").AppendLine();
            sb.AppendLine("Each variant is attacked with its own gradients and its own clean prediction as the label to change; " +
                "images it cannot fool are counted under *failed* and left out of the means.").AppendLine();
            sb.Append(Markdown.Table(WhiteBoxHeader, report.WhiteBox.Select(WhiteBoxCells))).AppendLine();
            sb.AppendLine(CultureInfo.InvariantCulture, $"### Tables 2 and 4 ({report.Attack}) — the source network's adversarial images fed to each model").AppendLine();
            sb.AppendLine(CultureInfo.InvariantCulture,
                $"The {report.TransferSourceSuccesses} images the attack on the {report.Source} network succeeded on ({report.TransferSourceFailures} failures discarded), classified by the baseline, cache and cache-only models; accuracy against the true labels. The {report.Source} rows are the gray-box setting (Table 2), other targets the transfer setting (Table 4).").AppendLine();
            sb.Append(Markdown.Table(TransferHeader, report.Transfer.Select(TransferCells))).AppendLine();
            sb.AppendLine(CultureInfo.InvariantCulture, $"Run time: {string.Join(", ", report.Seconds.Select(kv => $"{kv.Key} {kv.Value:0} s"))}.").AppendLine();
        }

        AppendBackbones(sb, first.Backbones);
        return sb.ToString();
    }

    /// <summary>Per-image ρ_adv of the cache and cache-only models against the baseline's, where both attacks succeeded.</summary>
    public static IReadOnlyList<string> AttackPlots(ReportFolder folder, AttackReport report)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(report);
        var files = new List<string>();
        var baseline = report.WhiteBox.FirstOrDefault(r => r.Variant == "baseline");
        if (baseline is null)
        {
            return files;
        }

        foreach (var other in report.WhiteBox.Where(r => r.Variant != "baseline"))
        {
            var both = Enumerable.Range(0, baseline.Rho.Count).Where(i => !double.IsNaN(baseline.Rho[i]) && !double.IsNaN(other.Rho[i])).ToArray();
            var name = $"rho-{report.Attack}-{other.Variant}-vs-baseline.png";
            PlotWriter.ScatterWithDiagonal(folder.File(name), $"{report.Attack} on {report.Source}: ρ_adv per image", "ρ_adv baseline", $"ρ_adv {other.Variant}",
                [.. both.Select(i => baseline.Rho[i])], [.. both.Select(i => other.Rho[i])]);
            files.Add(name);
        }

        return files;
    }

    public static string JacobianMarkdown(JacobianReport report)
    {
        ArgumentNullException.ThrowIfNull(report);
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture, $"# Input Jacobians of {report.Model} (Figure 4)").AppendLine();
        sb.AppendLine(CultureInfo.InvariantCulture, $"{report.Images} seeded random images (seed {report.Seed}) of the report half of the test set. {report.Jacobian}.").AppendLine();
        var k = report.Variants.Max(v => v.MeanSingularValues.Count);
        sb.Append(Markdown.Table(
            ["variant", "θ, λ", "mean ‖J‖_F", "median ‖J‖_F", "mean ‖∇p(ŷ)‖", .. Enumerable.Range(1, k).Select(i => $"σ{i}"), "time"],
            report.Variants.Select(v => (IReadOnlyList<string>)
            [
                v.Variant, Parameters(v.Theta, v.Lambda), Markdown.Number(v.MeanFrobeniusNorm), Markdown.Number(v.MedianFrobeniusNorm),
                Markdown.Number(v.MeanPredictedClassGradientNorm), .. v.MeanSingularValues.Select(s => Markdown.Number(s)),
                $"{v.Seconds.ToString("0", CultureInfo.InvariantCulture)} s",
            ]))).AppendLine();
        sb.AppendLine(CultureInfo.InvariantCulture,
            $"‖J‖_F below the baseline's at the same image: cache {Markdown.Percent(report.CacheBelowBaselineFraction)} of images, cache-only {Markdown.Percent(report.CacheOnlyBelowBaselineFraction)}.").AppendLine();
        sb.AppendLine("Plots: `jacobian-cache-vs-baseline.png`, `jacobian-cache-only-vs-baseline.png` (per-image ‖J‖_F), `jacobian-singular-values.png`.").AppendLine();
        AppendBackbones(sb, [report.Backbone]);
        sb.AppendLine(CultureInfo.InvariantCulture, $"Run time: {string.Join(", ", report.Seconds.Select(kv => $"{kv.Key} {kv.Value:0} s"))}.");
        return sb.ToString();
    }

    public static IReadOnlyList<string> JacobianPlots(ReportFolder folder, JacobianReport report)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(report);
        var baseline = report.Variants[0];
        var files = new List<string>();
        foreach (var other in report.Variants.Skip(1))
        {
            var name = $"jacobian-{other.Variant}-vs-baseline.png";
            PlotWriter.ScatterWithDiagonal(folder.File(name), $"{report.Model}: ‖J(x)‖_F per test image", "baseline ‖J‖_F", $"{other.Variant} ‖J‖_F",
                baseline.FrobeniusNorms, other.FrobeniusNorms);
            files.Add(name);
        }

        PlotWriter.Lines(folder.File("jacobian-singular-values.png"), $"{report.Model}: mean singular values of J(x)", "rank k", "mean σ_k",
            [.. report.Variants.Select(v => new PlotSeries(v.Variant, [.. Enumerable.Range(1, v.MeanSingularValues.Count).Select(i => (double)i)], v.MeanSingularValues))]);
        files.Add("jacobian-singular-values.png");
        return files;
    }

    private static void AppendBackbones(StringBuilder sb, IReadOnlyList<RobustnessBackboneInfo> backbones)
    {
        sb.AppendLine("## Cache models").AppendLine();
        sb.Append(Markdown.Table(
            ["model", "layers", "keys", "θ, λ", "cache-only θ", "chosen on validation", "report error net / cache / cache-only", "setup time"],
            backbones.Select(b => (IReadOnlyList<string>)
            [
                b.Model, string.Join(", ", b.Layers), $"{b.CacheSize} × {b.KeyDimension}", Parameters(b.Theta, b.Lambda), Markdown.Number(b.CacheOnlyTheta),
                b.Searched ? "yes" : "given",
                b.ReportBaselineError is { } net ? $"{Markdown.Percent(net)} / {Markdown.Percent(b.ReportCacheError ?? double.NaN)} / {Markdown.Percent(b.ReportCacheOnlyError ?? double.NaN)}" : "—",
                $"{b.Seconds.GetValueOrDefault("prepare").ToString("0", CultureInfo.InvariantCulture)} s",
            ]))).AppendLine();
    }
}
