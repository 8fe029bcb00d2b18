using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Robustness;

/// <summary>
/// A minimal-perturbation attack on a classifier given as <c>pixels → probabilities</c> (Foolbox 1 semantics: the perturbation
/// grows until the predicted label differs from the reference label; the smallest successful one wins).
/// </summary>
/// <remarks>
/// Target-agnostic: the classifier may be the network, a cache model or a cache-only model (<see cref="CacheModel.Classifier"/>).
/// It receives pixels <c>[b, C, H, W]</c> in <c>[0, 1]</c> on the device of the images, and returns probabilities <c>[b, K]</c>;
/// gradient-based attacks call it with gradients enabled and differentiate <c>−log p_label</c> with respect to the pixels.
/// Perturbed images are clipped to <c>[0, 1]</c> before they are classified. Implementations are stateless and thread-safe,
/// but a classifier usually is not: run one attack per classifier at a time.
/// </remarks>
public interface IAdversarialAttack
{
    /// <summary>Short name: <c>fgsm</c>, <c>ifgsm</c>, <c>pixel</c>, <c>blur</c>.</summary>
    string Name { get; }

    /// <summary>
    /// Attacks each image of <paramref name="pixels"/> <c>[n, C, H, W]</c> (in <c>[0, 1]</c>) whose reference label is the matching
    /// entry of <paramref name="labels"/> <c>[n]</c> (int64; usually the classifier's own clean prediction). Inputs are not disposed.
    /// </summary>
    AttackResult Run(Func<Tensor, Tensor> classifier, Tensor pixels, Tensor labels, CancellationToken cancellationToken = default);
}

/// <summary>
/// The outcome of an attack on n images: which succeeded, the adversarial images and <c>ρ_adv = ‖x_adv − x‖₂ / ‖x‖₂</c>.
/// Images with no success are kept (unchanged) in <see cref="Adversarial"/>, counted in <see cref="FailureCount"/> and left out of
/// <see cref="MeanRho"/>. Owns <see cref="Adversarial"/>.
/// </summary>
public sealed class AttackResult : IDisposable
{
    /// <summary>Keeps a detached alias of <paramref name="adversarial"/> outside every dispose scope (the caller may dispose its own handle).</summary>
    /// <param name="attack">The attack's name.</param>
    /// <param name="adversarial">Adversarial images <c>[n, C, H, W]</c>; the original image where the attack failed.</param>
    /// <param name="success">Per image, whether the label changed.</param>
    /// <param name="rho">Per image, ρ_adv of the adversarial image (NaN where the attack failed).</param>
    /// <param name="strength">Per image, the attack parameter that succeeded (ε, σ in pixels, or the 1-based number of pixels tried), NaN on failure.</param>
    public AttackResult(string attack, Tensor adversarial, IReadOnlyList<bool> success, IReadOnlyList<double> rho, IReadOnlyList<double> strength)
    {
        ArgumentNullException.ThrowIfNull(attack);
        ArgumentNullException.ThrowIfNull(adversarial);
        ArgumentNullException.ThrowIfNull(success);
        ArgumentNullException.ThrowIfNull(rho);
        ArgumentNullException.ThrowIfNull(strength);
        if (adversarial.shape[0] != success.Count || rho.Count != success.Count || strength.Count != success.Count)
        {
            throw new ArgumentException("One adversarial image, success flag, ρ and strength per attacked image are needed.");
        }

        Attack = attack;
        Adversarial = adversarial.detach().DetachFromDisposeScope();
        Success = [.. success];
        Rho = [.. rho];
        Strength = [.. strength];
    }

    /// <summary>The attack's name.</summary>
    public string Attack { get; }

    /// <summary>Adversarial images <c>[n, C, H, W]</c> in <c>[0, 1]</c> (the original where the attack failed).</summary>
    public Tensor Adversarial { get; }

    /// <summary>Per image: whether the predicted label changed.</summary>
    public IReadOnlyList<bool> Success { get; }

    /// <summary>Per image: ρ_adv, NaN where the attack failed.</summary>
    public IReadOnlyList<double> Rho { get; }

    /// <summary>Per image: the successful ε / σ / number of pixels tried, NaN where the attack failed.</summary>
    public IReadOnlyList<double> Strength { get; }

    /// <summary>Number of images attacked.</summary>
    public int Count => Success.Count;

    /// <summary>Images whose label changed.</summary>
    public int SuccessCount => Success.Count(s => s);

    /// <summary>Images with no success: discarded from <see cref="MeanRho"/>.</summary>
    public int FailureCount => Count - SuccessCount;

    /// <summary>Mean ρ_adv over the successful images; NaN when none succeeded.</summary>
    public double MeanRho => SuccessCount == 0 ? double.NaN : Rho.Where((_, i) => Success[i]).Average();

    /// <summary>Row indices of the successful images, ascending.</summary>
    public IReadOnlyList<int> SuccessfulIndices => [.. Enumerable.Range(0, Count).Where(i => Success[i])];

    /// <inheritdoc />
    public void Dispose() => Adversarial.Dispose();
}

/// <summary>The perturbation size the paper reports.</summary>
public static class AdversarialDistance
{
    /// <summary>
    /// <c>ρ_adv = ‖x_adv − x‖₂ / ‖x‖₂</c> per image for <paramref name="original"/> and <paramref name="adversarial"/>
    /// <c>[n, …]</c> (computed in float64; 0 where both are zero images).
    /// </summary>
    public static double[] Rho(Tensor original, Tensor adversarial)
    {
        ArgumentNullException.ThrowIfNull(original);
        ArgumentNullException.ThrowIfNull(adversarial);
        if (!original.shape.SequenceEqual(adversarial.shape))
        {
            throw new ArgumentException(
                $"Shapes differ: [{string.Join(", ", original.shape)}] and [{string.Join(", ", adversarial.shape)}].", nameof(adversarial));
        }

        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var x = original.detach().to_type(ScalarType.Float64).cpu().flatten(1);
        var a = adversarial.detach().to_type(ScalarType.Float64).cpu().flatten(1);
        var difference = (a - x).norm(1).data<double>().ToArray();
        var norm = x.norm(1).data<double>().ToArray();
        var rho = new double[norm.Length];
        for (var i = 0; i < rho.Length; i++)
        {
            rho[i] = norm[i] > 0 ? difference[i] / norm[i] : difference[i] > 0 ? double.PositiveInfinity : 0;
        }

        return rho;
    }
}
