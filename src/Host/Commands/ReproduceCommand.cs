using Microsoft.Extensions.DependencyInjection;
using System.CommandLine;
using ScalableCache.Host.Cli;
using ScalableCache.Host.Experiments;
using ScalableCache.Host.Reports;

namespace ScalableCache.Host.Commands;

/// <summary><c>scache reproduce</c>: the main job — Table 1 of Orhan (2018) on CIFAR-10 for ResNet-20, -32 and -56.</summary>
internal sealed class ReproduceCommand : IScacheCommand
{
    public ReproduceCommand(CommandRunner runner, IServiceProvider services)
    {
        var models = new Option<string?>("--models")
        {
            Description = "Comma-separated models (default resnet20,resnet32,resnet56; with --dataset imagenet, torchvision:resnet50).",
        }.NameList();
        var quick = new Option<bool>("--quick") { Description = "ResNet-20 only." };
        var data = CommonOptions.Data();
        var dataset = CommonOptions.Dataset();
        var weights = CommonOptions.Weights();
        var perClass = CommonOptions.PerClass();
        var halfKeys = CommonOptions.HalfKeys();
        var candidates = CommonOptions.Candidates();
        var maxTest = CommonOptions.MaxTest();
        var output = CommonOptions.Out();
        var seed = CommonOptions.Seed();
        var flip = CommonOptions.Flip();
        var thetas = CommonOptions.Thetas();
        var lambdas = CommonOptions.Lambdas();
        var includeCacheOnly = CommonOptions.IncludeCacheOnly();
        var widen = CommonOptions.WidenThetas();
        var maxLayers = CommonOptions.MaxLayers();
        Definition = new Command(
            "reproduce",
            "Table 1 on CIFAR-10: network, cache and cache-only errors for ResNet-20, -32 and -56, layers chosen by greedy search; " +
            "with --dataset imagenet --data DIR --weights FILE the ImageNet row (torchvision:resnet50 unless --models names another).")
        {
            models, quick, data, dataset, weights, perClass, halfKeys, candidates, maxTest, output, seed, flip, thetas, lambdas, includeCacheOnly, widen, maxLayers,
        };
        Definition.SetAction((parse, ct) => runner.RunAsync("reproduce", async token =>
        {
            var session = services.GetRequiredService<ExperimentSession>();
            var experiment = services.GetRequiredService<Table1Experiment>();
            var grid = session.Grid(parse, thetas, lambdas, includeCacheOnly, widen);
            var kind = CommonOptions.DatasetKind(parse.GetValue(dataset));
            var imagenet = kind == DataSetKind.ImageNet;
            var names = parse.GetValue(quick) && !imagenet
                ? ["resnet20"]
                : CommonOptions.Names(parse.GetValue(models)) ?? (imagenet ? ["torchvision:resnet50"] : ["resnet20", "resnet32", "resnet56"]);
            var checkpoint = parse.GetValue(weights);
            if (checkpoint is not null && names.Count != 1)
            {
                throw new UsageException($"--weights names one checkpoint but {names.Count} models are to run; name one with --models.");
            }

            var folder = ReportFolder.Create(parse.GetValue(output), "reproduce");
            var rows = new List<Table1Row>();
            foreach (var name in names)
            {
                rows.Add(await experiment.RunAsync(new Table1Request(
                    name, checkpoint, parse.GetValue(data), null, CommonOptions.Names(parse.GetValue(candidates)), parse.GetValue(maxLayers), parse.GetValue(seed),
                    parse.GetValue(flip), grid, null, null, MaxTest: parse.GetValue(maxTest), Dataset: kind, PerClass: parse.GetValue(perClass),
                    HalfKeys: parse.GetValue(halfKeys)),
                    token).ConfigureAwait(false));
                Table1Report.Plot(folder, rows[^1]);

                // Written after every model, so a long run that is stopped keeps what it finished.
                folder.WriteText("report.md", Table1Report.Markdown(rows, $"Table 1 ({(imagenet ? "ImageNet" : "CIFAR-10")}): cache model of Orhan (2018)"));
                folder.WriteJson("result.json", new ReproduceResult(rows, folder.Path));
            }

            return new CommandOutcome(new ReproduceResult(rows, folder.Path), console => EvaluateCommand.Render(console, rows, folder.Path));
        }, ct));
    }

    public Command Definition { get; }

    private sealed record ReproduceResult(IReadOnlyList<Table1Row> Rows, string ReportFolder);
}
