using ScottPlot;

namespace ScalableCache.Host.Reports;

/// <summary>One line of a plot: a legend label and its points.</summary>
internal sealed record PlotSeries(string Label, IReadOnlyList<double> X, IReadOnlyList<double> Y, bool Markers = true);

/// <summary>Writes PNG plots for reports (ScottPlot).</summary>
internal static class PlotWriter
{
    private static readonly Lazy<bool> FontsReady = new(RegisterFont);

    // SkiaSharp's dependency-free native build has no fontconfig, so text renders only with a font registered by file.
    private static bool RegisterFont()
    {
        string[] folders = ["/usr/share/fonts", "/usr/local/share/fonts", "/Library/Fonts", "/System/Library/Fonts", @"C:\Windows\Fonts"];
        string[] preferred = ["DejaVuSans.ttf", "LiberationSans-Regular.ttf", "NotoSans-Regular.ttf", "Arial.ttf", "arial.ttf"];
        foreach (var folder in folders.Where(Directory.Exists))
        {
            foreach (var name in preferred)
            {
                var file = Directory.EnumerateFiles(folder, name, SearchOption.AllDirectories).FirstOrDefault();
                if (file is not null)
                {
                    // Titles and axis labels are bold: register the bold face of the same family where there is one.
                    var family = Path.GetFileNameWithoutExtension(name);
                    Fonts.AddFontFile(family, file);
                    var bold = Directory.EnumerateFiles(Path.GetDirectoryName(file)!, family.Replace("-Regular", string.Empty, StringComparison.Ordinal) + "-Bold.ttf").FirstOrDefault()
                        ?? Directory.EnumerateFiles(Path.GetDirectoryName(file)!, family + "-Bold.ttf").FirstOrDefault();
                    Fonts.AddFontFile(family, bold ?? file, bold: true);
                    Fonts.Default = family;
                    return true;
                }
            }
        }

        return false;
    }

    /// <summary>Whether a font file was found for plot text (plots are still written without one, with no text).</summary>
    public static bool HasFont => FontsReady.Value;

    /// <summary>A line plot of <paramref name="series"/>, saved as a PNG at <paramref name="path"/>.</summary>
    public static void Lines(string path, string title, string xLabel, string yLabel, IReadOnlyList<PlotSeries> series,
        bool logX = false, IReadOnlyList<(double Position, string Label)>? xTicks = null)
    {
        ArgumentNullException.ThrowIfNull(series);
        _ = FontsReady.Value;
        var plot = new Plot();
        foreach (var s in series)
        {
            var xs = s.X.Select(x => logX ? Math.Log10(x) : x).ToArray();
            var scatter = plot.Add.Scatter(xs, s.Y.ToArray());
            scatter.LegendText = s.Label;
            scatter.MarkerSize = s.Markers ? 6 : 0;
        }

        if (logX)
        {
            var ticks = series.SelectMany(s => s.X).Distinct().Order().ToArray();
            plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
                ticks.Select(Math.Log10).ToArray(), ticks.Select(t => t.ToString("G4", System.Globalization.CultureInfo.InvariantCulture)).ToArray());
        }
        else if (xTicks is not null)
        {
            plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(
                xTicks.Select(t => t.Position).ToArray(), xTicks.Select(t => t.Label).ToArray());
            plot.Axes.Bottom.TickLabelStyle.Rotation = 45;
            plot.Axes.Bottom.TickLabelStyle.Alignment = Alignment.MiddleLeft;
        }

        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        if (series.Count > 1)
        {
            plot.ShowLegend(Alignment.UpperRight);
        }

        SaveAtomically(plot, path, 900, 560);
    }

    /// <summary>A scatter of (x, y) points with the diagonal y = x, as in the paper's Figure 4.</summary>
    public static void ScatterWithDiagonal(string path, string title, string xLabel, string yLabel, IReadOnlyList<double> x, IReadOnlyList<double> y)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(y);
        _ = FontsReady.Value;
        var plot = new Plot();
        var points = plot.Add.ScatterPoints(x.ToArray(), y.ToArray());
        points.MarkerSize = 4;
        var max = Math.Max(x.DefaultIfEmpty(1).Max(), y.DefaultIfEmpty(1).Max());
        var diagonal = plot.Add.Line(0, 0, max, max);
        diagonal.LinePattern = LinePattern.Dashed;
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        SaveAtomically(plot, path, 700, 700);
    }

    private static void SaveAtomically(Plot plot, string path, int width, int height)
    {
        var directory = Path.GetDirectoryName(Path.GetFullPath(path))!;
        Directory.CreateDirectory(directory);
        var temp = Path.Combine(directory, "." + Path.GetFileName(path) + ".tmp.png");
        plot.SavePng(temp, width, height);
        File.Move(temp, path, overwrite: true);
    }
}
