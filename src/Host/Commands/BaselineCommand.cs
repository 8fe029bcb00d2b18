using System.CommandLine;
using Microsoft.Extensions.DependencyInjection;
using ScalableCache.Host.Cli;
using ScalableCache.Host.Experiments;
using ScalableCache.Host.Reports;
using Spectre.Console;

namespace ScalableCache.Host.Commands;

/// <summary><c>scache baseline</c>: the network's own test error on the CIFAR-10 test set.</summary>
internal sealed class BaselineCommand : IScacheCommand
{
    public BaselineCommand(CommandRunner runner, IServiceProvider services)
    {
        var model = CommonOptions.Model();
        var weights = CommonOptions.Weights();
        var data = CommonOptions.Data();
        Definition = new Command("baseline", "Test error of the network alone on the CIFAR-10 test set.") { model, weights, data };
        Definition.SetAction((parse, ct) => runner.RunAsync("baseline", async token =>
        {
            var session = services.GetRequiredService<ExperimentSession>();
            using var loaded = await session.LoadModelAsync(parse.GetValue(model)!, parse.GetValue(weights), token, parse.GetValue(data)).ConfigureAwait(false);
            var test = session.LoadTest(loaded, parse.GetValue(data));
            using var features = session.Fitter(loaded).Extract(test, [loaded.Model.PooledFeaturesLayer], "test", token);
            var error = features.NetworkError();
            var errors = (long)Math.Round(error * features.Count);
            var result = new
            {
                model = loaded.Spec.Name,
                weights = loaded.Checkpoint.FilePath,
                format = loaded.Checkpoint.Format.ToString(),
                testError = error,
                testErrors = errors,
                testImages = features.Count,
            };
            return new CommandOutcome(result, console =>
                console.MarkupLineInterpolated($"{loaded.Spec.Name}: test error {Markdown.Percent(error)} ({errors} of {features.Count} images)"));
        }, ct));
    }

    public Command Definition { get; }
}
