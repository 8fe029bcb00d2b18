using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using ScalableCache.Core;
using ScalableCache.Core.Data;
using ScalableCache.Core.Models;
using ScalableCache.Exact;
using ScalableCache.Hnsw;
using TorchSharp;
using static TorchSharp.torch;

using static ScalableCache.Benchmarks.BenchmarkText;

namespace ScalableCache.Benchmarks;

/// <summary>
/// HNSW key store against hnswlib (the anchor, when Debian's <c>python3-hnswlib</c> is installed) and against the exact store,
/// on the same keys in the same run: build keys/s with one native thread and with all of them, query throughput of
/// <see cref="ICacheMemory.ClassLogMass"/> (search plus the top-k log-mass, at 1 θ and at 9 θ), recall@k of the retrieved
/// neighbours against exact top-k, top-1 class agreement with the exact log-mass, memory, and the SIMD target of USearch's
/// distance kernel.
/// </summary>
/// <remarks>
/// Arguments (all optional): <c>--keys N</c> (default 200000, up to 1000000), <c>--dim d</c> (256), <c>--classes C</c> (100),
/// <c>--clusters K</c> (1000), <c>--queries Q</c> (1000), <c>--topk k</c> (100), <c>--ef efSearch</c> (128), <c>--efc
/// efConstruction</c> (128), <c>--m M</c> (16), <c>--theta θ</c> (50), <c>--seed s</c> (1), <c>--threads T</c> (all cores),
/// <c>--skip-single-thread</c>, <c>--skip-usearch-build</c> (with the float32 kernel the keys are first inserted by USearch's add, the baseline of the library's managed insertion, <c>HnswCacheOptions.ManagedBuild</c>), <c>--no-anchor</c>, <c>--json FILE</c>, <c>--kernel Native|Float32|both</c> (both: USearch's
/// float32 distance kernel and this library's, one after the other on the same keys); <c>--real N</c> takes, instead of synthetic keys, the
/// ResNet-20 keys (layers <c>layer3.0, layer3.2</c>, d = 8,192) of the first N CIFAR-10 training images from <c>../shared</c>,
/// and the keys of the first Q test images as queries. With the float32 kernel the built memory is settled (searched by the
/// managed walk, <c>HnswCacheOptions.ManagedSearch</c>): its queries are timed in three rounds alternating with USearch's walk
/// of the same graph, and three more after the hnswlib anchor (which times three query rounds of its own); medians are reported.
/// </remarks>
internal static class HnswBenchmark
{
    /// <summary>Name of this benchmark in the dispatcher.</summary>
    public const string Name = "hnsw";

    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;
    private static readonly double[] NineThetas = [10, 20, 30, 40, 50, 60, 70, 80, 90];

    public static int Run(string[] args)
    {
        ArgumentNullException.ThrowIfNull(args);
        var settings = Settings.Parse(args);
        if (settings.Keys is < 1 or > 1_000_000)
        {
            Console.Error.WriteLine("--keys must be between 1 and 1000000.");
            return 2;
        }

        var threads = settings.Threads;
        using var scope = NewDisposeScope();
        var (keys, labels, queries, source) = settings.Real is { } real ? RealKeys(real, settings.Queries) : Synthetic(settings);
        var (n, d) = ((int)keys.shape[0], (int)keys.shape[1]);
        var classes = settings.Real is null ? settings.Classes : 10;
        Console.WriteLine(
            $"HNSW benchmark: {source}: N={n:N0} keys, d={d}, C={classes}, Q={queries.shape[0]}, M={settings.Connectivity}, " +
            $"efConstruction={settings.ExpansionAdd}, efSearch={settings.ExpansionSearch}, k={settings.TopK}, θ={settings.Theta}, threads={threads}");
        Console.WriteLine($"USearch {HnswVersion()}; TorchSharp threads {torch.get_num_threads()}; load {Load()}; resident {Resident()}");
        var results = new Dictionary<string, object?>
        {
            ["source"] = source, ["keys"] = n, ["dimension"] = d, ["queries"] = queries.shape[0], ["topK"] = settings.TopK,
            ["connectivity"] = settings.Connectivity, ["expansionAdd"] = settings.ExpansionAdd, ["expansionSearch"] = settings.ExpansionSearch,
            ["threads"] = threads, ["loadBefore"] = Load(),
        };

        HnswCacheOptions Options(int t, HnswDistanceKernel kernel, bool managed = true, bool managedBuild = true) => new()
        {
            ManagedSearch = managed,
            ManagedBuild = managedBuild,
            TopK = settings.TopK,
            ExpansionSearch = Math.Max(settings.ExpansionSearch, settings.TopK),
            ExpansionAdd = settings.ExpansionAdd,
            Connectivity = settings.Connectivity,
            Threads = t,
            DistanceKernel = kernel,
        };

        using var exact = new ExactCacheMemory(d, classes);
        exact.Add(keys, labels);
        double[] one = [settings.Theta];
        using (var warm = queries.narrow(0, 0, Math.Min(16, queries.shape[0])))
        {
            exact.ClassLogMass(warm, one).Dispose();
        }

        var q = queries.shape[0];
        Tensor exactLogMass = null!;
        var (exactSeconds, _) = Time("Queries, Exact, 1 θ", () => exactLogMass = exact.ClassLogMass(queries, one));
        results["exactQueriesPerSecond"] = q / exactSeconds;

        // Each distance kernel in turn on the same keys: build (one native thread, then all), queries, recall.
        var measured = new Dictionary<HnswDistanceKernel, (double Build, double Queries, double Recall)>();
        HnswCacheMemory? settledMemory = null; // the float32 kernel's memory, kept for the rounds after the anchor
        var ourRounds = new List<double>();
        foreach (var kernel in settings.Kernels)
        {
            Console.WriteLine($"-- distance kernel {kernel}");
            var figures = new Dictionary<string, object?>();
            if (!settings.SkipSingleThread)
            {
                using var single = HnswCacheMemory.Create(d, classes, Options(1, kernel));
                var (wall, _) = Time("Build, 1 thread", () => single.Add(keys, labels));
                Console.WriteLine($"  {n / wall:N0} keys/s");
                figures["buildKeysPerSecondOneThread"] = n / wall;
            }

            double? usearchBuild = null;
            if (kernel == HnswDistanceKernel.Float32 && !settings.SkipUSearchBuild)
            {
                // The same keys inserted by USearch's add (then settled), before the managed insertion below.
                using var baseline = HnswCacheMemory.Create(d, classes, Options(threads, kernel, managedBuild: false));
                var (wall, cpu) = Time($"Build, {threads} threads, USearch's insertion", () => baseline.Add(keys, labels));
                var baselineRecall = HnswRecall.AtK(baseline, queries, keys, settings.TopK);
                Console.WriteLine(string.Create(Invariant, $"  {n / wall:N0} keys/s; recall@{settings.TopK} {baselineRecall:F4}"));
                figures["buildKeysPerSecondUSearchInsertion"] = n / wall;
                figures["buildCpuSecondsUSearchInsertion"] = cpu;
                figures["recallUSearchInsertion"] = baselineRecall;
                usearchBuild = n / wall;
            }

            var before = Environment.WorkingSet;
            var hnsw = HnswCacheMemory.Create(d, classes, Options(threads, kernel));
            var (buildWall, buildCpu) = Time($"Build, {threads} threads", () => hnsw.Add(keys, labels));
            Console.WriteLine($"  {n / buildWall:N0} keys/s; USearch kernel target {hnsw.HardwareAcceleration}; native index {Mib(hnsw.NativeMemoryBytes)}, resident +{Mib(Environment.WorkingSet - before)}");
            if (usearchBuild is { } baselineRate)
            {
                Console.WriteLine(string.Create(Invariant, $"  managed insertion / USearch's insertion ×{n / buildWall / baselineRate:F2} (same keys, one build each)"));
            }

            figures["buildKeysPerSecond"] = n / buildWall;
            figures["buildCpuSeconds"] = buildCpu;
            figures["usearchTarget"] = hnsw.HardwareAcceleration;

            using (var warm = queries.narrow(0, 0, Math.Min(16, queries.shape[0])))
            {
                hnsw.ClassLogMass(warm, one).Dispose();
            }

            Tensor hnswLogMass = null!;
            var (oneTheta, oneCpu) = Time("Queries, HNSW, 1 θ", () => hnswLogMass = hnsw.ClassLogMass(queries, one));
            var (nineThetas, _) = Time("Queries, HNSW, 9 θ", () => hnsw.ClassLogMass(queries, NineThetas).Dispose());
            Console.WriteLine($"  HNSW {q / oneTheta:N0} q/s at 1 θ, {q / nineThetas:N0} q/s at 9 θ; Exact {q / exactSeconds:N0} q/s; HNSW / Exact ×{exactSeconds / oneTheta:F2}");
            figures["queriesPerSecond"] = q / oneTheta;
            figures["queryCpuSeconds"] = oneCpu;
            figures["queriesPerSecondNineThetas"] = q / nineThetas;

            var recall = HnswRecall.AtK(hnsw, queries, keys, settings.TopK);
            var agree = hnswLogMass[0].argmax(1).eq(exactLogMass[0].argmax(1)).to_type(ScalarType.Float32).mean().item<float>();
            Console.WriteLine($"  Recall@{settings.TopK} {recall:F4}; top-1 class agreement with Exact {agree:F4}; resident {Resident()}");
            figures["recall"] = recall;
            figures["top1AgreementWithExact"] = agree;
            figures["settled"] = hnsw.IsSettled;
            var queriesPerSecond = q / oneTheta;
            if (hnsw.IsSettled)
            {
                // The same graph searched by USearch's walk (loaded without ManagedSearch), rounds alternating with ours.
                var saved = hnsw.SaveGraph();
                using var usearchWalk = HnswCacheMemory.Load(saved.Graph, saved.Labels, classes, Options(threads, kernel, managed: false));
                using (var warm = queries.narrow(0, 0, Math.Min(16, q)))
                {
                    usearchWalk.ClassLogMass(warm, one).Dispose();
                }
                var theirs = new List<double>();
                for (var round = 0; round < 3; round++)
                {
                    ourRounds.Add(Time($"Queries, 1 θ, managed walk, round {round + 1}", () => hnsw.ClassLogMass(queries, one).Dispose()).Wall);
                    theirs.Add(Time($"Queries, 1 θ, USearch's walk of the same graph, round {round + 1}", () => usearchWalk.ClassLogMass(queries, one).Dispose()).Wall);
                }

                var usearchRecall = HnswRecall.AtK(usearchWalk, queries, keys, settings.TopK);
                queriesPerSecond = q / Median(ourRounds);
                Console.WriteLine(string.Create(Invariant,
                    $"  managed walk {queriesPerSecond:N0} q/s, USearch's walk {q / Median(theirs):N0} q/s (medians of 3): ×{Median(theirs) / Median(ourRounds):F2}; recall {recall:F4} vs {usearchRecall:F4}"));
                figures["queriesPerSecondManagedWalk"] = queriesPerSecond;
                figures["queriesPerSecondUSearchWalk"] = q / Median(theirs);
                figures["recallUSearchWalk"] = usearchRecall;
            }

            results[$"kernel{kernel}"] = figures;
            measured[kernel] = (n / buildWall, queriesPerSecond, recall);
            if (kernel == HnswDistanceKernel.Float32)
            {
                settledMemory = hnsw;
            }
            else
            {
                hnsw.Dispose();
            }
        }

        if (measured.TryGetValue(HnswDistanceKernel.Native, out var native) && measured.TryGetValue(HnswDistanceKernel.Float32, out var own))
        {
            Console.WriteLine(string.Create(Invariant,
                $"Float32 kernel / USearch's: build ×{own.Build / native.Build:F2}, queries ×{own.Queries / native.Queries:F2}, recall {own.Recall:F4} vs {native.Recall:F4}"));
        }

        var ours = measured.TryGetValue(HnswDistanceKernel.Float32, out var f) ? f : measured.Values.Last();
        if (!settings.NoAnchor)
        {
            results["hnswlib"] = Anchor(settings, keys, queries, threads, ours.Build, ours.Queries, ours.Recall);
            if (settledMemory is { IsSettled: true } && results["hnswlib"] is Dictionary<string, object> anchor)
            {
                // The machine's speed drifts over minutes: the same rounds again after the anchor, and the ratio over all six.
                for (var round = 0; round < 3; round++)
                {
                    ourRounds.Add(Time($"Queries, 1 θ, managed walk, after the anchor, round {round + 1}", () => settledMemory.ClassLogMass(queries, one).Dispose()).Wall);
                }

                var bracketed = q / Median(ourRounds);
                var ratio = bracketed / (double)anchor["queriesPerSecond"];
                Console.WriteLine(string.Create(Invariant,
                    $"Ours (median of 6 rounds around the anchor) {bracketed:N0} q/s / hnswlib (median of its 3) ×{ratio:F2}"));
                anchor["queryRatioBracketed"] = ratio;
                anchor["ourQueriesPerSecondBracketed"] = bracketed;
            }
        }

        settledMemory?.Dispose();

        results["loadAfter"] = Load();
        if (settings.Json is { } json)
        {
            File.WriteAllText(json, JsonSerializer.Serialize(results, new JsonSerializerOptions { WriteIndented = true }));
            Console.WriteLine($"Wrote {json}");
        }

        return 0;
    }

    /// <summary>hnswlib on the same keys and queries (files in a temporary folder), its figures and ours over its.</summary>
    private static object? Anchor(Settings settings, Tensor keys, Tensor queries, int threads, double ourBuild, double ourQueries, double ourRecall)
    {
        if (!PythonAnchor.Available("hnswlib", out var why))
        {
            Console.WriteLine($"hnswlib anchor skipped: {why} (apt-get install python3-hnswlib)");
            return null;
        }

        var folder = Directory.CreateTempSubdirectory("scache-hnsw-anchor-");
        try
        {
            var keyFile = Path.Combine(folder.FullName, "keys.f32");
            var queryFile = Path.Combine(folder.FullName, "queries.f32");
            File.WriteAllBytes(keyFile, keys.contiguous().bytes.ToArray());
            File.WriteAllBytes(queryFile, queries.contiguous().bytes.ToArray());
            Console.WriteLine($"hnswlib ({PythonAnchor.Interpreter}) on the same keys and queries …");
            var result = PythonAnchor.Run(
                "hnswlib_anchor.py",
                [keyFile, queryFile, .. new long[]
                {
                    keys.shape[0], keys.shape[1], queries.shape[0], settings.TopK, settings.Connectivity, settings.ExpansionAdd,
                    Math.Max(settings.ExpansionSearch, settings.TopK), threads,
                }.Select(v => v.ToString(Invariant))],
                TimeSpan.FromHours(2));
            var build = keys.shape[0] / result.GetProperty("buildSeconds").GetDouble();
            var query = queries.shape[0] / result.GetProperty("querySeconds").GetDouble(); // the median of its rounds
            var recall = result.GetProperty("recall").GetDouble();
            Console.WriteLine(string.Create(Invariant,
                $"  hnswlib {result.GetProperty("hnswlib").GetString()}: build {build:N0} keys/s [{result.GetProperty("buildCpuSeconds").GetDouble():F2} s CPU], " +
                $"query {query:N0} q/s [{result.GetProperty("queryCpuSeconds").GetDouble():F2} s CPU], recall@{settings.TopK} {recall:F4}"));
            Console.WriteLine(string.Create(Invariant,
                $"Ours / hnswlib: build ×{ourBuild / build:F2}, query ×{ourQueries / query:F2} (ours includes the top-k log-mass), recall {ourRecall:F4} vs {recall:F4}"));
            return new Dictionary<string, object>
            {
                ["version"] = result.GetProperty("hnswlib").GetString() ?? "?",
                ["buildKeysPerSecond"] = build,
                ["queriesPerSecond"] = query,
                ["recall"] = recall,
                ["buildRatio"] = ourBuild / build,
                ["queryRatio"] = ourQueries / query,
            };
        }
        finally
        {
            folder.Delete(recursive: true);
        }
    }

    private static (Tensor Keys, Tensor Labels, Tensor Queries, string Source) Synthetic(Settings settings)
    {
        var (keys, labels, queries, _) = SyntheticKeys.Generate(
            settings.Keys, settings.Queries, settings.Dimension, settings.Clusters, settings.Classes, settings.Seed);
        return (keys, labels, queries, $"synthetic clustered unit keys ({settings.Clusters} clusters)");
    }

    /// <summary>ResNet-20 keys of CIFAR-10 training images and test-image queries, as <c>scache reproduce</c> makes them.</summary>
    private static (Tensor Keys, Tensor Labels, Tensor Queries, string Source) RealKeys(int train, int test)
    {
        string[] layers = ["layer3.0", "layer3.2"];
        var shared = SharedFolder() ?? throw new DirectoryNotFoundException("No shared/ folder beside the repository.");
        using var loaded = new ModelRegistry().Load("resnet20", Path.Combine(shared, "models", "cifar10", "resnet20.safetensors"));
        var fitter = new CacheFitter(loaded.Model, new CacheFitOptions
        {
            Store = new ExactCacheMemoryFactory(new ExactCacheOptions()),
            Input = loaded.Spec.Normalization,
            InputShape = loaded.Spec.Input,
        });
        var cifar = DatasetLocator.ResolveCifar10(Path.Combine(shared, "data", "cifar10"), DatasetParts.Train | DatasetParts.Test);
        var watch = Stopwatch.StartNew();
        using var keys = fitter.Extract(Cifar10.LoadTrain(cifar).Slice(0, train), layers, "train");
        using var queries = fitter.Extract(Cifar10.LoadTest(cifar).Slice(0, test), layers, "test");
        Console.WriteLine($"Extracted {train:N0} + {test:N0} ResNet-20 keys in {watch.Elapsed.TotalSeconds:F0} s");
        return (keys.Keys.contiguous().MoveToOuterDisposeScope(), keys.Labels.clone().MoveToOuterDisposeScope(),
            queries.Keys.contiguous().MoveToOuterDisposeScope(), $"ResNet-20 keys of {train:N0} CIFAR-10 training images (layer3.0, layer3.2)");
    }

    /// <summary>Wall and process CPU seconds of <paramref name="action"/>, printed (other load skews wall time, CPU time less so).</summary>
    private static (double Wall, double Cpu) Time(string label, Action action)
    {
        using var process = Process.GetCurrentProcess();
        var cpu = process.TotalProcessorTime;
        var watch = Stopwatch.StartNew();
        action();
        var wall = watch.Elapsed.TotalSeconds;
        process.Refresh();
        var used = (process.TotalProcessorTime - cpu).TotalSeconds;
        Console.WriteLine(string.Create(Invariant, $"{label}: {wall:F2} s wall, {used:F2} s CPU"));
        return (wall, used);
    }

    private static string Load() => File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Trim() : "?";

    private static string Resident() => Mib(Environment.WorkingSet);

    private static string HnswVersion() =>
        System.Runtime.InteropServices.Marshal.PtrToStringUTF8(USearchNative.Version()) ?? "?";

    private sealed record Settings(
        int Keys, int Dimension, int Classes, int Clusters, int Queries, int TopK, int ExpansionSearch, int ExpansionAdd, int Connectivity,
        double Theta, int Seed, int Threads, bool SkipSingleThread, bool NoAnchor, int? Real, string? Json, HnswDistanceKernel[] Kernels,
        bool SkipUSearchBuild)
    {
        public static Settings Parse(string[] args)
        {
            string? Value(string name) => ArgValue(args, name);

            int Int(string name, int fallback) => Value(name) is { } v ? int.Parse(v, Invariant) : fallback;

            return new Settings(
                Int("--keys", 200_000),
                Int("--dim", 256),
                Int("--classes", 100),
                Int("--clusters", 1000),
                Int("--queries", 1000),
                Int("--topk", 100),
                Int("--ef", 128),
                Int("--efc", 128),
                Int("--m", 16),
                Value("--theta") is { } theta ? double.Parse(theta, Invariant) : 50,
                Int("--seed", 1),
                Int("--threads", Environment.ProcessorCount),
                args.Contains("--skip-single-thread"),
                args.Contains("--no-anchor"),
                Value("--real") is { } real ? int.Parse(real, Invariant) : null,
                Value("--json"),
                Value("--kernel") is { } kernel && !kernel.Equals("both", StringComparison.OrdinalIgnoreCase)
                    ? [Enum.Parse<HnswDistanceKernel>(kernel, ignoreCase: true)]
                    : [HnswDistanceKernel.Native, HnswDistanceKernel.Float32],
                args.Contains("--skip-usearch-build"));
        }
    }

}
