using ScalableCache.Core.Models;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace ScalableCache.Tests;

/// <summary>
/// A tiny smooth image classifier for the robustness tests: <c>conv</c> (2→3 channels, 3×3) → <c>act</c> (tanh) → flatten →
/// <c>fc</c> (→ 3 classes). Smooth everywhere, so finite differences are accurate; tappable modules: conv, act, fc.
/// </summary>
internal sealed class TinyTapNet : ImageClassifier
{
#pragma warning disable IDE1006 // TorchSharp registers fields by name.
    private readonly Conv2d conv;
    private readonly Tanh act;
    private readonly Linear fc;
#pragma warning restore IDE1006

    public TinyTapNet(int side = 4, int classes = 3)
        : base(nameof(TinyTapNet))
    {
        conv = Conv2d(2, 3, 3, padding: 1);
        act = Tanh();
        fc = Linear(3 * side * side, classes);
        ClassCount = classes;
        RegisterComponents();
    }

    public override int ClassCount { get; }

    public override string PooledFeaturesLayer => "act";

    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var x = act.call(conv.call(input));
        return fc.call(x.flatten(1)).MoveToOuterDisposeScope();
    }

    /// <summary>A model with seeded weights (drawn from <paramref name="seed"/>, not the global generator), in eval mode.</summary>
    public static TinyTapNet Create(int seed, ScalarType dtype = ScalarType.Float64)
    {
        var model = new TinyTapNet();
        var random = new Random(seed);
        using (no_grad())
        {
            foreach (var (_, parameter) in model.named_parameters())
            {
                var values = Enumerable.Range(0, (int)parameter.numel()).Select(_ => (float)((random.NextDouble() * 2) - 1) * 0.8f).ToArray();
                parameter.copy_(tensor(values, parameter.shape));
            }
        }

        model.to(dtype);
        model.eval();
        return model;
    }

    /// <summary>The per-channel normalisation the tests use for 2-channel images.</summary>
    public static InputNormalization Normalization { get; } = new([0.4f, 0.6f], [0.25f, 0.5f]);
}

/// <summary>Hand-built classifiers with known adversarial examples (pixels → probabilities, float64).</summary>
internal static class KnownClassifiers
{
    /// <summary>Softmax of <c>x · Wᵀ + b</c> over flattened images.</summary>
    public static Func<Tensor, Tensor> Linear(Tensor weights, Tensor bias) =>
        x => nn.functional.softmax(x.flatten(1).mm(weights.t()) + bias, 1);

    /// <summary>Seeded values uniform in ±[0.5, 1.5].</summary>
    public static double[] SignedWeights(int count, int seed)
    {
        var random = new Random(seed);
        return [.. Enumerable.Range(0, count).Select(_ => (0.5 + random.NextDouble()) * (random.Next(2) == 0 ? -1 : 1))];
    }

    /// <summary>Reproducible uniform values in [low, high).</summary>
    public static double[] Uniform(int count, int seed, double low, double high)
    {
        var random = new Random(seed);
        return [.. Enumerable.Range(0, count).Select(_ => low + ((high - low) * random.NextDouble()))];
    }
}
