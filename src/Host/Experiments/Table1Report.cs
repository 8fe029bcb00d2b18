using System.Globalization;
using System.Text;
using ScalableCache.Host.Reports;

namespace ScalableCache.Host.Experiments;

/// <summary>Markdown, JSON and a θ plot for Table 1 rows.</summary>
internal static class Table1Report
{
    public static string Markdown(IReadOnlyList<Table1Row> rows, string title)
    {
        ArgumentNullException.ThrowIfNull(rows);
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture, $"# {title}").AppendLine();
        var first = rows.FirstOrDefault();
        if (first is { Dataset: "imagenet" })
        {
            sb.AppendLine(CultureInfo.InvariantCulture,
                $"Protocol (the paper's ImageNet protocol): the cache holds {first.CacheSize:N0} keys of training images " +
                $"({(first.PerClass is { } k ? $"a seeded class-balanced subset of {k} per class (seed {first.Seed}) of {first.TrainCount:N0}" : $"all {first.TrainCount:N0}")}); " +
                $"the validation set is split at random (seed {first.Seed}) into a half that chooses θ, λ and the layers ({first.ValidationCount:N0} images) " +
                $"and a half the errors are reported on ({first.ReportCount:N0} images). Images: shorter side to 256 (antialiased bilinear), centre " +
                $"crop 224, ImageNet mean/std, streamed from disk. Provider {first.Provider}.").AppendLine();
        }
        else if (first is not null)
        {
            sb.AppendLine(CultureInfo.InvariantCulture,
                $"Protocol: the public checkpoints were trained on all 50,000 training images, so θ, λ (and the layers, where searched) are " +
                $"chosen on a seeded random half of the test set (seed {first.Seed}, {first.ValidationCount} images) and errors are " +
                $"reported on the other half ({first.ReportCount} images). Cache: {first.CacheSize:N0} training keys " +
                $"({(first.Flip ? "with horizontal flips, C-10+" : "no flips")}), provider {first.Provider}.").AppendLine();
        }

        sb.Append(Reports.Markdown.Table(
            ["model", "layers", "key dim", "network", "cache", "cache-only", "gain (points)", "θ, λ", "cache-only θ"],
            rows.Select(r => (IReadOnlyList<string>)
            [
                r.Model, string.Join(", ", r.Layers), r.KeyDimension.ToString(CultureInfo.InvariantCulture),
                Reports.Markdown.Percent(r.BaselineError), Reports.Markdown.Percent(r.CacheError), Reports.Markdown.Percent(r.CacheOnlyError),
                ((r.BaselineError - r.CacheError) * 100).ToString("0.00", CultureInfo.InvariantCulture),
                $"{Reports.Markdown.Number(r.Theta)}, {Reports.Markdown.Number(r.Lambda)}", Reports.Markdown.Number(r.CacheOnlyTheta),
            ])));
        sb.AppendLine();
        foreach (var r in rows)
        {
            if (r.ThetaWidenings > 0)
            {
                sb.AppendLine(CultureInfo.InvariantCulture,
                    $"**θ grid widened ({r.Model}):** {r.ThetaWidenings} θ value(s) added beyond the configured grid while a chosen θ lay on its edge; " +
                    $"searched [{string.Join(", ", r.Thetas)}].").AppendLine();
            }

            if (r.ThetaAtGridEdge || r.CacheOnlyThetaAtGridEdge)
            {
                sb.AppendLine(CultureInfo.InvariantCulture,
                    $"**Warning ({r.Model}):** the chosen θ ({(r.ThetaAtGridEdge ? "cache model" : "cache-only model")}) lies at the edge of the grid " +
                    $"[{string.Join(", ", r.Thetas)}]: the grid is too small; widen it with --thetas.").AppendLine();
            }
        }

        sb.AppendLine("## Validation half").AppendLine();
        sb.Append(Reports.Markdown.Table(
            ["model", "network", "cache", "cache-only"],
            rows.Select(r => (IReadOnlyList<string>)
            [
                r.Model, Reports.Markdown.Percent(r.ValidationBaselineError), Reports.Markdown.Percent(r.ValidationCacheError),
                Reports.Markdown.Percent(r.ValidationCacheOnlyError),
            ])));
        sb.AppendLine();

        foreach (var r in rows.Where(r => r.LayerSearch is not null))
        {
            sb.AppendLine(CultureInfo.InvariantCulture, $"## Layer-combination search: {r.Model}").AppendLine();
            sb.AppendLine("Greedy forward selection on the validation half (best validation error over the θ × λ grid per set).").AppendLine();
            sb.Append(Reports.Markdown.Table(
                ["round", "layers", "validation error", "θ", "λ"],
                r.LayerSearch!.Path.Select((s, i) => (IReadOnlyList<string>)
                [
                    (i + 1).ToString(CultureInfo.InvariantCulture), string.Join(", ", s.Layers), Reports.Markdown.Percent(s.Error),
                    Reports.Markdown.Number(s.Theta), Reports.Markdown.Number(s.Lambda),
                ])));
            sb.AppendLine().AppendLine("All sets scored:").AppendLine();
            sb.Append(Reports.Markdown.Table(
                ["layers", "validation error"],
                r.LayerSearch.Evaluated.Select(s => (IReadOnlyList<string>)[string.Join(", ", s.Layers), Reports.Markdown.Percent(s.Error)])));
            sb.AppendLine();
        }

        var loading = rows.SelectMany(r => r.Throughput.Select(t => (r.Model, Part: t.Key, t.Value))).ToList();
        if (loading.Count > 0)
        {
            sb.AppendLine("## Image loading").AppendLine();
            sb.AppendLine("Batch i + 1 is read (from memory, or from disk decoded and resized on every core) while the network runs batch i. \"Loader beside the network\" is the " +
                "loader's rate while it shares the cores with the network; \"loader alone\" reads the first two training batches with nothing else running.").AppendLine();
            foreach (var r in rows.Where(r => r.LoaderAloneImagesPerSecond is not null))
            {
                sb.AppendLine(CultureInfo.InvariantCulture, $"Loader alone ({r.Model}): {r.LoaderAloneImagesPerSecond:0.0} images/s.").AppendLine();
            }

            sb.Append(Reports.Markdown.Table(
                ["model", "images", "count", "images/s with the network", "loader images/s beside it", "network waited (s)"],
                loading.Select(l => (IReadOnlyList<string>)
                [
                    l.Model, l.Part, l.Value.Images.ToString("N0", CultureInfo.InvariantCulture),
                    l.Value.ImagesPerSecond.ToString("0.0", CultureInfo.InvariantCulture), l.Value.LoaderImagesPerSecond.ToString("0.0", CultureInfo.InvariantCulture),
                    l.Value.WaitSeconds.ToString("0.0", CultureInfo.InvariantCulture),
                ])));
            sb.AppendLine();
        }

        sb.AppendLine("## Run times (s)").AppendLine();
        var keys = rows.SelectMany(r => r.Seconds.Keys).Distinct().ToList();
        sb.Append(Reports.Markdown.Table(
            ["model", .. keys],
            rows.Select(r => (IReadOnlyList<string>)[r.Model, .. keys.Select(k => r.Seconds.TryGetValue(k, out var v) ? v.ToString("0.0", CultureInfo.InvariantCulture) : "")])));
        if (rows.Any(r => r.Usage.Count > 0))
        {
            sb.AppendLine().AppendLine("## Cost per stage").AppendLine();
            sb.AppendLine("Wall time, CPU time of the process (user + system, all threads) and its peak resident memory during each stage.").AppendLine();
            sb.Append(Reports.Markdown.Table(
                ["model", "stage", "wall (s)", "CPU (s)", "peak resident (GB)"],
                rows.SelectMany(r => r.Usage.Select(u => (IReadOnlyList<string>)
                [
                    r.Model, u.Key, u.Value.Seconds.ToString("0.0", CultureInfo.InvariantCulture), u.Value.CpuSeconds.ToString("0.0", CultureInfo.InvariantCulture),
                    (u.Value.PeakResidentBytes / 1e9).ToString("0.00", CultureInfo.InvariantCulture),
                ]))));
        }

        return sb.ToString();
    }

    /// <summary>Validation error against θ for a few λ (the grid search surface), one PNG per row.</summary>
    public static void Plot(ReportFolder folder, Table1Row row)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(row);
        var series = new List<PlotSeries>();
        for (var l = 0; l < row.Lambdas.Count; l++)
        {
            series.Add(new PlotSeries(
                $"λ = {Reports.Markdown.Number(row.Lambdas[l])}",
                row.Thetas,
                row.Thetas.Select((_, t) => row.ValidationErrorGrid[t][l] * 100).ToList()));
        }

        series.Add(new PlotSeries("network", row.Thetas, row.Thetas.Select(_ => row.ValidationBaselineError * 100).ToList(), Markers: false));
        PlotWriter.Lines(folder.File($"{row.Model.Replace(':', '-')}-theta-lambda.png"), $"{row.Model}: validation error over the θ × λ grid",
            "θ", "validation error (%)", series);
    }
}
