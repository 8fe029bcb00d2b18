using System.Globalization;
using ScalableCache.Core.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core;

/// <summary>How a key recipe turns several layers' activations into one unit key.</summary>
public enum KeyNormalization
{
    /// <summary>
    /// Each layer's output is flattened and L2-normalised, the pieces are concatenated in order, and the concatenation is
    /// L2-normalised again (this project's default; for k layers <c>φ·μ = (1/k) Σ_l φ_l·μ_l</c>).
    /// </summary>
    PerLayer = 0,

    /// <summary>The layers' outputs are flattened and concatenated, then L2-normalised once (the paper author's own scripts).</summary>
    Concatenated = 1,
}

/// <summary>
/// How a cache's keys are made from a backbone, as data: the tapped layers in order, how their activations are normalised into
/// one key, the input normalisation of the images and the input size. Stored in every cache file this build writes, so a
/// loaded file rebuilds its own query path.
/// </summary>
public sealed record KeyRecipe
{
    /// <summary>ε of the L2 normalisations: a zero activation stays zero instead of dividing by zero.</summary>
    public const double NormEpsilon = 1e-12;

    /// <summary>Creates a recipe; at least one layer, no empty or repeated names.</summary>
    /// <exception cref="ArgumentException">The layers are empty, blank or repeated, or the input shape is not positive.</exception>
    public KeyRecipe(IReadOnlyList<string> layers, InputNormalization input, InputShape inputShape, KeyNormalization normalization = KeyNormalization.PerLayer)
    {
        ArgumentNullException.ThrowIfNull(layers);
        ArgumentNullException.ThrowIfNull(input);
        if (layers.Count == 0)
        {
            throw new ArgumentException("A key recipe needs at least one layer.", nameof(layers));
        }

        if (layers.Any(string.IsNullOrWhiteSpace))
        {
            throw new ArgumentException("A layer name of the key recipe is empty.", nameof(layers));
        }

        var repeated = layers.GroupBy(l => l, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1);
        if (repeated is not null)
        {
            throw new ArgumentException($"Layer '{repeated.Key}' appears twice in the key recipe.", nameof(layers));
        }

        if (inputShape.Channels < 1 || inputShape.Height < 1 || inputShape.Width < 1)
        {
            throw new ArgumentException($"The input shape {inputShape} is not positive.", nameof(inputShape));
        }

        if (inputShape.Channels != input.Channels)
        {
            throw new ArgumentException(
                $"The input shape has {inputShape.Channels} channels but the input normalisation has {input.Channels}.", nameof(inputShape));
        }

        if (input.PixelShape is { } pixels && pixels != inputShape)
        {
            throw new ArgumentException(
                $"The input shape is {inputShape} but the per-pixel input normalisation is for {pixels} images.", nameof(inputShape));
        }

        if (!Enum.IsDefined(normalization))
        {
            throw new ArgumentException($"Unknown key normalisation {(int)normalization}.", nameof(normalization));
        }

        Layers = [.. layers];
        Input = input;
        InputShape = inputShape;
        Normalization = normalization;
    }

    /// <summary>Tapped module names, in key order.</summary>
    public IReadOnlyList<string> Layers { get; }

    /// <summary>The images' input normalisation (pixels / 255, then mean and std per channel or per pixel).</summary>
    public InputNormalization Input { get; }

    /// <summary>Shape of one input image.</summary>
    public InputShape InputShape { get; }

    /// <summary>How the layers' activations become one unit key.</summary>
    public KeyNormalization Normalization { get; }

    /// <summary>The same recipe over other layers.</summary>
    public KeyRecipe WithLayers(IReadOnlyList<string> layers) => new(layers, Input, InputShape, Normalization);

    /// <summary>
    /// Unit keys <c>[b, D]</c> from the tapped activations (one per layer, in <see cref="Layers"/> order, each <c>[b, …]</c>),
    /// in the autograd graph of the activations. Joins the caller's dispose scope.
    /// </summary>
    public Tensor Compose(IReadOnlyList<Tensor> activations)
    {
        ArgumentNullException.ThrowIfNull(activations);
        return Compose(activations, Normalization);
    }

    /// <summary>Unit keys from activations under <paramref name="normalization"/> (see <see cref="Compose(IReadOnlyList{Tensor})"/>).</summary>
    public static Tensor Compose(IReadOnlyList<Tensor> activations, KeyNormalization normalization)
    {
        ArgumentNullException.ThrowIfNull(activations);
        if (activations.Count == 0)
        {
            throw new ArgumentException("At least one activation is needed.", nameof(activations));
        }

        using var scope = NewDisposeScope();
        var flat = activations.Select(a => a.reshape(a.shape[0], -1)).ToArray();
        if (normalization == KeyNormalization.PerLayer)
        {
            flat = [.. flat.Select(f => nn.functional.normalize(f, 2, 1, NormEpsilon))];
        }

        var keys = flat.Length == 1 ? flat[0] : cat(flat, 1);
        return nn.functional.normalize(keys, 2, 1, NormEpsilon).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Unit keys from per-layer unit keys <c>u_l</c> and the activations' L2 norms <c>n_l</c> <c>[b]</c> (what
    /// <see cref="Evaluation.PerLayerKeys"/> stores): the same keys <see cref="Compose(IReadOnlyList{Tensor})"/> makes from the
    /// activations, since each activation is <c>n_l u_l</c>. Computed in float32; joins the caller's dispose scope.
    /// </summary>
    public static Tensor ComposeUnitParts(IReadOnlyList<Tensor> unitParts, IReadOnlyList<Tensor> norms, KeyNormalization normalization)
    {
        ArgumentNullException.ThrowIfNull(unitParts);
        ArgumentNullException.ThrowIfNull(norms);
        if (unitParts.Count == 0 || unitParts.Count != norms.Count)
        {
            throw new ArgumentException($"{unitParts.Count} unit parts and {norms.Count} norms; expected one norm per part, at least one part.");
        }

        var widths = unitParts.Select(p => p.shape[1]).ToArray();
        return ComposeColumns(unitParts[0].shape[0], widths, norms, normalization, (i, keys, column) => keys.narrow(1, column, widths[i]).copy_(unitParts[i]));
    }

    /// <summary>
    /// The keys of <paramref name="widths"/>.Count layers, <c>[rows, Σ widths]</c> float32, composed in one tensor:
    /// <paramref name="fill"/> <c>(layer, keys, column)</c> writes layer <c>layer</c>'s unit keys into columns
    /// <c>[column, column + widths[layer])</c> of <c>keys</c>; each is then weighted by its norms (<see cref="KeyNormalization.Concatenated"/>)
    /// and the rows normalised in place: the values of normalising the concatenation (<see cref="ComposeUnitParts"/>), one
    /// <c>[rows, D]</c> tensor. Joins the caller's dispose scope.
    /// </summary>
    internal static Tensor ComposeColumns(
        long rows, IReadOnlyList<long> widths, IReadOnlyList<Tensor> norms, KeyNormalization normalization, Action<int, Tensor, long> fill)
    {
        ArgumentNullException.ThrowIfNull(widths);
        ArgumentNullException.ThrowIfNull(norms);
        ArgumentNullException.ThrowIfNull(fill);
        using var scope = NewDisposeScope();
        var keys = empty([rows, widths.Sum()], ScalarType.Float32);
        long column = 0;
        for (var i = 0; i < widths.Count; i++)
        {
            fill(i, keys, column);
            if (normalization == KeyNormalization.Concatenated)
            {
                keys.narrow(1, column, widths[i]).mul_(norms[i].to_type(ScalarType.Float32).unsqueeze(1));
            }

            column += widths[i];
        }

        return NormalizeRowsInPlace(keys).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Divides each row of <paramref name="keys"/> (float32 <c>[b, D]</c>, owned by the caller and not needed unnormalised) by its
    /// L2 norm, at least <see cref="NormEpsilon"/>, in place: the values <c>nn.functional.normalize(keys, 2, 1, NormEpsilon)</c>
    /// computes (the same norm, then the same division), without a second <c>[b, D]</c> tensor. Returns <paramref name="keys"/>.
    /// </summary>
    internal static Tensor NormalizeRowsInPlace(Tensor keys)
    {
        ArgumentNullException.ThrowIfNull(keys);
        using var denominator = keys.norm(1, true).clamp_min_(NormEpsilon);
        return keys.div_(denominator);
    }

    /// <summary>
    /// What <paramref name="backbone"/> produces under this recipe, from one forward pass of a zero image: its class count (the
    /// width of its output) and the key dimension D (the flattened widths of <see cref="Layers"/>).
    /// </summary>
    /// <exception cref="ArgumentException">A layer is not a module of the backbone; the message lists the valid names.</exception>
    public (int ClassCount, int Dimension) Probe(nn.Module<Tensor, Tensor> backbone)
    {
        ArgumentNullException.ThrowIfNull(backbone);
        using var tap = new Features.LayerTapExtractor(backbone, Layers, Normalization);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var x = zeros([1, InputShape.Channels, InputShape.Height, InputShape.Width], device: backbone.ParameterDevice());
        var (logits, keys) = tap.Forward(x);
        return ((int)logits.shape[^1], checked((int)keys.shape[1]));
    }

    /// <summary>The recipe in words, for people and for the cache file's normalisation text.</summary>
    public string Describe()
    {
        var keys = Normalization == KeyNormalization.PerLayer
            ? "each layer's output flattened and L2-normalised, layers concatenated in order, then L2-normalised again"
            : "the layers' outputs flattened and concatenated in order, then L2-normalised once";
        return $"input: {InputShape} images, {Input.Describe()}; keys: {keys}";
    }

    /// <inheritdoc />
    public bool Equals(KeyRecipe? other) =>
        other is not null && Layers.SequenceEqual(other.Layers, StringComparer.Ordinal) && Input.Equals(other.Input)
        && InputShape == other.InputShape && Normalization == other.Normalization;

    /// <inheritdoc />
    public override int GetHashCode()
    {
        var hash = default(HashCode);
        foreach (var layer in Layers)
        {
            hash.Add(layer, StringComparer.Ordinal);
        }

        hash.Add(Input);
        hash.Add(InputShape);
        hash.Add(Normalization);
        return hash.ToHashCode();
    }
}
