using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using ScalableCache.Core;
using ScalableCache.Core.Data;
using ScalableCache.Core.Evaluation;
using ScalableCache.Core.Persistence;
using ScalableCache.Exact;
using ScalableCache.Host.Cli;
using ScalableCache.Host.Experiments;
using ScalableCache.Host.Reports;
using Spectre.Console;

namespace ScalableCache.Host.Commands;

/// <summary>
/// <c>scache build</c>: extracts the training keys of a model at the given layers, builds the configured provider's memory
/// and saves it as a cache file (<see cref="CacheFile"/>) that evaluation commands can load instead of rebuilding.
/// </summary>
internal sealed class BuildCommand : IScacheCommand
{
    public BuildCommand(CommandRunner runner, IServiceProvider services)
    {
        var model = CommonOptions.Model();
        var weights = CommonOptions.Weights();
        var data = CommonOptions.Data();
        var flip = CommonOptions.Flip();
        var seed = new Option<int>("--seed") { Description = "Seed of the training subset --max-train picks.", DefaultValueFactory = _ => 0 };
        var maxTrain = CommonOptions.MaxTrain();
        var layers = new Option<string?>("--layers", "-l")
        {
            Description = "Comma-separated layer names to key the cache on (required; `scache layers` lists them, `scache evaluate` searches for good ones).",
        }.NameList();
        var output = new Option<string?>("--output")
        {
            Description = $"The cache file to write (required), e.g. resnet20{CacheFile.Extension}. An existing file is replaced atomically.",
        };
        var keysFile = new Option<string?>("--keys-file")
        {
            Description = $"Stream the keys into this key file (e.g. train{KeyFile.Extension}: raw page-aligned chunks the exact store maps, " +
                "in Cache:Exact:StorageType) a chunk at a time, so memory stays at one chunk. Rerun the same command after a stop to resume from " +
                "the last complete chunk. With --output, the configured provider's store is then built from the key file (the exact store maps it; " +
                "RandomProjection, Hnsw and the others add it block by block) and saved as the cache file.",
        };
        var testKeys = new Option<bool>("--test-keys")
        {
            Description = "Stream the test images' keys, not the training images', into --keys-file (e.g. queries for `scache-bench out-of-core " +
                "--query-keys`); --max-test takes a seeded class-balanced subset. Needs --keys-file and no --output: a cache holds training keys.",
        };
        var maxTest = CommonOptions.MaxTest();
        var theta = CommonOptions.Theta("θ to record in the file for later evaluation (with --lambda).");
        var lambda = CommonOptions.Lambda("λ in [0, 1] to record in the file (with --theta).");

        Definition = new Command("build", "Build a cache from a model's training keys at the given layers with the configured provider (Cache:Provider) and save it to a file.")
        {
            model, weights, data, layers, flip, output, keysFile, testKeys, theta, lambda, seed, maxTrain, maxTest,
        };
        Definition.SetAction((parse, ct) => runner.RunAsync("build", async token =>
        {
            var layerNames = CommonOptions.Names(parse.GetValue(layers))
                ?? throw new UsageException("--layers is required: name the layers to key the cache on, e.g. --layers layer3.2,avgpool " +
                    "(`scache layers --model M` lists them; `scache evaluate` searches for a good set).");
            var path = parse.GetValue(output);
            var keysPath = parse.GetValue(keysFile);
            if (string.IsNullOrWhiteSpace(path) && string.IsNullOrWhiteSpace(keysPath))
            {
                throw new UsageException($"--output is required: the cache file to write, e.g. --output resnet20{CacheFile.Extension} (or --keys-file to stream the keys).");
            }

            if (!string.IsNullOrWhiteSpace(path))
            {
                OutputLocation.CheckFile(path, "--output"); // before the extraction, not after it
            }

            if (!string.IsNullOrWhiteSpace(keysPath))
            {
                OutputLocation.CheckFile(keysPath, "--keys-file");
                if (parse.GetValue(flip))
                {
                    throw new UsageException("--flip is not supported with --keys-file yet: build the flipped cache without --keys-file.");
                }
            }

            var test = parse.GetValue(testKeys);
            if (test && (string.IsNullOrWhiteSpace(keysPath) || !string.IsNullOrWhiteSpace(path)))
            {
                throw new UsageException("--test-keys writes the test images' keys to a key file: give --keys-file and no --output (a cache holds training keys).");
            }

            if (!test && parse.GetValue(maxTest) is not null)
            {
                throw new UsageException("--max-test limits the test images of --test-keys; use --max-train for the training images.");
            }

            var fixedTheta = parse.GetValue(theta);
            var fixedLambda = parse.GetValue(lambda);
            if (fixedTheta.HasValue != fixedLambda.HasValue)
            {
                throw new UsageException("Give --theta and --lambda together, or neither.");
            }

            var session = services.GetRequiredService<ExperimentSession>();
            var progress = session.Progress;
            _ = session.Provider; // an unknown provider fails before any work
            var seconds = new Dictionary<string, double>();
            var total = Stopwatch.StartNew();

            using var loaded = await session.LoadModelAsync(parse.GetValue(model)!, parse.GetValue(weights), token, parse.GetValue(data)).ConfigureAwait(false);
            var train = test
                ? ExperimentSession.Limit(session.LoadTest(loaded, parse.GetValue(data)), parse.GetValue(maxTest), parse.GetValue(seed))
                : ExperimentSession.Limit(session.LoadTrain(loaded, parse.GetValue(data), flips: false), parse.GetValue(maxTrain), parse.GetValue(seed));
            var images = parse.GetValue(flip) ? train.WithHorizontalFlips() : train;
            KeyStream? streamed = null;
            if (!string.IsNullOrWhiteSpace(keysPath))
            {
                var identity = string.Join("\n", "scache build", loaded.Id.Name, loaded.Id.CheckpointSha256 ?? "", string.Join(",", layerNames),
                    parse.GetValue(data) ?? "", images.Count.ToString(CultureInfo.InvariantCulture), parse.GetValue(seed).ToString(CultureInfo.InvariantCulture))
                    + (test ? "\ntest images" : ""); // training files keep the identity they always had, so they still resume
                var exact = services.GetServices<ICacheMemoryFactory>().OfType<ExactCacheMemoryFactory>().First();
                streamed = progress.Timed($"stream keys to {Path.GetFullPath(keysPath)}",
                    () => StreamKeys(session, loaded, images, layerNames, exact, keysPath, identity, token), out var extract);
                seconds["extract"] = extract.TotalSeconds;
                if (string.IsNullOrWhiteSpace(path))
                {
                    seconds["total"] = total.Elapsed.TotalSeconds;
                    return new CommandOutcome(streamed, console => console.WriteLine($"{streamed.Keys:N0} keys in {streamed.Path} ({streamed.Resumed:N0} resumed)"));
                }
            }

            using var classifier = streamed is null
                ? session.BuildClassifier(loaded, images, layerNames, fixedTheta, fixedLambda, parse.GetValue(flip), seconds, token)
                : KeyFileClassifier(session, loaded, layerNames, streamed.Path, services.GetRequiredService<IOptions<ExactCacheOptions>>().Value, fixedTheta, fixedLambda, seconds, token);

            var metadata = new Dictionary<string, string>(StringComparer.Ordinal)
            {
                ["dataset"] = "CIFAR-10 train",
                ["images"] = images.Count.ToString(CultureInfo.InvariantCulture),
                ["seed"] = parse.GetValue(seed).ToString(CultureInfo.InvariantCulture),
                ["writer"] = "scache " + (typeof(BuildCommand).Assembly.GetName().Version?.ToString() ?? "?"),
            };
            if (parse.GetValue(maxTrain) is { } max)
            {
                metadata["maxTrain"] = max.ToString(CultureInfo.InvariantCulture);
            }

            var full = Path.GetFullPath(path!);
            var written = progress.Timed($"save {full}", () =>
            {
                try
                {
                    Directory.CreateDirectory(Path.GetDirectoryName(full)!);
                    return classifier.Save(full, metadata, token);
                }
                catch (Exception ex) when (ex is (IOException or UnauthorizedAccessException) and not CacheFileException)
                {
                    throw new OutputException($"Could not write the cache file '{full}': {ex.Message}. Any previous file there is unchanged.", ex);
                }
            }, out var save);
            seconds["save"] = save.TotalSeconds;
            seconds["total"] = total.Elapsed.TotalSeconds;

            var result = new BuildResult(
                full, new FileInfo(full).Length, written.Count, written.Dimension, written.ClassCount, written.Provider, written.Model.Name,
                written.Model.CheckpointSha256, written.Layers, written.Flip, written.Theta, written.Lambda, written.FormatVersion,
                seconds["total"], seconds);
            return new CommandOutcome(result, console => Render(console, result));
        }, ct));
    }

    public Command Definition { get; }

    /// <summary>Streams the keys into a key file (resuming an unfinished one written with the same identity), with images/s and ETA.</summary>
    private static KeyStream StreamKeys(
        ExperimentSession session, LoadedModel loaded, ImageDataset images, IReadOnlyList<string> layers, ExactCacheMemoryFactory exact,
        string keysPath, string identity, CancellationToken token)
    {
        var fitter = session.Fitter(loaded, o => o.Layers = layers);
        var (classes, dimension) = fitter.Recipe(layers).Probe(loaded.Model);
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(keysPath))!);
        using var writer = exact.CreateKeyFile(keysPath, dimension, classes, identity, resume: true);
        if (writer.ResumedCount > 0)
        {
            session.Progress.Status(writer.IsComplete
                ? $"{writer.Path} is already complete ({writer.Count:N0} keys)"
                : $"resuming {writer.Path} after {writer.ResumedCount:N0} keys (the last complete chunk)");
        }

        var report = new SyncProgress<KeyFileBuildProgress>(p => session.Progress.Status(string.Create(CultureInfo.InvariantCulture,
            $"keys: {p.Done:N0}/{p.Total:N0} ({(double)p.Done / Math.Max(p.Total, 1):P0}), {p.ImagesPerSecond:0.0} images/s, ETA {p.Remaining?.ToString(@"hh\:mm\:ss", CultureInfo.InvariantCulture) ?? "?"}")));
        fitter.ExtractToKeyFile(images, layers, writer, report, token);
        return new KeyStream(writer.Path, writer.Count, writer.ResumedCount, writer.Layout.ScalarType.ToString());
    }

    /// <summary>
    /// A classifier over the finished key file at <paramref name="keysPath"/>: the exact provider maps it
    /// (<see cref="ExactCacheMemoryFactory.OpenKeyFile"/>); any other provider (RandomProjection over Exact or Hnsw, Hnsw, …) is built
    /// from it block by block (<see cref="CacheEvaluation.Build(ICacheMemoryFactory, KeyFile, int, IProgress{long}?, CancellationToken)"/>),
    /// so memory holds the store and one block, not the file's N × d. The file is checked as <c>Cache:Exact:VerifyKeyFiles</c> says.
    /// </summary>
    private static CacheClassifier KeyFileClassifier(
        ExperimentSession session, LoadedModel loaded, IReadOnlyList<string> layers, string keysPath, ExactCacheOptions exact,
        double? theta, double? lambda, IDictionary<string, double> seconds, CancellationToken token)
    {
        var open = new KeyFileOpenOptions { VerifyKeys = exact.VerifyKeyFiles };
        var provider = session.Provider;
        var memory = session.Progress.Timed($"build {provider.Provider} cache from {keysPath}", () =>
        {
            if (provider is ExactCacheMemoryFactory mapped)
            {
                return mapped.OpenKeyFile(keysPath, open);
            }

            using var file = KeyFile.Open(keysPath, open);
            var step = session.Progress.Step($"add keys to {provider.Provider}", file.Count);
            return CacheEvaluation.Build(provider, file, progress: step, cancellationToken: token);
        }, out var build);
        seconds["build"] = build.TotalSeconds;
        return Classifier(session, loaded, layers, memory, theta, lambda);
    }

    private static CacheClassifier Classifier(
        ExperimentSession session, LoadedModel loaded, IReadOnlyList<string> layers, ICacheMemory memory, double? theta, double? lambda)
    {
        try
        {
            return new CacheClassifier(loaded.Model, session.Fitter(loaded).Recipe(layers), memory, theta, lambda, new CacheClassifierOptions
            {
                Model = loaded.Id,
                Device = loaded.Device,
            });
        }
        catch
        {
            memory.Dispose();
            throw;
        }
    }

    private sealed record KeyStream(string Path, long Keys, long Resumed, string Storage);

    private static void Render(IAnsiConsole console, BuildResult r)
    {
        var table = new Table().AddColumns("", "");
        table.HideHeaders();
        table.AddPlainRow("file", r.Path);
        table.AddPlainRow("size", $"{r.SizeBytes.ToString("N0", CultureInfo.InvariantCulture)} bytes");
        table.AddPlainRow("keys", $"{r.Count.ToString("N0", CultureInfo.InvariantCulture)} × {r.Dimension} ({r.ClassCount} classes)");
        table.AddPlainRow("provider", r.Provider);
        table.AddPlainRow("model", $"{r.Model} [{string.Join(", ", r.Layers)}]{(r.Flip ? " + flips" : "")}");
        if (r.Theta is { } theta && r.Lambda is { } lambda)
        {
            table.AddPlainRow("θ, λ", string.Create(CultureInfo.InvariantCulture, $"{theta}, {lambda}"));
        }

        table.AddPlainRow("time", string.Join(", ", r.Timings.Select(kv => string.Create(CultureInfo.InvariantCulture, $"{kv.Key} {kv.Value:0.0} s"))));
        console.Write(table);
    }

    private sealed record BuildResult(
        string Path,
        long SizeBytes,
        long Count,
        int Dimension,
        int ClassCount,
        string Provider,
        string Model,
        string? CheckpointSha256,
        IReadOnlyList<string> Layers,
        bool Flip,
        double? Theta,
        double? Lambda,
        int FormatVersion,
        double Seconds,
        IReadOnlyDictionary<string, double> Timings);
}
