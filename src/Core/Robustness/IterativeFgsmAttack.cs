using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Robustness;

/// <summary>Settings of <see cref="IterativeFgsmAttack"/>.</summary>
public sealed class IterativeFgsmOptions
{
    /// <summary>Number of per-step ε values, <c>linspace(0, MaxStepEpsilon, Epsilons + 1)[1:]</c> (Foolbox 1 default: 100).</summary>
    public int Epsilons { get; set; } = 100;

    /// <summary>Largest per-step ε in units of the [0, 1] pixel range (Foolbox 1 default: 1 / steps = 0.1).</summary>
    public double MaxStepEpsilon { get; set; } = 0.1;

    /// <summary>Gradient-sign steps per ε (Foolbox 1 default: 10).</summary>
    public int Steps { get; set; } = 10;

    /// <summary>Images per gradient pass.</summary>
    public int BatchSize { get; set; } = 32;

    internal void Validate()
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(Epsilons, 1, nameof(Epsilons));
        ArgumentOutOfRangeException.ThrowIfLessThan(Steps, 1, nameof(Steps));
        ArgumentOutOfRangeException.ThrowIfLessThan(BatchSize, 1, nameof(BatchSize));
        if (!(MaxStepEpsilon > 0 && double.IsFinite(MaxStepEpsilon)))
        {
            throw new ArgumentOutOfRangeException(nameof(MaxStepEpsilon), MaxStepEpsilon, "MaxStepEpsilon must be finite and positive.");
        }
    }
}

/// <summary>
/// Iterative FGSM with Foolbox 1 <c>IterativeGradientSignAttack</c> semantics: for each per-step ε of the grid (ascending),
/// start from the clean image and take <see cref="IterativeFgsmOptions.Steps"/> steps <c>x ← clip(x + ε·sign(∇ₓ(−log p_label)), 0, 1)</c>,
/// checking the label after every step.
/// </summary>
/// <remarks>
/// Foolbox runs every ε and keeps the adversarial with the smallest distance seen; here an image stops at the first step of the
/// first ε that changes its label (ε ascending, so the perturbation found is the smallest but for rare non-monotone cases, and
/// the work is a small fraction of 100 × 10 gradients). <see cref="AttackResult.Strength"/> is the per-step ε.
/// </remarks>
public sealed class IterativeFgsmAttack(IterativeFgsmOptions? options = null) : IAdversarialAttack
{
    private readonly IterativeFgsmOptions _options = options ?? new IterativeFgsmOptions();

    /// <inheritdoc />
    public string Name => "ifgsm";

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
        var adversarial = x.clone();
        var strength = Enumerable.Repeat(double.NaN, n).ToArray();
        var grid = AttackEngine.Grid(_options.MaxStepEpsilon, _options.Epsilons);

        for (var chunk = 0; chunk < n; chunk += _options.BatchSize)
        {
            var active = Enumerable.Range(chunk, Math.Min(_options.BatchSize, n - chunk)).ToList();
            foreach (var epsilon in grid)
            {
                if (active.Count == 0)
                {
                    break;
                }

                using var inner = NewDisposeScope();
                var rows = tensor(active.Select(i => (long)i).ToArray(), device: x.device);
                var current = x.index_select(0, rows);
                var currentLabels = tensor(active.Select(i => y[i]).ToArray(), device: x.device);
                var members = active.ToList();
                for (var step = 1; step <= _options.Steps && members.Count > 0; step++)
                {
                    cancellationToken.ThrowIfCancellationRequested();
                    var (gradient, predictions) = AttackEngine.LossGradient(classifier, current, currentLabels);
                    if (step > 1)
                    {
                        // The gradient pass also classified the previous step's images.
                        (current, currentLabels, gradient, members) = Harvest(current, currentLabels, gradient, members, predictions, epsilon);
                        if (members.Count == 0)
                        {
                            break;
                        }
                    }

                    current = (current + (gradient.sign() * epsilon)).clamp(0, 1);
                    if (step == _options.Steps)
                    {
                        var last = AttackEngine.Predict(classifier, current);
                        (_, _, _, members) = Harvest(current, currentLabels, gradient, members, last, epsilon);
                    }
                }

                active = [.. active.Where(i => double.IsNaN(strength[i]))];
            }
        }

        var success = strength.Select(s => !double.IsNaN(s)).ToArray();
        var rho = AdversarialDistance.Rho(x, adversarial);
        return new AttackResult(Name, adversarial, success, [.. rho.Select((r, i) => success[i] ? r : double.NaN)], strength);

        // Records the images whose label changed and keeps the others.
        (Tensor, Tensor, Tensor, List<int>) Harvest(Tensor images, Tensor imageLabels, Tensor gradient, List<int> members, long[] predictions, double epsilon)
        {
            var keep = new List<long>();
            var kept = new List<int>();
            for (var j = 0; j < members.Count; j++)
            {
                if (predictions[j] != y[members[j]])
                {
                    adversarial[members[j]].copy_(images[j]);
                    strength[members[j]] = epsilon;
                }
                else
                {
                    keep.Add(j);
                    kept.Add(members[j]);
                }
            }

            if (kept.Count == members.Count)
            {
                return (images, imageLabels, gradient, members);
            }

            var index = tensor(keep.ToArray(), dtype: ScalarType.Int64, device: images.device);
            return (images.index_select(0, index), imageLabels.index_select(0, index), gradient.index_select(0, index), kept);
        }
    }
}
