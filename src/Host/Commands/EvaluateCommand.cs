using Microsoft.Extensions.DependencyInjection;
using System.CommandLine;
using ScalableCache.Core.Data;
using ScalableCache.Host.Cli;
using ScalableCache.Host.Experiments;
using ScalableCache.Host.Reports;
using Spectre.Console;

namespace ScalableCache.Host.Commands;

/// <summary><c>scache evaluate</c>: one Table 1 row — network, cache model, cache-only model — for one model.</summary>
internal sealed class EvaluateCommand : IScacheCommand
{
    public EvaluateCommand(CommandRunner runner, IServiceProvider services)
    {
        var model = CommonOptions.Model();
        var weights = CommonOptions.Weights();
        var data = CommonOptions.Data();
        var dataset = CommonOptions.Dataset();
        var perClass = CommonOptions.PerClass();
        var halfKeys = CommonOptions.HalfKeys();
        var output = CommonOptions.Out();
        var seed = CommonOptions.Seed();
        var flip = CommonOptions.Flip();
        var layers = CommonOptions.Layers();
        var thetas = CommonOptions.Thetas();
        var lambdas = CommonOptions.Lambdas();
        var includeCacheOnly = CommonOptions.IncludeCacheOnly();
        var widen = CommonOptions.WidenThetas();
        var candidates = CommonOptions.Candidates();
        var maxLayers = CommonOptions.MaxLayers();
        var maxTrain = CommonOptions.MaxTrain();
        var maxTest = CommonOptions.MaxTest();
        var cache = new Option<string?>("--cache") { Description = "A cache file from `scache build`: its keys, layers and provider are used instead of extracting the training set." };
        var theta = CommonOptions.Theta("Fixed θ (with --lambda); omit both to search the grid.");
        var lambda = CommonOptions.Lambda("Fixed λ in [0, 1] (with --theta); λ = 1 is cache-only.");
        var search = new Option<bool>("--search") { Description = "Search θ and λ on the validation half (the default when neither is given)." };

        Definition = new Command("evaluate", "Baseline, cache model and cache-only model for one model (a Table 1 row), with θ, λ searched on a seeded half of the test set (ImageNet: of the validation set).")
        {
            model, weights, data, dataset, perClass, halfKeys, output, seed, flip, layers, theta, lambda, search, thetas, lambdas, includeCacheOnly, widen, candidates, maxLayers, maxTrain, maxTest, cache,
        };
        Definition.SetAction((parse, ct) => runner.RunAsync("evaluate", async token =>
        {
            if (parse.GetValue(cache) is { } cacheFile)
            {
                InputFile.Resolve(cacheFile, "Cache file (from --cache)"); // before anything opens it: a named pipe would block
            }

            var fixedTheta = parse.GetValue(theta);
            var fixedLambda = parse.GetValue(lambda);
            if (parse.GetValue(search) && (fixedTheta.HasValue || fixedLambda.HasValue))
            {
                throw new UsageException("--search cannot be combined with --theta/--lambda.");
            }

            if (fixedTheta.HasValue != fixedLambda.HasValue)
            {
                throw new UsageException("Give --theta and --lambda together, or neither to search them.");
            }

            var session = services.GetRequiredService<ExperimentSession>();
            var grid = session.Grid(parse, thetas, lambdas, includeCacheOnly, widen);
            var folder = ReportFolder.Create(parse.GetValue(output), "evaluate");
            var row = await services.GetRequiredService<Table1Experiment>().RunAsync(new Table1Request(
                parse.GetValue(model)!, parse.GetValue(weights), parse.GetValue(data), CommonOptions.Names(parse.GetValue(layers)),
                CommonOptions.Names(parse.GetValue(candidates)), parse.GetValue(maxLayers), parse.GetValue(seed), parse.GetValue(flip), grid,
                fixedTheta, fixedLambda, parse.GetValue(maxTrain), parse.GetValue(maxTest), parse.GetValue(cache),
                CommonOptions.DatasetKind(parse.GetValue(dataset)), parse.GetValue(perClass), parse.GetValue(halfKeys)), token).ConfigureAwait(false);
            folder.WriteText("report.md", Table1Report.Markdown([row], $"Cache model evaluation: {row.Model}"));
            Table1Report.Plot(folder, row);
            var result = new EvaluateResult(row, folder.Path);
            folder.WriteJson("result.json", result);
            return new CommandOutcome(result, console => Render(console, [row], folder.Path));
        }, ct));
    }

    public Command Definition { get; }

    /// <summary>Prints Table 1 rows for people.</summary>
    public static void Render(IAnsiConsole console, IReadOnlyList<Table1Row> rows, string folder)
    {
        var table = new Table().AddColumns("model", "layers", "network", "cache", "cache-only", "θ, λ", "cache-only θ");
        foreach (var r in rows)
        {
            table.AddPlainRow(r.Model, string.Join(", ", r.Layers), Markdown.Percent(r.BaselineError), Markdown.Percent(r.CacheError),
                Markdown.Percent(r.CacheOnlyError), $"{Markdown.Number(r.Theta)}, {Markdown.Number(r.Lambda)}", Markdown.Number(r.CacheOnlyTheta));
        }

        console.Write(table);
        console.MarkupLineInterpolated($"Errors on the report half of the test set. Report: [blue]{folder}[/]");
    }

    private sealed record EvaluateResult(Table1Row Row, string ReportFolder)
    {
        public string Model => Row.Model;
        public IReadOnlyList<string> Layers => Row.Layers;
        public long KeyDimension => Row.KeyDimension;
        public long CacheSize => Row.CacheSize;
        public int Seed => Row.Seed;
        public double BaselineError => Row.BaselineError;
        public double CacheError => Row.CacheError;
        public double CacheOnlyError => Row.CacheOnlyError;
        public double Theta => Row.Theta;
        public double Lambda => Row.Lambda;
        public double CacheOnlyTheta => Row.CacheOnlyTheta;
    }
}
