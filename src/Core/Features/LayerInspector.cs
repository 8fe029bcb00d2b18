using ScalableCache.Core.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Features;

/// <summary>One tappable module: its name, type and output shape per example.</summary>
/// <param name="Name">Dotted module name (e.g. <c>layer3.2</c>), the name a tap uses.</param>
/// <param name="Kind">Module type (e.g. <c>Conv2d</c>, <c>Sequential</c>, <c>CifarBasicBlock</c>).</param>
/// <param name="OutputShape">Output shape of one example (batch dimension removed), e.g. <c>[64, 8, 8]</c>.</param>
public sealed record LayerInfo(string Name, string Kind, IReadOnlyList<long> OutputShape)
{
    /// <summary>Elements of the flattened output: the dimension this layer contributes to a key.</summary>
    public long FeatureCount => OutputShape.Aggregate(1L, (a, b) => a * b);

    /// <summary>The shape as <c>[a, b, …]</c>.</summary>
    public string ShapeText => "[" + string.Join(", ", OutputShape) + "]";
}

/// <summary>Lists a model's modules in forward order with their output shapes (<c>scache layers</c>).</summary>
public static class LayerInspector
{
    /// <summary>
    /// Runs one forward pass on a zero batch of one <paramref name="input"/>-shaped image on the model's device, with a pre-hook
    /// and a forward hook on every named submodule, and returns the modules that ran, in the order they started (a container
    /// before its children), with their output shapes. Modules that never run in a forward pass are left out.
    /// </summary>
    public static IReadOnlyList<LayerInfo> ListLayers(nn.Module<Tensor, Tensor> model, InputShape input)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(input.Channels, nameof(input));
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(input.Height, nameof(input));
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(input.Width, nameof(input));

        var started = new List<string>();
        var shapes = new Dictionary<string, (string Kind, long[] Shape)>(StringComparer.Ordinal);
        var removers = new List<Action>();
        try
        {
            foreach (var (name, module) in model.named_modules())
            {
                if (module is not nn.Module<Tensor, Tensor> typed)
                {
                    continue;
                }

                var moduleName = name;
                var kind = module.GetType().Name;
                var pre = typed.register_forward_pre_hook((_, x) =>
                {
                    started.Add(moduleName);
                    return x;
                });
                var post = typed.register_forward_hook((_, _, y) =>
                {
                    shapes[moduleName] = (kind, y.shape[1..]);
                    return y;
                });
                removers.Add(pre.remove);
                removers.Add(post.remove);
            }

            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var x = zeros([1, input.Channels, input.Height, input.Width], device: model.ParameterDevice());
            model.call(x);
        }
        finally
        {
            foreach (var remove in removers)
            {
                remove();
            }
        }

        var seen = new HashSet<string>(StringComparer.Ordinal);
        return [.. started.Where(seen.Add).Where(shapes.ContainsKey).Select(n => new LayerInfo(n, shapes[n].Kind, shapes[n].Shape))];
    }

    /// <summary>Names of every module that can be tapped (any named submodule), in registration order.</summary>
    public static IReadOnlyList<string> TappableNames(nn.Module model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return [.. model.named_modules().Where(m => m.module is nn.Module<Tensor, Tensor>).Select(m => m.name)];
    }
}
