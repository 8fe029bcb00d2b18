using System.CommandLine;
using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ScalableCache.Core;
using ScalableCache.Core.Data;
using ScalableCache.Core.Evaluation;
using ScalableCache.Core.Persistence;
using ScalableCache.Host.Cli;
using ScalableCache.Host.Experiments;
using ScalableCache.Host.Reports;
using ScalableCache.Host.Serving;
using Spectre.Console;

namespace ScalableCache.Host.Commands;

/// <summary>
/// <c>scache serve</c>: serves a cached classifier over HTTP (<see cref="CacheServer"/>) whose memory grows while it runs, durably
/// (<see cref="DurableCacheClassifier"/>): the cache file given by <c>--cache</c> is the snapshot, its log sits beside it. A missing
/// file is built first from the model's training keys at <c>--layers</c> (θ, λ given or searched on the validation half). Over a
/// provider whose memory keeps itself (<see cref="IDurableCacheMemory"/>: <c>--provider Orleans</c> on silos with a state folder) no
/// log is written: the file holds the configuration and the memory's id, and later starts reopen that memory.
/// Runs until Ctrl+C or SIGTERM, then commits what is queued, takes a last snapshot and exits 0.
/// </summary>
internal sealed class ServeCommand : IScacheCommand
{
    private const string ClassNamesKey = "classNames";

    public ServeCommand(CommandRunner runner, IServiceProvider services)
    {
        var cache = new Option<string?>("--cache")
        {
            Description = $"The cache file to serve (required), e.g. resnet20{CacheFile.Extension}: loaded with its log replayed; built first when missing (with --layers).",
        };
        var urls = new Option<string?>("--urls") { Description = "Where to listen, e.g. http://127.0.0.1:5080 (Serve:Urls; loopback by default)." };
        var snapshotInterval = new Option<int?>("--snapshot-interval")
        {
            Description = "Seconds between snapshots of a grown memory (Serve:Durability:SnapshotInterval; 0: only at exit and when the log is large).",
        }.AtLeast(0);
        var model = CommonOptions.Model();
        var weights = CommonOptions.Weights();
        var data = CommonOptions.Data();
        var layers = new Option<string?>("--layers", "-l")
        {
            Description = "When --cache does not exist yet: comma-separated layers to key the new cache on (see `scache layers`).",
        }.NameList();
        var maxTrain = CommonOptions.MaxTrain();
        var maxTest = CommonOptions.MaxTest();
        var seed = CommonOptions.Seed();
        var theta = CommonOptions.Theta("θ of a new cache (with --lambda); default: searched on the validation half of the test set.");
        var lambda = CommonOptions.Lambda("λ of a new cache (with --theta).");
        var thetas = CommonOptions.Thetas();
        var lambdas = CommonOptions.Lambdas();

        Definition = new Command("serve", "Serve a cached classifier over HTTP (predict, add to the memory, health, info, metrics, OpenAPI); every acknowledged add is durable.")
        {
            cache, urls, snapshotInterval, model, weights, data, layers, maxTrain, maxTest, seed, theta, lambda, thetas, lambdas,
        };
        Definition.SetAction((parse, ct) => runner.RunAsync("serve", async token =>
        {
            var path = parse.GetValue(cache);
            if (string.IsNullOrWhiteSpace(path))
            {
                throw new UsageException($"--cache is required: the cache file to serve (and to snapshot to), e.g. --cache resnet20{CacheFile.Extension}.");
            }

            if (parse.GetValue(theta).HasValue != parse.GetValue(lambda).HasValue)
            {
                throw new UsageException("Give --theta and --lambda together, or neither.");
            }

            var full = Path.GetFullPath(path);
            var exists = Path.Exists(full);
            var layerNames = CommonOptions.Names(parse.GetValue(layers));
            if (exists)
            {
                InputFile.Resolve(full, "Cache file (from --cache)");
            }
            else if (layerNames is null)
            {
                throw new UsageException($"--cache '{full}' does not exist: give --layers (and --model) to build it from the training set, or point --cache at a cache file.");
            }
            else
            {
                OutputLocation.CheckFile(full, "--cache");
            }

            var options = Options(services, parse.GetValue(urls), parse.GetValue(snapshotInterval));
            var session = services.GetRequiredService<ExperimentSession>();
            var loggers = services.GetRequiredService<ILoggerFactory>();
            var logger = loggers.CreateLogger("ScalableCache.Serve");
            _ = session.Provider; // an unknown provider fails before any work

            var header = exists ? CacheFile.ReadHeader(full) : null;
            var modelName = header is not null && parse.GetResult(model) is null or { Implicit: true } ? header.Model.Name : parse.GetValue(model)!;
            using var loaded = await session.LoadModelAsync(modelName, parse.GetValue(weights), token).ConfigureAwait(false);
            IReadOnlyList<string> classNames;
            DurableCacheClassifier durable;
            if (header is not null)
            {
                if (!header.Metadata.ContainsKey(DurableCacheClassifier.MemoryIdKey)
                    && !string.Equals(session.Provider.Provider, header.Provider, StringComparison.OrdinalIgnoreCase))
                {
                    logger.LogWarning(
                        "{File} holds a '{FileProvider}' memory, which is served as it is; the configured provider '{Provider}' applies when serve builds a new cache file",
                        full, header.Provider, session.Provider.Provider);
                }

                durable = session.Progress.Timed($"open {full} and replay its log",
                    () => DurableCacheClassifier.Open(full, loaded.Model, session.LoadOptions(loaded), options.Durability, logger, token), out _);
                classNames = ClassNames(header.Metadata, header.ClassCount);
            }
            else
            {
                var (classifier, metadata) = Build(session, loaded, parse, data, layerNames!, maxTrain, maxTest, seed, theta, lambda, thetas, lambdas, token);
                classNames = ClassNames(metadata, classifier.ClassCount);
                durable = session.Progress.Timed($"write the first snapshot {full}", () => DurableCacheClassifier.Create(full, classifier, options.Durability, metadata, logger, token), out _);
            }

            if (durable.Theta is null)
            {
                await durable.DisposeAsync().ConfigureAwait(false);
                throw new UsageException($"'{full}' records no θ and λ (built without --theta/--lambda): rebuild it with `scache build --theta T --lambda L`, or let `scache serve` build it.");
            }

            var recovery = durable.Recovery;
            var version = typeof(ServeCommand).Assembly.GetName().Version?.ToString(3) ?? "0.0.0";
            try
            {
                var server = CacheServer.Create(durable, new ServeFacts(classNames, version), options, loggers);
                await using (server.ConfigureAwait(false))
                {
                    await server.StartAsync(token).ConfigureAwait(false);
                    var source = durable.MemoryId is { } memoryId
                        ? $"in the {durable.Provider} memory '{memoryId}', which persists {(durable.AddsPersisted ? "every add itself" : "NO add (non-durable adds allowed)")}"
                        : $"{recovery.SnapshotKeys:N0} from the snapshot, {recovery.ReplayedKeys:N0} replayed";
                    session.Progress.Status(string.Create(CultureInfo.InvariantCulture,
                        $"serving {durable.Count:N0} keys ({source}) on {string.Join(", ", server.Addresses)}; Ctrl+C stops"));
                    await WaitForStop(server, token).ConfigureAwait(false);
                }
            }
            finally
            {
                await durable.DisposeAsync().ConfigureAwait(false);
            }

            var stats = durable.Statistics;
            var result = new ServeResult(full, stats.Keys, stats.Adds, stats.AddedKeys, stats.Commits, stats.Snapshots, recovery.SnapshotKeys, recovery.ReplayedKeys,
                recovery.Log.DroppedBytes);
            return new CommandOutcome(result, console => console.MarkupLineInterpolated(
                $"Stopped: {result.Keys:N0} keys; {result.Adds:N0} adds ({result.AddedKeys:N0} keys) in {result.Commits:N0} group commits; {result.Snapshots} snapshots."));
        }, ct));
    }

    public Command Definition { get; }

    private static ServeOptions Options(IServiceProvider services, string? urls, int? snapshotSeconds)
    {
        var options = services.GetRequiredService<IOptions<ServeOptions>>().Value;
        if (urls is not null)
        {
            options.Urls = urls;
        }

        if (snapshotSeconds is { } seconds)
        {
            options.Durability.SnapshotInterval = TimeSpan.FromSeconds(seconds);
        }

        var problems = options.Validate();
        return problems.Count == 0 ? options : throw new OptionsValidationException(ServeOptions.SectionName, typeof(ServeOptions), problems);
    }

    /// <summary>A new classifier from the training set: θ and λ as given, or searched on the validation half of the test set.</summary>
    private static (CacheClassifier Classifier, Dictionary<string, string> Metadata) Build(
        ExperimentSession session, LoadedModel loaded, ParseResult parse, Option<string?> data, IReadOnlyList<string> layers, Option<int?> maxTrain,
        Option<int?> maxTest, Option<int> seed, Option<double?> theta, Option<double?> lambda, Option<string?> thetas, Option<string?> lambdas,
        CancellationToken token)
    {
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["dataset"] = "CIFAR-10 train",
            ["seed"] = parse.GetValue(seed).ToString(CultureInfo.InvariantCulture),
            ["writer"] = "scache serve",
        };
        CacheClassifier classifier;
        if (parse.GetValue(theta) is { } t && parse.GetValue(lambda) is { } l)
        {
            var train = ExperimentSession.Limit(session.LoadTrain(loaded, parse.GetValue(data), flips: false), parse.GetValue(maxTrain), parse.GetValue(seed));
            classifier = session.BuildClassifier(loaded, train, layers, t, l, flip: false, seconds: null, token);
            metadata["images"] = train.Count.ToString(CultureInfo.InvariantCulture);
            metadata[ClassNamesKey] = string.Join(',', train.ClassNames);
        }
        else
        {
            var grid = session.Grid(parse, thetas, lambdas);
            var (train, test, split) = session.LoadData(loaded, parse.GetValue(data), parse.GetValue(seed), parse.GetValue(maxTrain), parse.GetValue(maxTest));
            using var fit = session.Fitter(loaded, o =>
            {
                o.Layers = layers;
                o.Grid = grid;
            }).Fit(train, test.Subset(split.First), token); // the validation half, as the experiments use it
            classifier = fit.Detach();
            metadata["images"] = train.Count.ToString(CultureInfo.InvariantCulture);
            metadata[ClassNamesKey] = string.Join(',', train.ClassNames);
        }

        return (classifier, metadata);
    }

    private static IReadOnlyList<string> ClassNames(IReadOnlyDictionary<string, string> metadata, int classCount)
    {
        if (metadata.TryGetValue(ClassNamesKey, out var joined) && joined.Split(',') is { } names && names.Length == classCount)
        {
            return names;
        }

        return classCount == Cifar10.ClassCount
            ? Cifar10.DefaultClassNames
            : [.. Enumerable.Range(0, classCount).Select(i => i.ToString(CultureInfo.InvariantCulture))];
    }

    private static async Task WaitForStop(CacheServer server, CancellationToken token)
    {
        var stopping = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var onStop = server.App.Lifetime.ApplicationStopping.Register(() => stopping.TrySetResult());
        using var onCancel = token.Register(() => stopping.TrySetResult());
        await stopping.Task.ConfigureAwait(false);
    }

    private sealed record ServeResult(
        string Cache, long Keys, long Adds, long AddedKeys, long Commits, long Snapshots, long SnapshotKeys, long ReplayedKeys, long DroppedLogBytes);
}
