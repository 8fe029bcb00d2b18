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
        var maxTrain = CommonOptions.MaxTrain();
        var maxTest = CommonOptions.MaxTest();
        var providersOption = new Option<string>("--providers")
        {
            Description = "Approximate providers to compare with Exact (their options come from Cache:<Provider>).",
            DefaultValueFactory = _ => "RandomProjection,Hnsw",
        }.NameList();
        var hnswSearch = new Option<string?>("--hnsw-search")
        {
            Description = "Extra HNSW search settings measured on the same graph, as comma-separated TOPK:EFSEARCH pairs (e.g. 100:256,200:512).",
        }.NameList();
        Definition = new Command("compare", "Approximation report: error difference, top-1 agreement, p_mem total variation and recall@k of approximate stores against the exact store.")
        {
            model, weights, data, output, seed, layers, providersOption, thetas, lambdas, maxLayers, hnswSearch, maxTrain, maxTest,
        };
        Definition.SetAction((parse, ct) => runner.RunAsync("compare", async token =>
        {
            var session = services.GetRequiredService<ExperimentSession>();
            var grid = session.Grid(parse, thetas, lambdas);
            var compared = CommonOptions.Names(parse.GetValue(providersOption)) ?? [];
            var searches = ParseSearches(parse.GetValue(hnswSearch));
            var folder = ReportFolder.Create(parse.GetValue(output), "compare");
            var result = await services.GetRequiredService<ApproximationExperiment>().RunAsync(
                parse.GetValue(model)!, parse.GetValue(weights), parse.GetValue(data), CommonOptions.Names(parse.GetValue(layers)), compared,
                parse.GetValue(seed), grid, parse.GetValue(maxLayers), searches,
                parse.GetValue(maxTrain), parse.GetValue(maxTest), token).ConfigureAwait(false);
            Write(folder, result);
            return new CommandOutcome(new { result, reportFolder = folder.Path }, console =>
            {
                var table = new Table().AddColumns("provider", "settings", "error", "Δ (points)", "top-1 agreement", "mean TVD", "recall@k", "queries/s", "speed-up", "resident MiB");
                table.AddPlainRow("Exact", "–", Markdown.Percent(result.ExactError), "0", "1", "0", "–", Markdown.Number(result.ExactQueriesPerSecond, "0"), "1",
                    Mib(result.ExactResidentBytes));
                foreach (var r in result.Rows)
                {
                    table.AddPlainRow(r.Provider, r.Details, Markdown.Percent(r.ErrorAtExactSetting), Markdown.Number(r.ErrorDifferencePoints, "+0.00;-0.00;0.00"),
                        Markdown.Number(r.Top1Agreement, "0.0000"), Markdown.Number(r.MeanTotalVariation, "0.0000"),
                        r.RecallAtK is { } recall ? Markdown.Number(recall, "0.0000") : "–", Markdown.Number(r.QueriesPerSecond, "0"),
                        Markdown.Number(r.QuerySpeedupOverExact, "0.00"), Mib(r.ResidentBytes));
                }

                console.Write(table);
                console.MarkupLineInterpolated($"Report half of the test set; θ = {result.Theta}, λ = {result.Lambda} from Exact. Report: [blue]{folder.Path}[/]");
            });
        }, ct));
    }

    public Command Definition { get; }

    private static string Mib(long bytes) => Markdown.Number(bytes / 1048576.0, "0");

    /// <summary>Parses <c>--hnsw-search</c>: comma-separated <c>TOPK:EFSEARCH</c> pairs with 1 ≤ TOPK ≤ EFSEARCH.</summary>
    internal static IReadOnlyList<(int TopK, int ExpansionSearch)> ParseSearches(string? value)
    {
        var result = new List<(int, int)>();
        foreach (var pair in (value ?? string.Empty).Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var parts = pair.Split(':');
            if (parts.Length != 2 || !int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var k) ||
                !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var ef) || k < 1 || ef < k)
            {
                throw new UsageException($"--hnsw-search: '{pair}' is not TOPK:EFSEARCH with 1 ≤ TOPK ≤ EFSEARCH (e.g. 100:256).");
            }

            result.Add((k, ef));
        }

        return result;
    }

    private static void Write(ReportFolder folder, ApproximationResult result)
    {
        var sb = new StringBuilder();
        sb.AppendLine(CultureInfo.InvariantCulture, $"# Approximation report: {result.Model}").AppendLine();
        sb.AppendLine(CultureInfo.InvariantCulture,
            $"Keys [{string.Join(", ", result.Layers)}] (dimension {result.KeyDimension}) of all {result.CacheSize:N0} training images. θ = {result.Theta}, " +
            $"λ = {result.Lambda} searched for the exact store on the validation half (seed {result.Seed}); every number below is on the report half. " +
            $"Network alone: {Markdown.Percent(result.NetworkError)}; exact cache: {Markdown.Percent(result.ExactError)} " +
            $"(built in {result.ExactBuildSeconds:0.0} s, {result.ExactQueriesPerSecond:0} queries/s, resident +{Mib(result.ExactResidentBytes)} MiB). " +
            $"Resident memory is the growth of the process working set over a store's build; rows marked *same graph* re-tune the search of the graph above them.").AppendLine();
        sb.Append(Markdown.Table(
            ["provider", "settings", "error at exact's θ, λ", "Δ vs exact (points)", "top-1 agreement (mixed)", "mean TVD of p_mem", "recall@k",
             "own searched error (θ, λ)", "build s", "queries/s", "speed-up vs exact", "resident MiB"],
            result.Rows.Select(r => (IReadOnlyList<string>)
            [
                r.Provider, r.Details, Markdown.Percent(r.ErrorAtExactSetting), Markdown.Number(r.ErrorDifferencePoints, "+0.00;-0.00;0.00"),
                Markdown.Number(r.Top1Agreement, "0.0000"), Markdown.Number(r.MeanTotalVariation, "0.0000"),
                r.RecallAtK is { } recall ? $"{Markdown.Number(recall, "0.0000")} (k = {r.TopK})" : "–",
                $"{Markdown.Percent(r.SearchedError)} ({Markdown.Number(r.SearchedTheta)}, {Markdown.Number(r.SearchedLambda)})",
                r.GraphReused ? "same graph" : Markdown.Number(r.BuildSeconds, "0.0"), Markdown.Number(r.QueriesPerSecond, "0"),
                Markdown.Number(r.QuerySpeedupOverExact, "0.00"), r.GraphReused ? "same graph" : Mib(r.ResidentBytes),
            ])));
        sb.AppendLine().AppendLine(CultureInfo.InvariantCulture, $"Total time: {result.Seconds:0} s.");
        folder.WriteText("report.md", sb.ToString());
        folder.WriteJson("result.json", result);
    }
}
