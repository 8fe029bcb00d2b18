using System.CommandLine;
using System.Globalization;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using ScalableCache.Core.Models;
using ScalableCache.Host.Cli;
using ScalableCache.Host.Experiments;
using ScalableCache.Host.Reports;
using Spectre.Console;

namespace ScalableCache.Host.Commands;

/// <summary>
/// <c>scache orhan</c>: Table 1 from the paper author's own Keras models, under his protocol (his layers, θ, λ; training images plus
/// flips in the cache; the whole test set) next to the seed's figures, and under ours on the same networks.
/// </summary>
internal sealed class OrhanCommand : IScacheCommand
{
    public OrhanCommand(CommandRunner runner, IServiceProvider services)
    {
        var models = new Option<string>("--models")
        {
            Description = $"Comma-separated models (default all: {string.Join(",", OrhanModels.All.Select(m => m.Model))}).",
            DefaultValueFactory = _ => string.Join(",", OrhanModels.All.Select(m => m.Model)),
        }.NameList();
        var data = new Option<string?>("--data")
        {
            Description = "Data folder of the models' data set (CIFAR-10 or CIFAR-100 binary); default Assets:Cifar10 / Assets:Cifar100.",
        };
        var output = CommonOptions.Out();
        var seed = CommonOptions.Seed();
        var thetas = CommonOptions.Thetas();
        var lambdas = CommonOptions.Lambdas();
        var maxLayers = CommonOptions.MaxLayers();
        Definition = new Command("orhan", "Table 1 from the author's Keras models: his protocol (his layers, θ, λ, flips, full test set) and ours on the same models.")
        {
            models, data, output, seed, thetas, lambdas, maxLayers,
        };
        Definition.SetAction((parse, ct) => runner.RunAsync("orhan", async token =>
        {
            var session = services.GetRequiredService<ExperimentSession>();
            var experiment = services.GetRequiredService<AuthorProtocolExperiment>();
            var grid = session.Grid(parse, thetas, lambdas);
            var presets = (CommonOptions.Names(parse.GetValue(models)) ?? []).Select(name => OrhanModels.Find(name)
                ?? throw new UsageException($"'{name}' is not one of the author's models ({string.Join(", ", OrhanModels.All.Select(m => m.Model))}).")).ToList();
            var folder = ReportFolder.Create(parse.GetValue(output), "orhan");
            var rows = new List<AuthorProtocolRow>();
            foreach (var preset in presets)
            {
                rows.Add(await experiment.RunAsync(preset, parse.GetValue(data), parse.GetValue(seed), grid, parse.GetValue(maxLayers), token).ConfigureAwait(false));

                // Written after every model, so a long run that is stopped keeps what it finished.
                folder.WriteText("report.md", Markdown(rows));
                folder.WriteJson("result.json", new OrhanResult(rows, folder.Path));
            }

            return new CommandOutcome(new OrhanResult(rows, folder.Path), console =>
            {
                var table = new Table().AddColumns("model", "protocol", "network", "cache", "cache-only", "seed's Table 1");
                foreach (var r in rows)
                {
                    var a = r.Author;
                    table.AddPlainRow(r.Model, "author's", Reports.Markdown.Percent(a.NetworkError), Reports.Markdown.Percent(a.CacheError),
                        Reports.Markdown.Percent(a.CacheOnlyError), $"{Percent(a.PaperNetworkError)} / {Percent(a.PaperCacheError)} / {Percent(a.PaperCacheOnlyError)}");
                    table.AddPlainRow(r.Model, "ours", Reports.Markdown.Percent(r.Ours.BaselineError), Reports.Markdown.Percent(r.Ours.CacheError),
                        Reports.Markdown.Percent(r.Ours.CacheOnlyError), string.Empty);
                }

                console.Write(table);
                console.MarkupLineInterpolated($"Report: [blue]{folder.Path}[/]");
            });
        }, ct));
    }

    public Command Definition { get; }

    /// <summary>The report: the author's protocol against the seed's Table 1, then ours on the same models.</summary>
    public static string Markdown(IReadOnlyList<AuthorProtocolRow> rows)
    {
        ArgumentNullException.ThrowIfNull(rows);
        var sb = new StringBuilder();
        sb.AppendLine("# Table 1 from the author's own Keras models").AppendLine();
        sb.AppendLine(
            "The paper author's trained Keras ResNets (`models/orhan-keras/`), rebuilt from their `.h5` files. Inputs: pixels / 255, then " +
            "per-pixel mean and std over all 60,000 images of the data set (CIFAR-10: computed from the data; CIFAR-100: " +
            "`pixel-stats.safetensors`, since the training file here is a subset). Keys: the layers' outputs concatenated, then " +
            "L2-normalised once (the author's recipe).").AppendLine();
        sb.AppendLine("## The author's protocol").AppendLine();
        sb.AppendLine(
            "His `mem_layers` (indices into `model.layers`), θ and λ; the cache holds every training image available plus its horizontal " +
            "flip; errors on the whole test set. The seed's Table 1 is given for comparison (its cache: all 50,000 training images and " +
            "their flips).").AppendLine();
        sb.Append(Reports.Markdown.Table(
            ["model", "layers (index: name)", "cache keys", "θ, λ", "cache-only θ", "network", "cache", "cache-only", "seed: network / cache / cache-only", "Δ network / cache / cache-only (points)"],
            rows.Select(r =>
            {
                var a = r.Author;
                return (IReadOnlyList<string>)
                [
                    r.Model, string.Join(", ", a.LayerIndices.Zip(a.Layers, (i, l) => $"{i}: {l}")), a.CacheSize.ToString("N0", CultureInfo.InvariantCulture),
                    $"{Reports.Markdown.Number(a.Theta)}, {Reports.Markdown.Number(a.Lambda)}", Reports.Markdown.Number(a.CacheOnlyTheta),
                    $"{Reports.Markdown.Percent(a.NetworkError)} ({a.NetworkErrors})", Reports.Markdown.Percent(a.CacheError), Reports.Markdown.Percent(a.CacheOnlyError),
                    $"{Percent(a.PaperNetworkError)} / {Percent(a.PaperCacheError)} / {Percent(a.PaperCacheOnlyError)}",
                    $"{Points(a.NetworkError - a.PaperNetworkError)} / {Points(a.CacheError - a.PaperCacheError)} / {Points(a.CacheOnlyError - a.PaperCacheOnlyError)}",
                ];
            })));
        sb.AppendLine();
        foreach (var r in rows.Where(r => r.TrainImages < 50_000))
        {
            sb.AppendLine(CultureInfo.InvariantCulture,
                $"**{r.Model}:** the training set here has {r.TrainImages:N0} images, so its cache holds {r.Author.CacheSize:N0} keys, not the " +
                $"paper's 100,000: the cache and cache-only errors are not comparable with the seed's (the network error is).").AppendLine();
        }

        sb.AppendLine("## Our protocol on the same models").AppendLine();
        sb.AppendLine(
            "Layers chosen by greedy search (concatenated keys scored directly), θ and λ by grid search, all on a seeded half of the test " +
            "set; errors on the other half; the cache holds the training images (no flips).").AppendLine();
        var ours = Table1Report.Markdown([.. rows.Select(r => r.Ours)], "Our protocol");
        sb.Append(ours.AsSpan(ours.IndexOf('\n', StringComparison.Ordinal) + 1));
        return sb.ToString();
    }

    private static string Percent(double fraction) => (fraction * 100).ToString("0.00", CultureInfo.InvariantCulture);

    private static string Points(double fraction) => (fraction * 100).ToString("+0.00;-0.00;0.00", CultureInfo.InvariantCulture);

    private sealed record OrhanResult(IReadOnlyList<AuthorProtocolRow> Rows, string ReportFolder);
}
