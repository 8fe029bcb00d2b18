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
        var weights = new Option<string?>("--weights")
        {
            Description = "Checkpoint that describes its own architecture (a Keras .h5 model: needed for keras and the author's models); other models need none.",
        };
        Definition = new Command("layers", "List every module of a model with its output shape, in forward order (weights only for models built from their file).") { model, weights };
        Definition.SetAction((parse, ct) => runner.RunAsync("layers", _ =>
        {
            var name = parse.GetValue(model)!;
            var spec = registry.Resolve(name);
            var file = parse.GetValue(weights);
            if (file is null && spec.Architecture is not null)
            {
                throw new UsageException($"{spec.Name} is built from its checkpoint: give --weights FILE.");
            }

            using var network = file is null ? registry.Create(name) : registry.Load(name, file).Model;
            var input = network is ScalableCache.Core.Models.Keras.KerasModel keras ? keras.Input : spec.Input;
            var layers = LayerInspector.ListLayers(network, input);
            var indices = network is ScalableCache.Core.Models.Keras.KerasModel k
                ? k.LayerNames.Select((n, i) => (n, i)).ToDictionary(p => p.n, p => (int?)p.i, StringComparer.Ordinal)
                : [];
            var result = new
            {
                model = spec.Name,
                input = new[] { input.Channels, input.Height, input.Width },
                pooledFeatures = network.PooledFeaturesLayer,
                layers = layers.Select(l => new { name = l.Name, index = indices.GetValueOrDefault(l.Name), kind = l.Kind, shape = l.OutputShape, features = l.FeatureCount }).ToArray(),
            };
            return Task.FromResult(new CommandOutcome(result, console =>
            {
                var table = new Table().AddColumns("layer", "index", "kind", "output shape", "features");
                foreach (var l in layers)
                {
                    table.AddPlainRow(l.Name, indices.GetValueOrDefault(l.Name)?.ToString(CultureInfo.InvariantCulture) ?? string.Empty, l.Kind, l.ShapeText,
                        l.FeatureCount.ToString("N0", CultureInfo.InvariantCulture));
                }

                console.Write(table);
            }));
        }, ct));
    }

    public Command Definition { get; }
}
