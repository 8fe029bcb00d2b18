using Microsoft.Extensions.Options;
using ScalableCache.Core;
using ScalableCache.Core.Data;
using ScalableCache.Core.Evaluation;
using ScalableCache.Core.Models;
using ScalableCache.Host.Assets;
using ScalableCache.Host.Cli;

namespace ScalableCache.Host.Experiments;

/// <summary>The data sets the experiments run on.</summary>
internal enum DataSetKind
{
    /// <summary>CIFAR-10 (binary version).</summary>
    Cifar10,

    /// <summary>CIFAR-100 (binary version; the training file may be a subset).</summary>
    Cifar100,

    /// <summary>ImageNet (ILSVRC-2012) folders: <c>train/&lt;wnid&gt;/*.JPEG</c> and <c>val/</c>, streamed from disk (<see cref="ImageNetFolder"/>).</summary>
    ImageNet,
}

/// <summary>Loads what the experiment commands share — model, data, features, the configured cache provider — with progress.</summary>
internal sealed class ExperimentSession(
    AssetLocator assets,
    TorchRuntime torchRuntime,
    IModelRegistry registry,
    CacheProviderSelector providers,
    ProgressReporter progress,
    IOptions<GridSearchOptions> grid)
{
    /// <summary>The configured grid (section <c>GridSearch</c>), overridden by command flags where given.</summary>
    public GridSearchOptions Grid(IReadOnlyList<double>? thetas, IReadOnlyList<double>? lambdas, bool includeCacheOnly, int? maxThetaWidenings = null)
    {
        var result = new GridSearchOptions
        {
            Thetas = thetas is { Count: > 0 } ? thetas : grid.Value.Thetas,
            Lambdas = lambdas is { Count: > 0 } ? lambdas : grid.Value.Lambdas,
            IncludeCacheOnly = includeCacheOnly || grid.Value.IncludeCacheOnly,
            MaxThetaWidenings = maxThetaWidenings ?? grid.Value.MaxThetaWidenings,
        };
        var problems = result.Validate();
        return problems.Count == 0 ? result : throw new UsageException("Invalid θ/λ grid: " + string.Join(" ", problems));
    }

    /// <summary>The grid from a command's <c>--thetas</c>/<c>--lambdas</c> (and optional <c>--include-cache-only</c>) flags over the configured one.</summary>
    public GridSearchOptions Grid(
        System.CommandLine.ParseResult parse, System.CommandLine.Option<string?> thetas, System.CommandLine.Option<string?> lambdas,
        System.CommandLine.Option<bool>? includeCacheOnly = null, System.CommandLine.Option<int?>? maxThetaWidenings = null)
    {
        ArgumentNullException.ThrowIfNull(parse);
        ArgumentNullException.ThrowIfNull(thetas);
        ArgumentNullException.ThrowIfNull(lambdas);
        return Grid(
            CommonOptions.Numbers(parse.GetValue(thetas), thetas.Name),
            CommonOptions.Numbers(parse.GetValue(lambdas), lambdas.Name),
            includeCacheOnly is not null && parse.GetValue(includeCacheOnly),
            maxThetaWidenings is null ? null : parse.GetValue(maxThetaWidenings));
    }

    /// <summary>The configured cache provider's factory.</summary>
    public ICacheMemoryFactory Provider => providers.Selected;

    public ProgressReporter Progress => progress;

    public int BatchSize => torchRuntime.BatchSize;

    /// <summary>
    /// Loads <paramref name="model"/> with its checkpoint onto the configured device. A model whose weights expect per-pixel
    /// statistics of its data set (the author's Keras models) gets them here, from <paramref name="data"/>: computed over its training
    /// and test images when the training set is complete, else read from the statistics file beside the data.
    /// </summary>
    public async Task<LoadedModel> LoadModelAsync(string model, string? weights, CancellationToken cancellationToken, string? data = null)
    {
        var spec = registry.Resolve(model); // unknown names fail before any file is touched
        var path = await assets.CheckpointAsync(spec.Name, weights, cancellationToken).ConfigureAwait(false);
        var device = torchRuntime.Device;
        var loaded = LoadedModel.Load(registry, model, path, device);
        try
        {
            progress.Status($"{spec.Name}: loaded {loaded.Checkpoint.TensorCount} tensors from {path} ({loaded.Checkpoint.Format}) onto {device}");
            if (loaded.NeedsStatistics)
            {
                loaded.UseNormalization(PixelStatisticsFor(loaded, data));
            }

            return loaded;
        }
        catch
        {
            loaded.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The data set a model classifies: ImageNet for a model with ImageNet-sized (224×224) inputs, else CIFAR-10 for 10 classes and
    /// CIFAR-100 for 100; <paramref name="requested"/> (a <c>--dataset</c> flag) must agree with the model.
    /// </summary>
    public static DataSetKind DataSetOf(LoadedModel model, DataSetKind? requested = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        var kind = model.Input == InputShape.ImageNet
            ? DataSetKind.ImageNet
            : model.Model.ClassCount switch
            {
                10 => DataSetKind.Cifar10,
                100 => DataSetKind.Cifar100,
                var n => throw new UsageException(
                    $"{model.Spec.Name} has {n} classes and {model.Input} inputs; the experiments run on CIFAR-10 (10 classes), CIFAR-100 (100) " +
                    "and ImageNet (models with 224×224 inputs, e.g. torchvision:resnet50)."),
            };
        return requested is { } r && r != kind
            ? throw new UsageException($"--dataset {Name(r)} does not fit {model.Spec.Name} ({model.Model.ClassCount} classes, {model.Input} inputs): it classifies {Name(kind)}.")
            : kind;
    }

    /// <summary>The <c>--dataset</c> name of a data set kind.</summary>
    public static string Name(DataSetKind kind) => kind.ToString().ToLowerInvariant();

    /// <summary>The test set of the model's data set (CIFAR; ImageNet streams, see <see cref="LoadImageNet"/>).</summary>
    public ImageDataset LoadTest(LoadedModel model, string? data) => DataSetOf(model) switch
    {
        DataSetKind.Cifar10 => Cifar10.LoadTest(assets.Cifar10(data, DatasetParts.Test)),
        DataSetKind.Cifar100 => Cifar100.LoadTest(assets.Cifar100(data, DatasetParts.Test)),
        _ => throw NotInMemory(model),
    };

    /// <summary>The training set of the model's data set (for CIFAR-100 whatever <c>train.bin</c> holds: the full set or a subset).</summary>
    public ImageDataset LoadTrain(LoadedModel model, string? data, bool flips)
    {
        var train = DataSetOf(model) switch
        {
            DataSetKind.Cifar10 => Cifar10.LoadTrain(assets.Cifar10(data, DatasetParts.Train)),
            DataSetKind.Cifar100 => Cifar100.LoadFile(Path.Combine(assets.Cifar100(data, DatasetParts.Train), Cifar100.TrainFile)),
            _ => throw NotInMemory(model),
        };
        return flips ? train.WithHorizontalFlips() : train;
    }

    /// <summary>
    /// ImageNet under the paper's protocol, streamed from <paramref name="data"/> (<see cref="ImageNetFolder"/>): the cache images are
    /// the training set, or a seeded class-balanced subset of <paramref name="perClass"/> images per class (the paper's 275); the test
    /// set is the validation set (a seeded class-balanced subset when <paramref name="maxTest"/> is given), split by
    /// <see cref="ValidationFraction"/> into the half that chooses θ, λ and the layers and the half errors are reported on. TrainCount: the
    /// training images before any subset.
    /// </summary>
    /// <exception cref="UsageException">No <paramref name="data"/>, or a model without 224×224 inputs.</exception>
    /// <exception cref="DatasetFormatException">The folder's classes are not the model's (another count), or a layout problem.</exception>
    public (IImageSource Train, IImageSource Test, DatasetSplit Split, int TrainCount) LoadImageNet(LoadedModel model, string? data, int seed, int? perClass, int? maxTest)
    {
        CheckImageNet(model, data);
        var run = ImageNetFolder.Protocol(data!, perClass, seed, maxTest, ValidationFraction);
        CheckClasses(model, data!, run.Validation);
        progress.Status(
            $"ImageNet {Path.GetFullPath(data!)}: {run.Validation.ClassNames.Count:N0} classes, cache {run.Cache.Count:N0} of {run.TrainCount:N0} training images" +
            $"{(perClass is { } p ? $" ({p} per class, seed {seed})" : string.Empty)}, {run.Validation.Count:N0} validation images ({run.Validation.Transform})");
        return (run.Cache, run.Validation, run.Split, run.TrainCount);
    }

    /// <summary>The ImageNet validation images of <paramref name="data"/> (limited as by <see cref="ImageNetFolder.Protocol"/>), checked against the model.</summary>
    public static ImageFileSource ImageNetValidation(LoadedModel model, string? data, int? maxTest, int seed)
    {
        CheckImageNet(model, data);
        var validation = ImageNetFolder.Validation(data!);
        CheckClasses(model, data!, validation);
        return (ImageFileSource)Limit(validation, maxTest, seed);
    }

    private static void CheckImageNet(LoadedModel model, string? data)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (string.IsNullOrWhiteSpace(data))
        {
            throw new UsageException("ImageNet needs --data DIR: the folder holding train/<wnid>/*.JPEG and val/ (wnid folders, or flat with " +
                $"{ImageNetFolder.GroundTruthFile}).");
        }

        if (model.Input != InputShape.ImageNet)
        {
            throw new UsageException($"ImageNet images are {InputShape.ImageNet} but {model.Spec.Name} takes {model.Input}; use an ImageNet model such as torchvision:resnet50.");
        }
    }

    private static void CheckClasses(LoadedModel model, string data, IImageSource validation)
    {
        if (validation.ClassNames.Count != model.Model.ClassCount)
        {
            throw new DatasetFormatException(
                Path.GetFullPath(data), null,
                $"has {validation.ClassNames.Count} classes (wnids) but {model.Spec.Name} from its checkpoint outputs {model.Model.ClassCount}; class i is the i-th wnid in sorted order, so the folder must hold every class the model has.");
        }
    }

    private static UsageException NotInMemory(LoadedModel model) =>
        new($"{model.Spec.Name} classifies ImageNet, which this command does not load; ImageNet runs through `evaluate` and `reproduce --dataset imagenet --data DIR`.");

    /// <summary>
    /// Per-pixel statistics of the model's data set over all its training and test images (Orhan's preprocessing): computed when
    /// the training set is complete, else read from <see cref="PixelStatistics.FileName"/> beside the data folder.
    /// </summary>
    public InputNormalization PixelStatisticsFor(LoadedModel model, string? data)
    {
        var train = LoadTrain(model, data, flips: false);
        var complete = DataSetOf(model) == DataSetKind.Cifar10 || train.Count == Cifar100.TrainRows;
        if (complete)
        {
            progress.Status($"{model.Spec.Name}: per-pixel input statistics over the {train.Count:N0} training and the test images");
            return PixelStatistics.FromImages(train, LoadTest(model, data));
        }

        var folder = assets.Cifar100(data, DatasetParts.Test);
        var file = new[] { folder, Path.GetDirectoryName(Path.GetFullPath(folder)) ?? folder }
            .Select(f => Path.Combine(f, PixelStatistics.FileName))
            .FirstOrDefault(File.Exists)
            ?? throw new FileNotFoundException(
                $"{model.Spec.Name} expects per-pixel statistics over all 60,000 CIFAR-100 images, but {Path.Combine(folder, Cifar100.TrainFile)} holds " +
                $"{train.Count:N0} training images and no {PixelStatistics.FileName} lies beside {folder}. Point --data at the full data set, or add the statistics file.");
        progress.Status($"{model.Spec.Name}: per-pixel input statistics from {file} (the training set here is a {train.Count:N0}-image subset)");
        return PixelStatistics.Read(file);
    }

    /// <summary>
    /// The library's fitter for <paramref name="model"/>: the configured provider (or <paramref name="store"/>), the model's input
    /// normalisation and size, the configured batch size and device, progress on stderr; <paramref name="configure"/> sets the rest.
    /// </summary>
    public CacheFitter Fitter(LoadedModel model, Action<CacheFitOptions>? configure = null, ICacheMemoryFactory? store = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        var options = new CacheFitOptions
        {
            Store = store ?? providers.Selected,
            Input = model.Normalization,
            InputShape = model.Input,
            KeyNormalization = model.Spec.NeedsPixelStatistics ? KeyNormalization.Concatenated : KeyNormalization.PerLayer,
            BatchSize = BatchSize,
            ForwardBatchSize = torchRuntime.ForwardBatchSize,
            Device = model.Device,
            Model = model.Id,
            Progress = progress,
        };
        configure?.Invoke(options);
        return new CacheFitter(model.Model, options);
    }

    /// <summary>
    /// A classifier over <paramref name="images"/>' keys at <paramref name="layers"/> with the configured provider and the given θ, λ
    /// (or none, for a cache to tune later), with progress; the seconds of extraction and build go to <paramref name="seconds"/>.
    /// </summary>
    public CacheClassifier BuildClassifier(
        LoadedModel model, ImageDataset images, IReadOnlyList<string> layers, double? theta, double? lambda, bool flip, IDictionary<string, double>? seconds,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(model);
        var fitter = Fitter(model, o => o.Layers = layers);
        using var features = progress.Timed($"{model.Spec.Name}: training keys", () => fitter.Extract(images, layers, "train", cancellationToken), out var extract);
        var classifier = progress.Timed($"{model.Spec.Name}: build {Provider.Provider} cache", () =>
        {
            var memory = fitter.BuildMemory(features, model.Model.ClassCount);
            try
            {
                return new CacheClassifier(model.Model, fitter.Recipe(layers), memory, theta, lambda, new CacheClassifierOptions
                {
                    Model = model.Id,
                    Flip = flip,
                    BatchSize = BatchSize,
                    ForwardBatchSize = torchRuntime.ForwardBatchSize,
                    Device = model.Device,
                });
            }
            catch
            {
                memory.Dispose();
                throw;
            }
        }, out var build);
        if (seconds is not null)
        {
            seconds["extract"] = extract.TotalSeconds;
            seconds["build"] = build.TotalSeconds;
        }

        return classifier;
    }

    /// <summary>A seeded class-balanced subset of at most <paramref name="max"/> images (for quick runs), or the set itself.</summary>
    public static ImageDataset Limit(ImageDataset data, int? max, int seed) => (ImageDataset)Limit((IImageSource)data, max, seed);

    /// <summary>A seeded class-balanced subset of at most <paramref name="max"/> images of any source (of the same kind), or the source itself.</summary>
    public static IImageSource Limit(IImageSource data, int? max, int seed)
    {
        ArgumentNullException.ThrowIfNull(data);
        if (max is null || max >= data.Count)
        {
            return data;
        }

        var classes = data.CountPerClass().Count(c => c > 0);
        return max < classes
            ? throw new UsageException($"A limit of {max} images leaves some of the {classes} classes empty.")
            : data.Subset(data.ClassBalancedIndicesAtMost(max.Value, seed));
    }

    /// <summary>
    /// Loads a cache file as a classifier over <paramref name="model"/>, with the provider recorded in the file (which must be
    /// registered); the file must have been built for this model's checkpoint (SHA-256), class count and layer shapes.
    /// </summary>
    public CacheClassifier LoadClassifier(string path, LoadedModel model, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(model);
        return CacheClassifier.Load(path, model.Model, LoadOptions(model), cancellationToken);
    }

    /// <summary>
    /// How cache files are loaded over <paramref name="model"/>: every registered provider, the model's checkpoint checked, the
    /// configured batch size and device.
    /// </summary>
    public CacheLoadOptions LoadOptions(LoadedModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return new CacheLoadOptions
        {
            Providers = providers.Factories,
            Model = model.Id,
            BatchSize = BatchSize,
            ForwardBatchSize = torchRuntime.ForwardBatchSize,
            Device = model.Device,
        };
    }

    /// <summary>
    /// The experiments' data: the training set and the test set (each a seeded class-balanced subset when limited) and the seeded
    /// split of the test set into the validation half (θ, λ, layers) and the report half.
    /// </summary>
    public (ImageDataset Train, ImageDataset Test, DatasetSplit Split) LoadData(
        LoadedModel model, string? data, int seed, int? maxTrain = null, int? maxTest = null)
    {
        var test = Limit(LoadTest(model, data), maxTest, seed);
        var train = Limit(LoadTrain(model, data, flips: false), maxTrain, seed);
        return (train, test, test.SeededSplit(seed, ValidationFraction));
    }

    /// <summary>The validation share of the test set.</summary>
    public const double ValidationFraction = 0.5;
}
