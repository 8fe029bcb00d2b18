using System.CommandLine;
using System.Globalization;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using ScalableCache.Host.Cli;
using ScalableCache.Host.Experiments;
using ScalableCache.Host.Reports;
using Spectre.Console;

namespace ScalableCache.Host.Commands;

/// <summary><c>scache online</c>: streamed evaluation where each predicted batch joins the cache with its true labels.</summary>
internal sealed class OnlineCommand : IScacheCommand
{
    public OnlineCommand(CommandRunner runner, IServiceProvider services)
    {
        var model = CommonOptions.Model();
        var weights = CommonOptions.Weights();
        var data = CommonOptions.Data();
        var output = CommonOptions.Out();
        var seed = CommonOptions.Seed();
        var layers = CommonOptions.Layers();
        var thetas = CommonOptions.Thetas();
        var lambdas = CommonOptions.Lambdas();
        var maxLayers = CommonOptions.MaxLayers();
        var batch = new Option<int>("--batch") { Description = "Images per streamed batch.", DefaultValueFactory = _ => 100 }.AtLeast(1);
        var startEmpty = new Option<bool>("--start-empty") { Description = "The growing cache starts empty instead of from the training keys." };
        var theta = CommonOptions.Theta("Fixed θ (with --lambda); default: searched on the validation half.");
        var lambda = CommonOptions.Lambda("Fixed λ (with --theta).");
        Definition = new Command("online", "Stream the report half of the test set in batches: predict with the current cache, then add the batch with its true labels.")
        {
            model, weights, data, output, seed, layers, batch, startEmpty, theta, lambda, thetas, lambdas, maxLayers,
        };
        Definition.SetAction((parse, ct) => runner.RunAsync("online", async token =>
        {
            if (parse.GetValue(theta).HasValue != parse.GetValue(lambda).HasValue)
            {
                throw new UsageException("Give --theta and --lambda together, or neither.");
            }

            var session = services.GetRequiredService<ExperimentSession>();
            var grid = session.Grid(parse, thetas, lambdas);
            var folder = ReportFolder.Create(parse.GetValue(output), "online");
            var result = await services.GetRequiredService<OnlineExperiment>().RunAsync(
                parse.GetValue(model)!, parse.GetValue(weights), parse.GetValue(data), CommonOptions.Names(parse.GetValue(layers)), parse.GetValue(seed),
                parse.GetValue(batch), parse.GetValue(startEmpty), grid, parse.GetValue(theta), parse.GetValue(lambda), parse.GetValue(maxLayers), token)
                .ConfigureAwait(false);
            Write(folder, result);
            return new CommandOutcome(new { result, reportFolder = folder.Path }, console =>
            {
                var table = new Table().AddColumns("model", "network", "static cache", "growing cache", "final cache size");
                table.AddPlainRow(result.Model, Markdown.Percent(result.NetworkError), Markdown.Percent(result.StaticCacheError),
                    Markdown.Percent(result.GrowingCacheError), result.Steps[^1].GrowingCacheSize.ToString("N0", CultureInfo.InvariantCulture));
                console.Write(table);
                console.MarkupLineInterpolated($"Report: [blue]{folder.Path}[/]");
            });
        }, ct));
    }

    public Command Definition { get; }

    private static void Write(ReportFolder folder, OnlineResult result)
    {
        var x = result.Steps.Select(s => (double)s.Seen).ToList();
        PlotWriter.Lines(folder.File("online.png"), $"{result.Model}: running error while the cache grows", "test images seen", "running error (%)",
        [
            new PlotSeries("network", x, result.Steps.Select(s => s.NetworkError * 100).ToList(), Markers: false),
            new PlotSeries("static cache", x, result.Steps.Select(s => s.StaticCacheError * 100).ToList(), Markers: false),
            new PlotSeries(result.StartEmpty ? "growing cache (from empty)" : "growing cache", x, result.Steps.Select(s => s.GrowingCacheError * 100).ToList(), Markers: false),
        ]);
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture, $"# Online evaluation with a growing cache: {result.Model}").AppendLine();
        sb.AppendLine(CultureInfo.InvariantCulture,
            $"The report half of the test set (seed {result.Seed}) streamed in batches of {result.BatchSize}; each batch is predicted with the current cache, " +
            $"then added with its true labels. Keys: [{string.Join(", ", result.Layers)}]; θ = {result.Theta}, λ = {result.Lambda}; provider {result.Provider}; " +
            $"the growing cache starts {(result.StartEmpty ? "empty" : $"from the {result.StaticCacheSize:N0} training keys")}.").AppendLine();
        sb.Append(Markdown.Table(["model", "errors over the stream"], [
            ["network", Markdown.Percent(result.NetworkError)],
            ["static cache", Markdown.Percent(result.StaticCacheError)],
            ["growing cache", Markdown.Percent(result.GrowingCacheError)],
        ]));
        sb.AppendLine().AppendLine("![online](online.png)");
        sb.AppendLine().AppendLine(CultureInfo.InvariantCulture,
            $"Query throughput (both caches): {result.QueriesPerSecond:0} queries/s; total {result.Seconds:0} s.");
        folder.WriteText("report.md", sb.ToString());
        folder.WriteJson("result.json", result);
    }
}
