using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Robustness;

/// <summary>Settings of <see cref="FgsmAttack"/>.</summary>
public sealed class FgsmOptions
{
    /// <summary>Number of ε values tried, <c>linspace(0, MaxEpsilon, Epsilons + 1)[1:]</c> (Foolbox 1 default: 1000).</summary>
    public int Epsilons { get; set; } = 1000;

    /// <summary>Largest ε, in units of the [0, 1] pixel range (Foolbox 1 default 1; the paper's analysis uses 0.5).</summary>
    public double MaxEpsilon { get; set; } = 0.5;

    /// <summary>
    /// Foolbox 1's refinement: when the first success is among the first 20 ε, search again on <c>linspace(0, ε, 21)[1:]</c>
    /// and keep the smaller perturbation.
    /// </summary>
    public bool Refine { get; set; } = true;

    /// <summary>Images per gradient pass and candidates per forward pass.</summary>
    public int BatchSize { get; set; } = 64;

    internal void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(Epsilons, 1, nameof(Epsilons));
        ArgumentOutOfRangeException.ThrowIfLessThan(BatchSize, 1, nameof(BatchSize));
        if (!(MaxEpsilon > 0 && double.IsFinite(MaxEpsilon)))
        {
            throw new ArgumentOutOfRangeException(nameof(MaxEpsilon), MaxEpsilon, "MaxEpsilon must be finite and positive.");
        }
    }
}

/// <summary>
/// The fast gradient sign method with Foolbox 1 <c>GradientSignAttack</c> semantics: one gradient g = ∇ₓ(−log p_label) at the
/// clean image, then <c>x + ε·sign(g)</c> (clipped to [0, 1]) for ε increasing over the grid until the predicted label differs
/// from the reference label; the smallest successful ε wins (see <see cref="FgsmOptions.Refine"/>).
/// </summary>
public sealed class FgsmAttack(FgsmOptions? options = null) : IAdversarialAttack
{
    /// <summary>Foolbox refines only when the first success is among this many first grid values.</summary>
    public const int RefineBelow = 20;

    private readonly FgsmOptions _options = options ?? new FgsmOptions();

    /// <inheritdoc />
    public string Name => "fgsm";

    /// <inheritdoc />
    public AttackResult Run(Func<Tensor, Tensor> classifier, Tensor pixels, Tensor labels, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(classifier);
        AttackEngine.CheckInputs(pixels, labels);
        _options.Validate();
        using var scope = NewDisposeScope();
        var n = (int)pixels.shape[0];
        var x = pixels.detach();
        var y = AttackEngine.Labels(labels);
        var signs = new Tensor[n == 0 ? 0 : ((n - 1) / _options.BatchSize) + 1];
        for (var b = 0; b < signs.Length; b++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var start = b * _options.BatchSize;
            var count = Math.Min(_options.BatchSize, n - start);
            var (gradient, _) = AttackEngine.LossGradient(classifier, x.narrow(0, start, count), labels.narrow(0, start, count));
            signs[b] = gradient.sign();
        }

        var sign = n == 0 ? zeros_like(x) : cat(signs, 0);
        var grid = AttackEngine.Grid(_options.MaxEpsilon, _options.Epsilons);
        Tensor Build(int image, double[] epsilons, int start, int count)
        {
            var eps = tensor(epsilons.AsSpan(start, count).ToArray(), [count, 1, 1, 1], dtype: x.dtype, device: x.device);
            return (x[image].unsqueeze(0) + (eps * sign[image].unsqueeze(0))).clamp(0, 1);
        }

        var first = AttackEngine.FirstSuccess(classifier, y, Enumerable.Repeat(grid.Length, n).ToArray(),
            (i, s, c) => Build(i, grid, s, c), _options.BatchSize, cancellationToken);
        var epsilon = first.Select(f => f >= 0 ? grid[f] : double.NaN).ToArray();

        if (_options.Refine)
        {
            var refine = Enumerable.Range(0, n).Where(i => first[i] >= 0 && first[i] < RefineBelow).ToArray();
            if (refine.Length > 0)
            {
                var fine = refine.Select(i => AttackEngine.Grid(epsilon[i], RefineBelow)).ToArray();
                var again = AttackEngine.FirstSuccess(classifier, [.. refine.Select(i => y[i])], Enumerable.Repeat(RefineBelow, refine.Length).ToArray(),
                    (r, s, c) => Build(refine[r], fine[r], s, c), _options.BatchSize, cancellationToken);
                for (var r = 0; r < refine.Length; r++)
                {
                    if (again[r] >= 0)
                    {
                        epsilon[refine[r]] = Math.Min(epsilon[refine[r]], fine[r][again[r]]);
                    }
                }
            }
        }

        var applied = tensor(epsilon.Select(e => double.IsNaN(e) ? 0 : e).ToArray(), [n, 1, 1, 1], dtype: x.dtype, device: x.device);
        var adversarial = (x + (applied * sign)).clamp(0, 1);
        var success = epsilon.Select(e => !double.IsNaN(e)).ToArray();
        var rho = AdversarialDistance.Rho(x, adversarial);
        return new AttackResult(Name, adversarial, success, [.. rho.Select((r, i) => success[i] ? r : double.NaN)], epsilon);
    }
}
