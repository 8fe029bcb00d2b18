using System.Diagnostics;
using ScalableCache.Core.Robustness;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Host.Experiments;

/// <summary>Inputs of <c>scache attack</c>.</summary>
/// <param name="Attacks">fgsm, ifgsm, pixel and/or blur, run in this order over the same prepared models and images.</param>
/// <param name="Source">The model the adversarial images are made on.</param>
/// <param name="Targets">Models the source network's adversarial images are transferred to (the source itself is always included, as the gray-box row).</param>
/// <param name="Images">Seeded random images of the report half.</param>
/// <param name="Grid">Grid size of the attack (ε / σ steps, or pixels tried), or null for the attack's default.</param>
/// <param name="Backbone">How each backbone's cache is set up (its <see cref="RobustnessRequest.Model"/> is replaced per model).</param>
internal sealed record AttackRequest(IReadOnlyList<string> Attacks, string Source, IReadOnlyList<string> Targets, int Images, int? Grid, RobustnessRequest Backbone);

/// <summary>One white-box row (Table 3): an attack on one variant of the source, against its own clean predictions.</summary>
/// <param name="Model">Backbone.</param>
/// <param name="Variant">baseline, cache or cache-only.</param>
/// <param name="Theta">θ of the variant (NaN for the baseline).</param>
/// <param name="Lambda">λ of the variant.</param>
/// <param name="Images">Images attacked.</param>
/// <param name="CleanAccuracy">Accuracy of the variant on the clean images.</param>
/// <param name="Successes">Images whose label changed.</param>
/// <param name="Failures">Images with no success (discarded from the means).</param>
/// <param name="MeanRho">Mean ρ_adv = ‖x_adv − x‖₂/‖x‖₂ over the successes.</param>
/// <param name="MedianRho">Median ρ_adv over the successes.</param>
/// <param name="MeanStrength">Mean successful ε / σ / pixels tried.</param>
/// <param name="Rho">Per image ρ_adv (NaN where the attack failed).</param>
/// <param name="Seconds">Wall time of the attack.</param>
internal sealed record WhiteBoxRow(
    string Model, string Variant, double Theta, double Lambda, int Images, double CleanAccuracy, int Successes, int Failures, double MeanRho,
    double MedianRho, double MeanStrength, IReadOnlyList<double> Rho, double Seconds);

/// <summary>One transfer row (Tables 2 and 4): the source network's adversarial images fed to a target's variants.</summary>
/// <param name="Target">The target backbone (the source itself: gray-box, Table 2; another model: transfer, Table 4).</param>
/// <param name="Variant">baseline, cache or cache-only.</param>
/// <param name="Theta">θ of the variant (NaN for the baseline).</param>
/// <param name="Lambda">λ of the variant.</param>
/// <param name="Images">Adversarial images evaluated (the source attack's successes).</param>
/// <param name="CleanAccuracy">Accuracy (true labels) on the clean versions of those images.</param>
/// <param name="AdversarialAccuracy">Accuracy (true labels) on the adversarial images.</param>
internal sealed record TransferRow(string Target, string Variant, double Theta, double Lambda, int Images, double CleanAccuracy, double AdversarialAccuracy);

/// <summary>The whole analysis for one attack.</summary>
internal sealed record AttackReport(
    string Attack,
    string Source,
    IReadOnlyList<string> Targets,
    int Seed,
    int Images,
    IReadOnlyList<int> ImageIndices,
    string Labels,
    IReadOnlyDictionary<string, object> AttackSettings,
    IReadOnlyList<WhiteBoxRow> WhiteBox,
    int TransferSourceSuccesses,
    int TransferSourceFailures,
    IReadOnlyList<TransferRow> Transfer,
    IReadOnlyList<RobustnessBackboneInfo> Backbones,
    IReadOnlyDictionary<string, double> Seconds);

/// <summary>
/// Tables 2–4 of the paper for one attack: white-box attacks on the source's baseline, cache and cache-only models (ρ_adv), and
/// the source network's adversarial images fed to the baseline, cache and cache-only models of the source (gray-box) and of each
/// target (transfer).
/// </summary>
internal sealed class AttackExperiment(RobustnessExperiment robustness)
{
    /// <summary>The attacks by CLI name.</summary>
    public static IReadOnlyList<string> AttackNames { get; } = ["fgsm", "ifgsm", "pixel", "blur"];

    /// <summary>The attack for a CLI name; <paramref name="grid"/> overrides its grid size.</summary>
    public static IAdversarialAttack Create(string name, int? grid, int seed) => name.Trim().ToLowerInvariant() switch
    {
        "fgsm" => new FgsmAttack(new FgsmOptions { Epsilons = grid ?? new FgsmOptions().Epsilons }),
        "ifgsm" => new IterativeFgsmAttack(new IterativeFgsmOptions { Epsilons = grid ?? new IterativeFgsmOptions().Epsilons }),
        "pixel" => new SinglePixelAttack(new SinglePixelOptions { MaxPixels = grid ?? new SinglePixelOptions().MaxPixels, Seed = seed }),
        "blur" => new GaussianBlurAttack(new GaussianBlurOptions { Steps = grid ?? new GaussianBlurOptions().Steps }),
        _ => throw new Cli.UsageException($"Unknown attack '{name}'. Known attacks: {string.Join(", ", AttackNames)}."),
    };

    /// <summary>The grid settings an attack runs with, for the report.</summary>
    public static IReadOnlyDictionary<string, object> Settings(string name, int? grid) => name.Trim().ToLowerInvariant() switch
    {
        "fgsm" => new Dictionary<string, object>
        {
            ["epsilons"] = grid ?? new FgsmOptions().Epsilons, ["maxEpsilon"] = new FgsmOptions().MaxEpsilon, ["refineBelow"] = FgsmAttack.RefineBelow,
        },
        "ifgsm" => new Dictionary<string, object>
        {
            ["epsilons"] = grid ?? new IterativeFgsmOptions().Epsilons, ["maxStepEpsilon"] = new IterativeFgsmOptions().MaxStepEpsilon,
            ["steps"] = new IterativeFgsmOptions().Steps,
        },
        "pixel" => new Dictionary<string, object> { ["maxPixels"] = grid ?? new SinglePixelOptions().MaxPixels, ["values"] = "bounds 0 and 1" },
        "blur" => new Dictionary<string, object> { ["steps"] = grid ?? new GaussianBlurOptions().Steps, ["maxSigma"] = "max(H, W)", ["truncate"] = GaussianBlur.DefaultTruncate },
        _ => throw new Cli.UsageException($"Unknown attack '{name}'. Known attacks: {string.Join(", ", AttackNames)}."),
    };

    /// <summary>
    /// Runs every attack of <paramref name="request"/> in order. The source and target caches are built once and shared by all
    /// attacks, so several attacks cost one setup; each attack gets its own report. <paramref name="completed"/>, when given, receives
    /// the reports so far after each attack, the last one included, so a long run that is stopped keeps what it finished.
    /// </summary>
    public async Task<IReadOnlyList<AttackReport>> RunAsync(
        AttackRequest request, CancellationToken cancellationToken, Action<IReadOnlyList<AttackReport>>? completed = null)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request.Attacks.Count == 0)
        {
            throw new Cli.UsageException($"Name at least one attack. Known attacks: {string.Join(", ", AttackNames)}.");
        }

        var attacks = request.Attacks.Select(name => (Name: name, Attack: Create(name, request.Grid, request.Backbone.Seed))).ToList();
        var setup = Stopwatch.StartNew();
        var prepared = new List<RobustnessBackbone>();
        try
        {
            var source = await robustness.PrepareAsync(request.Backbone with { Model = request.Source }, cancellationToken).ConfigureAwait(false);
            prepared.Add(source);
            foreach (var name in request.Targets.Where(t => !string.Equals(t, request.Source, StringComparison.OrdinalIgnoreCase))
                         .Distinct(StringComparer.OrdinalIgnoreCase))
            {
                cancellationToken.ThrowIfCancellationRequested();
                prepared.Add(await robustness.PrepareAsync(request.Backbone with { Model = name }, cancellationToken).ConfigureAwait(false));
            }

            var setupSeconds = setup.Elapsed.TotalSeconds;
            var (indices, pixels, labels) = RobustnessExperiment.Sample(source, request.Images, request.Backbone.Seed);
            using var cleanPixels = pixels;
            using var trueLabels = labels;
            var truth = trueLabels.cpu().data<long>().ToArray();
            var reports = new List<AttackReport>();
            foreach (var (name, attack) in attacks)
            {
                var report = RunOne(request, name, attack, prepared, indices, cleanPixels, truth, cancellationToken);
                reports.Add(report with { Seconds = new Dictionary<string, double>(report.Seconds) { ["setup (shared)"] = setupSeconds } });
                completed?.Invoke(reports);
            }

            return reports;
        }
        finally
        {
            foreach (var backbone in prepared)
            {
                backbone.Dispose();
            }
        }
    }

    private AttackReport RunOne(
        AttackRequest request, string name, IAdversarialAttack attack, IReadOnlyList<RobustnessBackbone> prepared, int[] indices, Tensor cleanPixels,
        long[] truth, CancellationToken cancellationToken)
    {
        var source = prepared[0];
        var seconds = new Dictionary<string, double>();
        var total = Stopwatch.StartNew();
        var progress = robustness.Session.Progress;
        var batch = Math.Max(1, Math.Min(128, robustness.Session.BatchSize));
        var whiteBox = new List<WhiteBoxRow>();
        var transfer = new List<TransferRow>();

        // White box (Table 3): each variant attacked against its own clean prediction.
        AttackResult? networkAttack = null;
        try
        {
            foreach (var variant in source.Variants)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var classifier = source.Cache.Classifier(variant);
                var clean = RobustnessExperiment.Predict(classifier, cleanPixels, batch);
                using var reference = tensor(clean, device: cleanPixels.device);
                var watch = Stopwatch.StartNew();
                var result = attack.Run(classifier, cleanPixels, reference, cancellationToken);
                var elapsed = watch.Elapsed.TotalSeconds;
                var successes = result.Rho.Where((_, i) => result.Success[i]).Order().ToArray();
                whiteBox.Add(new WhiteBoxRow(
                    source.Name, variant.Name, variant.UsesMemory ? variant.Theta : double.NaN, variant.Lambda, result.Count,
                    RobustnessExperiment.Accuracy(clean, truth), result.SuccessCount, result.FailureCount, result.MeanRho,
                    successes.Length == 0 ? double.NaN : successes[successes.Length / 2],
                    result.SuccessCount == 0 ? double.NaN : result.Strength.Where((_, i) => result.Success[i]).Average(), result.Rho, elapsed));
                progress.Status(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                    $"{attack.Name} on {source.Name} {variant}: {result.SuccessCount}/{result.Count} fooled, mean ρ_adv {result.MeanRho:G4} ({elapsed:0.0} s)"));
                if (!variant.UsesMemory)
                {
                    networkAttack = result;
                }
                else
                {
                    result.Dispose();
                }
            }

            seconds["whiteBox"] = total.Elapsed.TotalSeconds;

            // Transfer (Tables 2 and 4): the source network's successful adversarial images, fed to every variant of every target.
            var kept = networkAttack!.SuccessfulIndices;
            using var rows = tensor(kept.Select(i => (long)i).ToArray(), device: cleanPixels.device);
            using var adversarial = networkAttack.Adversarial.index_select(0, rows);
            using var originals = cleanPixels.index_select(0, rows);
            var keptTruth = kept.Select(i => truth[i]).ToArray();
            foreach (var target in prepared)
            {
                cancellationToken.ThrowIfCancellationRequested();
                if (target.Model.Device == adversarial.device)
                {
                    transfer.AddRange(TransferRows(target, originals, adversarial, keptTruth, batch));
                    continue;
                }

                // Tensor.to returns the tensor itself on the same device, so only a real move is disposed here.
                using var moved = adversarial.to(target.Model.Device);
                using var movedOriginals = originals.to(target.Model.Device);
                transfer.AddRange(TransferRows(target, movedOriginals, moved, keptTruth, batch));
            }

            seconds["total"] = total.Elapsed.TotalSeconds;
            return new AttackReport(
                attack.Name, source.Name, request.Targets, request.Backbone.Seed, indices.Length, indices,
                "white box: each variant's own clean prediction; transfer: true labels", Settings(name, request.Grid),
                whiteBox, networkAttack.SuccessCount, networkAttack.FailureCount, transfer, [.. prepared.Select(p => p.Info)], seconds);
        }
        finally
        {
            networkAttack?.Dispose();
        }
    }

    private IEnumerable<TransferRow> TransferRows(RobustnessBackbone target, Tensor originals, Tensor adversarial, long[] truth, int batch)
    {
        foreach (var variant in target.Variants)
        {
            var classifier = target.Cache.Classifier(variant);
            var clean = RobustnessExperiment.Predict(classifier, originals, batch);
            var attacked = RobustnessExperiment.Predict(classifier, adversarial, batch);
            var row = new TransferRow(
                target.Name, variant.Name, variant.UsesMemory ? variant.Theta : double.NaN, variant.Lambda, truth.Length,
                RobustnessExperiment.Accuracy(clean, truth), RobustnessExperiment.Accuracy(attacked, truth));
            robustness.Session.Progress.Status(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"transfer to {target.Name} {variant}: accuracy {row.AdversarialAccuracy:P1} on {row.Images} adversarial images (clean {row.CleanAccuracy:P1})"));
            yield return row;
        }
    }
}
