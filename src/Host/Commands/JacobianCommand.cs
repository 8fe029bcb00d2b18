using System.CommandLine;
using Microsoft.Extensions.DependencyInjection;
using ScalableCache.Host.Cli;
using ScalableCache.Host.Experiments;
using ScalableCache.Host.Reports;
using Spectre.Console;

namespace ScalableCache.Host.Commands;

/// <summary><c>scache jacobian</c>: Figure 4 — input Jacobian norms and singular values of the baseline, cache and cache-only models.</summary>
internal sealed class JacobianCommand : IScacheCommand
{
    public JacobianCommand(CommandRunner runner, IServiceProvider services)
    {
        var model = CommonOptions.Model();
        var images = new Option<int>("--images", "-n") { Description = "Seeded random images of the report half of the test set.", DefaultValueFactory = _ => 100 }.AtLeast(1);
        var batch = new Option<int>("--batch") { Description = "Images per Jacobian pass (C backward passes each).", DefaultValueFactory = _ => 16 }.AtLeast(1);
        var shared = new RobustnessOptions();

        Definition = new Command("jacobian", "Figure 4: ‖∂p(·|x)/∂x‖_F and the singular values of the input Jacobian for the baseline, cache and cache-only models.")
        {
            model, images, batch,
        };
        shared.AddTo(Definition);
        Definition.SetAction((parse, ct) => runner.RunAsync("jacobian", async token =>
        {
            var session = services.GetRequiredService<ExperimentSession>();
            var backbone = shared.Request(parse, session, parse.GetValue(model)!);
            var folder = ReportFolder.Create(parse.GetValue(shared.Output), "jacobian");
            var report = await services.GetRequiredService<JacobianExperiment>().RunAsync(backbone, parse.GetValue(images), parse.GetValue(batch), token)
                .ConfigureAwait(false);
            folder.WriteText("report.md", RobustnessReport.JacobianMarkdown(report));
            var plots = RobustnessReport.JacobianPlots(folder, report);
            var result = new { report, plots, reportFolder = folder.Path };
            folder.WriteJson("result.json", result);
            return new CommandOutcome(result, console =>
            {
                var table = new Table().AddColumns("variant", "mean ‖J‖_F", "median ‖J‖_F", "mean σ1", "mean ‖∇p(ŷ)‖");
                foreach (var v in report.Variants)
                {
                    table.AddPlainRow(v.Variant, Markdown.Number(v.MeanFrobeniusNorm), Markdown.Number(v.MedianFrobeniusNorm),
                        v.MeanSingularValues.Count > 0 ? Markdown.Number(v.MeanSingularValues[0]) : "—", Markdown.Number(v.MeanPredictedClassGradientNorm));
                }

                console.Write(table);
                console.MarkupLineInterpolated($"{report.Model}, {report.Images} images. Report: [blue]{folder.Path}[/]");
            });
        }, ct));
    }

    public Command Definition { get; }
}
