using System.CommandLine;
using System.Globalization;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using ScalableCache.Host.Cli;
using ScalableCache.Host.Experiments;
using ScalableCache.Host.Reports;
using Spectre.Console;

namespace ScalableCache.Host.Commands;

/// <summary><c>scache compare</c>: the approximation report — approximate stores against the exact store on the same keys.</summary>
internal sealed class CompareCommand : IScacheCommand
{
    public CompareCommand(CommandRunner runner, IServiceProvider services)
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
        var providersOption = new Option<string>("--providers")
        {
            Description = "Approximate providers to compare with Exact (their options come from Cache:<Provider>).",
            DefaultValueFactory = _ => "RandomProjection,Hnsw",
        };
        Definition = new Command("compare", "Approximation report: error difference, top-1 agreement, p_mem total variation and recall@k of approximate stores against the exact store.")
        {
            model, weights, data, output, seed, layers, providersOption, thetas, lambdas, maxLayers,
        };
        Definition.SetAction((parse, ct) => runner.RunAsync("compare", async token =>
        {
            var session = services.GetRequiredService<ExperimentSession>();
            var grid = session.Grid(parse, thetas, lambdas);
            var compared = CommonOptions.Names(parse.GetValue(providersOption)) ?? [];
            var folder = ReportFolder.Create(parse.GetValue(output), "compare");
            var result = await services.GetRequiredService<ApproximationExperiment>().RunAsync(
                parse.GetValue(model)!, parse.GetValue(weights), parse.GetValue(data), CommonOptions.Names(parse.GetValue(layers)), compared,
                parse.GetValue(seed), grid, parse.GetValue(maxLayers), token).ConfigureAwait(false);
            Write(folder, result);
            return new CommandOutcome(new { result, reportFolder = folder.Path }, console =>
            {
                var table = new Table().AddColumns("provider", "error", "Δ (points)", "top-1 agreement", "mean TVD", "recall@k", "queries/s", "speed-up");
                table.AddPlainRow("Exact", Markdown.Percent(result.ExactError), "0", "1", "0", "–", Markdown.Number(result.ExactQueriesPerSecond, "0"), "1");
                foreach (var r in result.Rows)
                {
                    table.AddPlainRow(r.Provider, Markdown.Percent(r.ErrorAtExactSetting), Markdown.Number(r.ErrorDifferencePoints, "+0.00;-0.00;0.00"),
                        Markdown.Number(r.Top1Agreement, "0.0000"), Markdown.Number(r.MeanTotalVariation, "0.0000"),
                        r.RecallAtK is { } recall ? Markdown.Number(recall, "0.0000") : "–", Markdown.Number(r.QueriesPerSecond, "0"),
                        Markdown.Number(r.QuerySpeedupOverExact, "0.00"));
                }

                console.Write(table);
                console.MarkupLineInterpolated($"Report half of the test set; θ = {result.Theta}, λ = {result.Lambda} from Exact. Report: [blue]{folder.Path}[/]");
            });
        }, ct));
    }

    public Command Definition { get; }

    private static void Write(ReportFolder folder, ApproximationResult result)
    {
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture, $"# Approximation report: {result.Model}").AppendLine();
        sb.AppendLine(CultureInfo.InvariantCulture,
            $"Keys [{string.Join(", ", result.Layers)}] (dimension {result.KeyDimension}) of all {result.CacheSize:N0} training images. θ = {result.Theta}, " +
            $"λ = {result.Lambda} searched for the exact store on the validation half (seed {result.Seed}); every number below is on the report half. " +
            $"Network alone: {Markdown.Percent(result.NetworkError)}; exact cache: {Markdown.Percent(result.ExactError)} " +
            $"(built in {result.ExactBuildSeconds:0.0} s, {result.ExactQueriesPerSecond:0} queries/s).").AppendLine();
        sb.Append(Markdown.Table(
            ["provider", "settings", "error at exact's θ, λ", "Δ vs exact (points)", "top-1 agreement (mixed)", "mean TVD of p_mem", "recall@k",
             "own searched error (θ, λ)", "build s", "queries/s", "speed-up vs exact"],
            result.Rows.Select(r => (IReadOnlyList<string>)
            [
                r.Provider, r.Details, Markdown.Percent(r.ErrorAtExactSetting), Markdown.Number(r.ErrorDifferencePoints, "+0.00;-0.00;0.00"),
                Markdown.Number(r.Top1Agreement, "0.0000"), Markdown.Number(r.MeanTotalVariation, "0.0000"),
                r.RecallAtK is { } recall ? $"{Markdown.Number(recall, "0.0000")} (k = {r.TopK})" : "–",
                $"{Markdown.Percent(r.SearchedError)} ({Markdown.Number(r.SearchedTheta)}, {Markdown.Number(r.SearchedLambda)})",
                Markdown.Number(r.BuildSeconds, "0.0"), Markdown.Number(r.QueriesPerSecond, "0"), Markdown.Number(r.QuerySpeedupOverExact, "0.00"),
            ])));
        sb.AppendLine().AppendLine(CultureInfo.InvariantCulture, $"Total time: {result.Seconds:0} s.");
        folder.WriteText("report.md", sb.ToString());
        folder.WriteJson("result.json", result);
    }
}
