using System.CommandLine;
using System.Globalization;
using ScalableCache.Core.Features;
using ScalableCache.Core.Models;
using ScalableCache.Host.Cli;
using Spectre.Console;

namespace ScalableCache.Host.Commands;

/// <summary><c>scache layers</c>: every module's name and output shape in forward order (the names <c>--layers</c> accepts).</summary>
internal sealed class LayersCommand : IScacheCommand
{
    public LayersCommand(CommandRunner runner, IModelRegistry registry)
    {
        var model = CommonOptions.Model();
        Definition = new Command("layers", "List every module of a model with its output shape, in forward order (no weights needed).") { model };
        Definition.SetAction((parse, ct) => runner.RunAsync("layers", _ =>
        {
            var name = parse.GetValue(model)!;
            var spec = registry.Resolve(name);
            using var network = registry.Create(name);
            var layers = LayerInspector.ListLayers(network, spec.Input);
            var result = new
            {
                model = spec.Name,
                input = new[] { spec.Input.Channels, spec.Input.Height, spec.Input.Width },
                pooledFeatures = network.PooledFeaturesLayer,
                layers = layers.Select(l => new { name = l.Name, kind = l.Kind, shape = l.OutputShape, features = l.FeatureCount }).ToArray(),
            };
            return Task.FromResult(new CommandOutcome(result, console =>
            {
                var table = new Table().AddColumns("layer", "kind", "output shape", "features");
                foreach (var l in layers)
                {
                    table.AddPlainRow(l.Name, l.Kind, l.ShapeText, l.FeatureCount.ToString("N0", CultureInfo.InvariantCulture));
                }

                console.Write(table);
            }));
        }, ct));
    }

    public Command Definition { get; }
}
