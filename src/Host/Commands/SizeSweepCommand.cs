using System.CommandLine;
using System.Globalization;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using ScalableCache.Host.Cli;
using ScalableCache.Host.Experiments;
using ScalableCache.Host.Reports;
using Spectre.Console;

namespace ScalableCache.Host.Commands;

/// <summary><c>scache size-sweep</c>: Figure 3 — the cache model's gain against the cache size.</summary>
internal sealed class SizeSweepCommand : IScacheCommand
{
    public SizeSweepCommand(CommandRunner runner, IServiceProvider services)
    {
        var model = CommonOptions.Model();
        var weights = CommonOptions.Weights();
        var data = CommonOptions.Data();
        var output = CommonOptions.Out();
        var seed = CommonOptions.Seed();
        var layers = CommonOptions.Layers();
        var thetas = CommonOptions.Thetas();
        var lambdas = CommonOptions.Lambdas();
        var includeCacheOnly = CommonOptions.IncludeCacheOnly();
        var maxLayers = CommonOptions.MaxLayers();
        var fractions = new Option<string?>("--fractions")
        {
            Description = "Cache sizes as fractions of the training set (default 0,0.01,0.02,0.05,0.1,0.2,0.5,1).",
        }.NumberList(NumberRange.UnitInterval);
        var maxTrain = CommonOptions.MaxTrain();
        var maxTest = CommonOptions.MaxTest();
        var subsetSeeds = new Option<int>("--subset-seeds") { Description = "Random subsets per size (seeds 0…n−1).", DefaultValueFactory = _ => 2 }.AtLeast(1);
        Definition = new Command("size-sweep", "Figure 3: gain of the cache model over the network against cache size (class-balanced random subsets).")
        {
            model, weights, data, output, seed, layers, fractions, subsetSeeds, thetas, lambdas, includeCacheOnly, maxLayers, maxTrain, maxTest,
        };
        Definition.SetAction((parse, ct) => runner.RunAsync("size-sweep", async token =>
        {
            var session = services.GetRequiredService<ExperimentSession>();
            var grid = session.Grid(parse, thetas, lambdas, includeCacheOnly);
            var sizes = CommonOptions.Numbers(parse.GetValue(fractions), "--fractions") ?? SizeSweepExperiment.DefaultFractions;
            var folder = ReportFolder.Create(parse.GetValue(output), "size-sweep");
            var result = await services.GetRequiredService<SizeSweepExperiment>().RunAsync(
                parse.GetValue(model)!, parse.GetValue(weights), parse.GetValue(data), CommonOptions.Names(parse.GetValue(layers)), sizes,
                [.. Enumerable.Range(0, parse.GetValue(subsetSeeds))], parse.GetValue(seed), grid, parse.GetValue(maxLayers), token, parse.GetValue(maxTrain), parse.GetValue(maxTest)).ConfigureAwait(false);
            Write(folder, result);
            return new CommandOutcome(new { result.Model, result.Layers, result.Seed, result.Provider, result.Points, Summary = Summary(result), reportFolder = folder.Path },
                console =>
                {
                    var table = new Table().AddColumns("cache size", "mean gain (points)", "mean cache error");
                    foreach (var s in result.Summary)
                    {
                        table.AddPlainRow(Markdown.Percent(s.Fraction), Markdown.Number(s.MeanGain * 100, "0.00"), Markdown.Percent(s.MeanCacheError));
                    }

                    console.Write(table);
                    console.MarkupLineInterpolated($"Report: [blue]{folder.Path}[/]");
                });
        }, ct));
    }

    public Command Definition { get; }

    private static object[] Summary(SizeSweepResult result) =>
        [.. result.Summary.Select(s => new { fraction = s.Fraction, meanGain = s.MeanGain, meanCacheError = s.MeanCacheError })];

    private static void Write(ReportFolder folder, SizeSweepResult result)
    {
        var x = result.Summary.Select(s => s.Fraction * 100).ToList();
        PlotWriter.Lines(folder.File("size-sweep.png"), $"{result.Model}: gain of the cache model against cache size", "cache size (% of training set)",
            "error reduction (points)",
        [
            new PlotSeries("mean over subsets", x, result.Summary.Select(s => s.MeanGain * 100).ToList()),
            .. result.Points.GroupBy(p => p.SubsetSeed).Select(g => new PlotSeries($"subset seed {g.Key}", g.Select(p => p.Fraction * 100).ToList(),
                g.Select(p => p.Gain * 100).ToList())),
        ]);
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture, $"# Cache-size sweep (Figure 3): {result.Model}").AppendLine();
        sb.AppendLine(CultureInfo.InvariantCulture,
            $"Keys: [{string.Join(", ", result.Layers)}]. Class-balanced random subsets of the training set; θ and λ searched again for every cache " +
            $"on the validation half; errors on the report half (seed {result.Seed}). Provider: {result.Provider}.").AppendLine();
        sb.Append(Markdown.Table(
            ["cache size", "keys", "subset seed", "network", "cache", "gain (points)", "θ, λ"],
            result.Points.Select(p => (IReadOnlyList<string>)
            [
                Markdown.Percent(p.Fraction), p.CacheSize.ToString(CultureInfo.InvariantCulture), p.SubsetSeed.ToString(CultureInfo.InvariantCulture),
                Markdown.Percent(p.BaselineError), Markdown.Percent(p.CacheError), Markdown.Number(p.Gain * 100, "0.00"),
                p.CacheSize == 0 ? "–" : $"{Markdown.Number(p.Theta)}, {Markdown.Number(p.Lambda)}",
            ])));
        sb.AppendLine().AppendLine("![size sweep](size-sweep.png)");
        sb.AppendLine().AppendLine(CultureInfo.InvariantCulture, $"Total time: {Markdown.Number(result.Seconds, "0")} s.");
        folder.WriteText("report.md", sb.ToString());
        folder.WriteJson("result.json", new { result.Model, result.Layers, result.Seed, result.Provider, result.Points, Summary = Summary(result), result.LayerSearch, result.Seconds });
    }
}
