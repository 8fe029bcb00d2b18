using System.CommandLine;
using Microsoft.Extensions.DependencyInjection;
using ScalableCache.Host.Cli;
using ScalableCache.Host.Experiments;
using ScalableCache.Host.Reports;
using Spectre.Console;

namespace ScalableCache.Host.Commands;

/// <summary><c>scache attack</c>: Tables 2–4 — white-box, gray-box and transferred adversarial attacks on the cache models.</summary>
internal sealed class AttackCommand : IScacheCommand
{
    public AttackCommand(CommandRunner runner, IServiceProvider services)
    {
        var attack = new Option<string>("--attack", "-a")
        {
            Description = "fgsm (gradient sign, ε up to 0.5), ifgsm (10 gradient-sign steps per ε), pixel (single pixel set to 0 or 1) or blur (Gaussian blur); " +
                "a comma-separated list (or all) runs several over one setup of the caches.",
            Required = true,
        }.NameList();
        var source = new Option<string>("--source")
        {
            Description = "Model the adversarial images are made on (white box on its baseline, cache and cache-only models).",
            DefaultValueFactory = _ => "resnet32",
        };
        var targets = new Option<string>("--targets")
        {
            Description = "Comma-separated models the source network's adversarial images are transferred to (the source is always included, as the gray-box row).",
            DefaultValueFactory = _ => "resnet20",
        }.NameList();
        var images = new Option<int>("--images", "-n") { Description = "Seeded random images of the report half of the test set.", DefaultValueFactory = _ => 250 }.AtLeast(1);
        var grid = new Option<int?>("--grid")
        {
            Description = "Grid size of the attack: ε values (fgsm 1000, ifgsm 100), σ values (blur 1000) or pixels tried (pixel 1000).",
        }.AtLeast(1);
        var shared = new RobustnessOptions();

        Definition = new Command("attack", "Tables 2–4: adversarial attacks (Foolbox 1 semantics) on the baseline, cache and cache-only models: white-box ρ_adv and accuracy on transferred adversarial images.")
        {
            attack, source, targets, images, grid,
        };
        shared.AddTo(Definition);
        Definition.SetAction((parse, ct) => runner.RunAsync("attack", async token =>
        {
            var names = ParseAttacks(parse.GetValue(attack)!);

            var session = services.GetRequiredService<ExperimentSession>();
            var backbone = shared.Request(parse, session, parse.GetValue(source)!);
            var targetNames = CommonOptions.Names(parse.GetValue(targets)) ?? [];
            var folder = ReportFolder.Create(parse.GetValue(shared.Output), "attack");
            var plots = new List<string>();
            object? result = null;
            var reports = await services.GetRequiredService<AttackExperiment>().RunAsync(
                new AttackRequest(names, parse.GetValue(source)!, targetNames, parse.GetValue(images), parse.GetValue(grid), backbone), token,
                done =>
                {
                    // After every attack (the last included), so a stopped run keeps the attacks it finished.
                    plots.AddRange(RobustnessReport.AttackPlots(folder, done[^1]));
                    var finished = done.ToList();
                    folder.WriteText("report.md", RobustnessReport.AttackMarkdown(finished));
                    result = new { reports = finished, plots = plots.ToList(), reportFolder = folder.Path };
                    folder.WriteJson("result.json", result);
                }).ConfigureAwait(false);
            return new CommandOutcome(result!, console =>
            {
                foreach (var report in reports)
                {
                    Print(console, report);
                }

                console.MarkupLineInterpolated($"Report: [blue]{folder.Path}[/]");
            });
        }, ct));
    }

    public Command Definition { get; }

    /// <summary>The attacks named by <c>--attack</c>: a comma-separated list of known names, or <c>all</c>; duplicates are dropped.</summary>
    internal static IReadOnlyList<string> ParseAttacks(string value)
    {
        var names = value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(n => n.ToLowerInvariant()).ToList();
        if (names.Count == 1 && names[0] == "all")
        {
            return AttackExperiment.AttackNames;
        }

        var unknown = names.Where(n => !AttackExperiment.AttackNames.Contains(n)).ToList();
        if (names.Count == 0 || unknown.Count > 0)
        {
            throw new UsageException(
                $"Unknown attack '{(unknown.Count > 0 ? string.Join("', '", unknown) : value)}'. Known attacks: {string.Join(", ", AttackExperiment.AttackNames)} (or all).");
        }

        return [.. names.Distinct()];
    }

    private static void Print(IAnsiConsole console, AttackReport report)
    {
        var white = new Table().AddColumns([.. RobustnessReport.WhiteBoxHeader]);
        foreach (var row in report.WhiteBox)
        {
            white.AddPlainRow([.. RobustnessReport.WhiteBoxCells(row)]);
        }

        var transfer = new Table().AddColumns([.. RobustnessReport.TransferHeader]);
        foreach (var row in report.Transfer)
        {
            transfer.AddPlainRow([.. RobustnessReport.TransferCells(row)]);
        }

        console.MarkupLineInterpolated($"White box ({report.Attack} on {report.Source}, Table 3):");
        console.Write(white);
        console.MarkupLineInterpolated($"Adversarial images of the {report.Source} network fed to each model (Tables 2 and 4):");
        console.Write(transfer);
    }
}
