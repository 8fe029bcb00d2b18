using Microsoft.Extensions.Options;
using ScalableCache.Core;
using ScalableCache.Core.Data;
using ScalableCache.Core.Evaluation;
using ScalableCache.Core.Models;
using ScalableCache.Host.Assets;
using ScalableCache.Host.Cli;

namespace ScalableCache.Host.Experiments;

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
    public GridSearchOptions Grid(IReadOnlyList<double>? thetas, IReadOnlyList<double>? lambdas, bool includeCacheOnly)
    {
        var result = new GridSearchOptions
        {
            Thetas = thetas is { Count: > 0 } ? thetas : grid.Value.Thetas,
            Lambdas = lambdas is { Count: > 0 } ? lambdas : grid.Value.Lambdas,
            IncludeCacheOnly = includeCacheOnly || grid.Value.IncludeCacheOnly,
        };
        var problems = result.Validate();
        return problems.Count == 0 ? result : throw new UsageException("Invalid θ/λ grid: " + string.Join(" ", problems));
    }

    /// <summary>The grid from a command's <c>--thetas</c>/<c>--lambdas</c> (and optional <c>--include-cache-only</c>) flags over the configured one.</summary>
    public GridSearchOptions Grid(
        System.CommandLine.ParseResult parse, System.CommandLine.Option<string?> thetas, System.CommandLine.Option<string?> lambdas,
        System.CommandLine.Option<bool>? includeCacheOnly = null)
    {
        ArgumentNullException.ThrowIfNull(parse);
        ArgumentNullException.ThrowIfNull(thetas);
        ArgumentNullException.ThrowIfNull(lambdas);
        return Grid(
            CommonOptions.Numbers(parse.GetValue(thetas), thetas.Name),
            CommonOptions.Numbers(parse.GetValue(lambdas), lambdas.Name),
            includeCacheOnly is not null && parse.GetValue(includeCacheOnly));
    }

    /// <summary>The configured cache provider's factory.</summary>
    public ICacheMemoryFactory Provider => providers.Selected;

    public ProgressReporter Progress => progress;

    public int BatchSize => torchRuntime.BatchSize;

    public async Task<LoadedModel> LoadModelAsync(string model, string? weights, CancellationToken cancellationToken)
    {
        var spec = registry.Resolve(model); // unknown names fail before any file is touched
        var path = await assets.CheckpointAsync(spec.Name, weights, cancellationToken).ConfigureAwait(false);
        var device = torchRuntime.Device;
        var loaded = LoadedModel.Load(registry, model, path, device);
        progress.Status($"{spec.Name}: loaded {loaded.Checkpoint.TensorCount} tensors from {path} ({loaded.Checkpoint.Format}) onto {device}");
        return loaded;
    }

    public ImageDataset LoadTest(string? data) => Cifar10.LoadTest(assets.Cifar10(data, DatasetParts.Test));

    public ImageDataset LoadTrain(string? data, bool flips)
    {
        var train = Cifar10.LoadTrain(assets.Cifar10(data, DatasetParts.Train));
        return flips ? train.WithHorizontalFlips() : train;
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
            Input = model.Spec.Normalization,
            InputShape = model.Spec.Input,
            BatchSize = BatchSize,
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
    public static ImageDataset Limit(ImageDataset data, int? max, int seed)
    {
        if (max is null || max >= data.Count)
        {
            return data;
        }

        if (max < data.ClassCount)
        {
            throw new UsageException($"A limit of {max} images leaves some of the {data.ClassCount} classes empty.");
        }

        return data.ClassBalancedSubset(max.Value / data.ClassCount, seed);
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
            Device = model.Device,
        };
    }

    /// <summary>
    /// The experiments' data: the training set and the test set (each a seeded class-balanced subset when limited) and the seeded
    /// split of the test set into the validation half (θ, λ, layers) and the report half.
    /// </summary>
    public (ImageDataset Train, ImageDataset Test, DatasetSplit Split) LoadData(string? data, int seed, int? maxTrain = null, int? maxTest = null)
    {
        var test = Limit(LoadTest(data), maxTest, seed);
        var train = Limit(LoadTrain(data, flips: false), maxTrain, seed);
        return (train, test, test.SeededSplit(seed, ValidationFraction));
    }

    /// <summary>The validation share of the test set.</summary>
    public const double ValidationFraction = 0.5;
}
