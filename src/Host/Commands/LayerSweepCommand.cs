using System.CommandLine;
using System.Globalization;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using ScalableCache.Host.Cli;
using ScalableCache.Host.Experiments;
using ScalableCache.Host.Reports;
using Spectre.Console;

namespace ScalableCache.Host.Commands;

/// <summary><c>scache layer-sweep</c>: Figure 2 — the cache keyed on each single layer, error against normalised depth.</summary>
internal sealed class LayerSweepCommand : IScacheCommand
{
    public LayerSweepCommand(CommandRunner runner, IServiceProvider services)
    {
        var model = CommonOptions.Model();
        var weights = CommonOptions.Weights();
        var data = CommonOptions.Data();
        var output = CommonOptions.Out();
        var seed = CommonOptions.Seed();
        var thetas = CommonOptions.Thetas();
        var lambdas = CommonOptions.Lambdas();
        var includeCacheOnly = CommonOptions.IncludeCacheOnly();
        var theta = new Option<double>("--theta") { Description = "θ of the fixed setting (paper: 50).", DefaultValueFactory = _ => 50 }.Within(NumberRange.Positive);
        var lambda = new Option<double>("--lambda") { Description = "λ of the fixed setting (paper: 0.5).", DefaultValueFactory = _ => 0.5 }.Within(NumberRange.UnitInterval);
        var maxDim = new Option<int>("--max-dim")
        {
            Description = "Layers wider than this are projected to this width (seeded Gaussian JL projection) to bound memory and time.",
            DefaultValueFactory = _ => 2048,
        }.AtLeast(1);
        Definition = new Command("layer-sweep", "Figure 2: error of the cache keyed on each single layer (stem, every block, pooled features, logits) against depth.")
        {
            model, weights, data, output, seed, theta, lambda, maxDim, thetas, lambdas, includeCacheOnly,
        };
        Definition.SetAction((parse, ct) => runner.RunAsync("layer-sweep", async token =>
        {
            var session = services.GetRequiredService<ExperimentSession>();
            var grid = session.Grid(parse, thetas, lambdas, includeCacheOnly);
            var folder = ReportFolder.Create(parse.GetValue(output), "layer-sweep");
            var result = await services.GetRequiredService<LayerSweepExperiment>().RunAsync(
                parse.GetValue(model)!, parse.GetValue(weights), parse.GetValue(data), parse.GetValue(seed), grid, parse.GetValue(theta),
                parse.GetValue(lambda), parse.GetValue(maxDim), token).ConfigureAwait(false);
            Write(folder, result);
            return new CommandOutcome(new { result, reportFolder = folder.Path }, console =>
            {
                var table = new Table().AddColumns("layer", "depth", "dim", $"θ={result.FixedTheta}, λ={result.FixedLambda}", "searched", "θ, λ", "cache-only");
                foreach (var p in result.Points)
                {
                    table.AddPlainRow(p.Layer, Markdown.Number(p.Depth, "0.00"), p.Projected ? $"{p.Dimension}→{p.KeyDimension}" : p.Dimension.ToString(CultureInfo.InvariantCulture),
                        Markdown.Percent(p.FixedError), Markdown.Percent(p.SearchedError), $"{p.Theta}, {p.Lambda}", Markdown.Percent(p.CacheOnlyError));
                }

                console.Write(table);
                console.MarkupLineInterpolated($"Network alone: {Markdown.Percent(result.BaselineError)}. Report: [blue]{folder.Path}[/]");
            });
        }, ct));
    }

    public Command Definition { get; }

    private static void Write(ReportFolder folder, LayerSweepResult result)
    {
        var depth = result.Points.Select(p => p.Depth).ToList();
        PlotWriter.Lines(folder.File("layer-sweep.png"), $"{result.Model}: cache keyed on one layer (report half)", "normalised depth", "test error (%)",
        [
            new PlotSeries($"θ = {result.FixedTheta}, λ = {result.FixedLambda}", depth, result.Points.Select(p => p.FixedError * 100).ToList()),
            new PlotSeries("θ, λ searched", depth, result.Points.Select(p => p.SearchedError * 100).ToList()),
            new PlotSeries("network", depth, depth.Select(_ => result.BaselineError * 100).ToList(), Markers: false),
        ]);
        var best = result.Points.MinBy(p => p.SearchedError)!;
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture, $"# Layer sweep (Figure 2): {result.Model}").AppendLine();
        sb.AppendLine(CultureInfo.InvariantCulture,
            $"Cache of all 50,000 training images keyed on one layer at a time; errors on the report half of the test set (seed {result.Seed}); " +
            $"θ, λ searched on the validation half. Layers wider than {result.MaxDimension} values are projected to {result.MaxDimension} " +
            $"dimensions (seeded Gaussian JL projection, unit norm again); keys are stored as float16. Provider: {result.Provider}. " +
            $"Network alone: {Markdown.Percent(result.BaselineError)}.").AppendLine();
        sb.Append(Markdown.Table(
            ["layer", "normalised depth", "dimension", $"θ = {result.FixedTheta}, λ = {result.FixedLambda}", "searched", "θ, λ", "cache-only", "seconds"],
            result.Points.Select(p => (IReadOnlyList<string>)
            [
                p.Layer, Markdown.Number(p.Depth, "0.00"), p.Projected ? $"{p.Dimension} → {p.KeyDimension}" : p.Dimension.ToString(CultureInfo.InvariantCulture),
                Markdown.Percent(p.FixedError), Markdown.Percent(p.SearchedError), $"{Markdown.Number(p.Theta)}, {Markdown.Number(p.Lambda)}",
                Markdown.Percent(p.CacheOnlyError), Markdown.Number(p.Seconds, "0.0"),
            ])));
        sb.AppendLine().AppendLine(CultureInfo.InvariantCulture,
            $"Lowest searched error: {best.Layer} at normalised depth {Markdown.Number(best.Depth, "0.00")} ({Markdown.Percent(best.SearchedError)}).");
        sb.AppendLine().AppendLine("![layer sweep](layer-sweep.png)");
        sb.AppendLine().AppendLine(CultureInfo.InvariantCulture, $"Total time: {Markdown.Number(result.Seconds, "0")} s.");
        folder.WriteText("report.md", sb.ToString());
        folder.WriteJson("result.json", result);
    }
}
