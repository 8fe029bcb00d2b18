using System.Globalization;

namespace ScalableCache.Core.Models;

/// <summary>The default <see cref="IModelRegistry"/>: a lock-protected list, pre-filled with the CIFAR ResNets.</summary>
public sealed class ModelRegistry : IModelRegistry
{
    /// <summary>Prefix of the any-depth CIFAR ResNet family: <c>cifar-resnet:N</c> has N blocks per stage.</summary>
    public const string CifarResNetPrefix = "cifar-resnet:";

    /// <summary>Prefix of the torchvision ImageNet architectures: <c>torchvision:resnet50</c>, <c>torchvision:densenet121</c>, ….</summary>
    public const string TorchVisionPrefix = "torchvision:";

    // torchvision.models: blocks per stage (ResNet) or dense layers per block with growth rate and initial features (DenseNet).
    private static readonly (int Depth, int[] Blocks, bool Bottleneck)[] TorchVisionResNets =
    [
        (18, [2, 2, 2, 2], false), (34, [3, 4, 6, 3], false), (50, [3, 4, 6, 3], true), (101, [3, 4, 23, 3], true), (152, [3, 8, 36, 3], true),
    ];

    private static readonly (int Depth, int Growth, int[] Blocks, int Initial)[] TorchVisionDenseNets =
    [
        (121, 32, [6, 12, 24, 16], 64), (161, 48, [6, 12, 36, 24], 96), (169, 32, [6, 12, 32, 32], 64), (201, 32, [6, 12, 48, 32], 64),
    ];

    /// <summary>Prefix of the option-B CIFAR ResNet family (chenyaofo names, CIFAR-100 inputs): <c>cifar-resnet-b:N</c>.</summary>
    public const string CifarResNetBPrefix = "cifar-resnet-b:";

    /// <summary>Prefix of the DenseNet-BC family: <c>densenet-bc:D-K</c> (depth D, growth rate K).</summary>
    public const string DenseNetBcPrefix = "densenet-bc:";

    /// <summary>The ODIN / Mahalanobis-detector CIFAR-10 DenseNet-BC-100 (k = 12).</summary>
    public const string DenseNetBc100 = "densenet-bc-100";

    /// <summary>chenyaofo's CIFAR-100 ResNet-56 (option B).</summary>
    public const string Cifar100ResNet56 = "cifar100-resnet56";

    /// <summary>The CIFAR-100 training statistics of chenyaofo's models: mean (0.5070, 0.4865, 0.4409), std (0.2673, 0.2564, 0.2761).</summary>
    public static InputNormalization Cifar100Normalization { get; } = new([0.5070f, 0.4865f, 0.4409f], [0.2673f, 0.2564f, 0.2761f]);

    /// <summary>The ODIN DenseNets' statistics: mean (125.3, 123.0, 113.9) / 255, std (63.0, 62.1, 66.7) / 255.</summary>
    public static InputNormalization OdinNormalization { get; } =
        new([125.3f / 255f, 123.0f / 255f, 113.9f / 255f], [63.0f / 255f, 62.1f / 255f, 66.7f / 255f]);

    private readonly Lock _gate = new();
    private readonly List<ModelSpec> _models = [];
    private readonly List<ModelFamily> _families = [];

    /// <summary>Creates a registry with the built-in architectures (the constructor dependency injection uses).</summary>
    public ModelRegistry()
        : this(registerBuiltIns: true)
    {
    }

    private ModelRegistry(bool registerBuiltIns)
    {
        if (!registerBuiltIns)
        {
            return;
        }

        foreach (var (name, n) in new[] { ("resnet20", 3), ("resnet32", 5), ("resnet44", 7), ("resnet56", 9), ("resnet110", 18) })
        {
            Register(CifarResNetSpec(name, n));
        }

        Register(DenseNetSpec(DenseNetBc100, 100, 12));
        Register(CifarResNetBSpec(Cifar100ResNet56, 9));
        RegisterFamily(new ModelFamily(
            DenseNetBcPrefix,
            $"{DenseNetBcPrefix}D-K — DenseNet-BC for CIFAR (bottlenecks, compression 0.5) of depth D and growth rate K, e.g. {DenseNetBcPrefix}100-12",
            ResolveDenseNet));
        RegisterFamily(new ModelFamily(
            CifarResNetBPrefix,
            $"{CifarResNetBPrefix}N — CIFAR ResNet with option-B (projection) shortcuts, chenyaofo names, N blocks per stage, CIFAR-100 inputs",
            parameter => CifarResNetBSpec(CifarResNetBPrefix + BlocksPerStage(CifarResNetBPrefix, parameter), BlocksPerStage(CifarResNetBPrefix, parameter))));

        foreach (var spec in OrhanModels.Specs())
        {
            Register(spec);
        }

        RegisterFamily(new ModelFamily(
            CifarResNetPrefix,
            $"{CifarResNetPrefix}N — CIFAR ResNet (He et al. 2016, option-A shortcuts) with N blocks per stage, depth 6N+2",
            ResolveCifarResNet));

        foreach (var spec in TorchVisionSpecs())
        {
            Register(spec);
        }
    }

    /// <inheritdoc />
    public IReadOnlyList<ModelSpec> Models
    {
        get
        {
            lock (_gate)
            {
                return [.. _models];
            }
        }
    }

    /// <inheritdoc />
    public IReadOnlyList<ModelFamily> Families
    {
        get
        {
            lock (_gate)
            {
                return [.. _families];
            }
        }
    }

    /// <summary>Creates a registry without any architecture, for callers that register their own.</summary>
    public static ModelRegistry CreateEmpty() => new(registerBuiltIns: false);

    /// <summary>The spec of a CIFAR ResNet with <paramref name="blocksPerStage"/> blocks per stage (depth 6n+2).</summary>
    public static ModelSpec CifarResNetSpec(string name, int blocksPerStage)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(blocksPerStage);
        return new ModelSpec(
            name,
            string.Create(
                CultureInfo.InvariantCulture,
                $"CIFAR ResNet-{(6 * blocksPerStage) + 2} (He et al. 2016, option-A shortcuts), {blocksPerStage} blocks per stage"),
            InputNormalization.ImageNet,
            InputShape.Cifar,
            classCount => new CifarResNet(blocksPerStage, classCount))
        {
            ClassifierWeight = "linear.weight",
        };
    }

    /// <summary>
    /// The torchvision ImageNet architectures (<c>torchvision:resnet18/34/50/101/152</c>, <c>torchvision:densenet121/161/169/201</c>):
    /// 224×224 inputs, ImageNet normalisation, 1,000 classes by default, torchvision's state-dict names (DenseNet also reads the
    /// pre-0.3 names, see <see cref="TorchVisionDenseNet.CheckpointName"/>).
    /// </summary>
    public static IReadOnlyList<ModelSpec> TorchVisionSpecs()
    {
        var specs = new List<ModelSpec>();
        foreach (var (depth, blocks, bottleneck) in TorchVisionResNets)
        {
            specs.Add(new ModelSpec(
                string.Create(CultureInfo.InvariantCulture, $"{TorchVisionPrefix}resnet{depth}"),
                string.Create(CultureInfo.InvariantCulture, $"torchvision ResNet-{depth} (ImageNet, {(bottleneck ? "bottleneck" : "basic")} blocks [{string.Join(", ", blocks)}])"),
                InputNormalization.ImageNet,
                InputShape.ImageNet,
                classCount => new TorchVisionResNet(blocks, bottleneck, classCount))
            {
                DefaultClassCount = 1000,
                ClassifierWeight = "fc.weight",
            });
        }

        foreach (var (depth, growth, blocks, initial) in TorchVisionDenseNets)
        {
            specs.Add(new ModelSpec(
                string.Create(CultureInfo.InvariantCulture, $"{TorchVisionPrefix}densenet{depth}"),
                string.Create(CultureInfo.InvariantCulture, $"torchvision DenseNet-{depth} (ImageNet, growth {growth}, blocks [{string.Join(", ", blocks)}])"),
                InputNormalization.ImageNet,
                InputShape.ImageNet,
                classCount => new TorchVisionDenseNet(growth, blocks, initial, classCount))
            {
                DefaultClassCount = 1000,
                ClassifierWeight = "classifier.weight",
                CheckpointName = TorchVisionDenseNet.CheckpointName,
            });
        }

        return specs;
    }

    /// <summary>The spec of a CIFAR DenseNet-BC (bottlenecks, compression 0.5) of <paramref name="depth"/> and growth rate <paramref name="growthRate"/>.</summary>
    public static ModelSpec DenseNetSpec(string name, int depth, int growthRate)
    {
        using (new DenseNetBc(depth, growthRate))
        {
            // fails here, naming the problem, for a depth that gives no whole blocks
        }

        return new ModelSpec(
            name,
            string.Create(CultureInfo.InvariantCulture, $"DenseNet-BC-{depth} (k = {growthRate}) for CIFAR, ODIN / Mahalanobis-detector names and inputs"),
            OdinNormalization,
            InputShape.Cifar,
            classCount => new DenseNetBc(depth, growthRate, bottleneck: true, compression: 0.5, classCount))
        {
            ClassifierWeight = "fc.weight",
        };
    }

    /// <summary>The spec of an option-B CIFAR ResNet (chenyaofo names, CIFAR-100 inputs) with <paramref name="blocksPerStage"/> blocks per stage.</summary>
    public static ModelSpec CifarResNetBSpec(string name, int blocksPerStage)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(blocksPerStage);
        return new ModelSpec(
            name,
            string.Create(CultureInfo.InvariantCulture,
                $"CIFAR ResNet-{(6 * blocksPerStage) + 2} with option-B shortcuts (chenyaofo/pytorch-cifar-models), CIFAR-100 inputs"),
            Cifar100Normalization,
            InputShape.Cifar,
            classCount => new CifarResNet(blocksPerStage, classCount, CifarShortcut.OptionB))
        {
            ClassifierWeight = "fc.weight",
            DefaultClassCount = 100,
        };
    }

    /// <inheritdoc />
    public void Register(ModelSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        ArgumentException.ThrowIfNullOrWhiteSpace(spec.Name);
        ArgumentNullException.ThrowIfNull(spec.Factory);
        lock (_gate)
        {
            _models.RemoveAll(m => string.Equals(m.Name, spec.Name, StringComparison.OrdinalIgnoreCase));
            _models.Add(spec);
        }
    }

    /// <inheritdoc />
    public void RegisterFamily(ModelFamily family)
    {
        ArgumentNullException.ThrowIfNull(family);
        ArgumentException.ThrowIfNullOrWhiteSpace(family.Prefix);
        ArgumentNullException.ThrowIfNull(family.Resolve);
        lock (_gate)
        {
            _families.RemoveAll(f => string.Equals(f.Prefix, family.Prefix, StringComparison.OrdinalIgnoreCase));
            _families.Add(family);
        }
    }

    /// <inheritdoc />
    public ModelSpec Resolve(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        var text = name.Trim();
        ModelFamily? family;
        lock (_gate)
        {
            var spec = _models.LastOrDefault(m => string.Equals(m.Name, text, StringComparison.OrdinalIgnoreCase));
            if (spec is not null)
            {
                return spec;
            }

            family = _families
                .Where(f => text.StartsWith(f.Prefix, StringComparison.OrdinalIgnoreCase))
                .OrderByDescending(f => f.Prefix.Length)
                .FirstOrDefault();
        }

        if (family is null)
        {
            throw new UnknownModelException(name, KnownNames());
        }

        return family.Resolve(text[family.Prefix.Length..]);
    }

    /// <inheritdoc />
    public ImageClassifier Create(string name, int? classCount = null)
    {
        var spec = Resolve(name);
        var classes = classCount ?? spec.DefaultClassCount;
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(classes, nameof(classCount));
        var model = spec.Factory(classes);
        model.eval();
        return model;
    }

    private List<string> KnownNames()
    {
        lock (_gate)
        {
            return [.. _models.Select(m => m.Name), .. _families.Select(f => f.Prefix + "N")];
        }
    }

    private static int BlocksPerStage(string prefix, string parameter) =>
        int.TryParse(parameter, NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n >= 1 && n <= 1000
            ? n
            : throw new ArgumentException($"'{prefix}{parameter}' is not valid: N (blocks per stage) must be an integer from 1 to 1000.", nameof(parameter));

    private static ModelSpec ResolveDenseNet(string parameter)
    {
        var parts = parameter.Split('-');
        if (parts.Length != 2 || !int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var depth)
            || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var growth) || depth > 1000 || growth < 1 || growth > 1000)
        {
            throw new ArgumentException($"'{DenseNetBcPrefix}{parameter}' is not valid: give depth and growth rate as D-K, e.g. {DenseNetBcPrefix}100-12.", nameof(parameter));
        }

        return DenseNetSpec(DenseNetBcPrefix + parameter, depth, growth);
    }

    private static ModelSpec ResolveCifarResNet(string parameter)
    {
        if (!int.TryParse(parameter, NumberStyles.None, CultureInfo.InvariantCulture, out var n) || n < 1 || n > 1000)
        {
            throw new ArgumentException(
                $"'{CifarResNetPrefix}{parameter}' is not valid: N (blocks per stage) must be an integer from 1 to 1000, e.g. {CifarResNetPrefix}3 for ResNet-20.",
                nameof(parameter));
        }

        return CifarResNetSpec(CifarResNetPrefix + n.ToString(CultureInfo.InvariantCulture), n);
    }
}
