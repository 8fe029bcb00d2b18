using System.Diagnostics;
using System.Globalization;
using Microsoft.Extensions.DependencyInjection;
using ScalableCache.Core;
using ScalableCache.Hnsw;
using TorchSharp;
using static TorchSharp.torch;

using static ScalableCache.Benchmarks.BenchmarkText;

namespace ScalableCache.Benchmarks;

/// <summary>
/// HNSW key store against the exact store on synthetic clustered unit keys: build time with one native thread and with
/// all of them, query throughput of <see cref="ICacheMemory.ClassLogMass"/> for both stores (ratio measured in the same
/// run), recall@k of the retrieved neighbours against exact top-k, top-1 class agreement with the exact log-mass, and
/// memory (native index bytes and process resident set).
/// </summary>
/// <remarks>
/// Arguments (all optional): <c>--keys N</c> (default 200000, up to 1000000), <c>--dim d</c> (256), <c>--classes C</c>
/// (100), <c>--clusters K</c> (1000), <c>--queries Q</c> (1000), <c>--topk k</c> (50), <c>--ef efSearch</c> (64),
/// <c>--theta θ</c> (50), <c>--seed s</c> (1), <c>--skip-single-thread</c>.
/// </remarks>
internal static class HnswBenchmark
{
    /// <summary>Name of this benchmark in the dispatcher.</summary>
    public const string Name = "hnsw";

    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    public static int Run(string[] args)
    {
        ArgumentNullException.ThrowIfNull(args);
        var settings = Settings.Parse(args);
        if (settings.Keys is < 1 or > 1_000_000)
        {
            Console.Error.WriteLine("--keys must be between 1 and 1000000.");
            return 2;
        }

        var allThreads = Environment.ProcessorCount;
        Console.WriteLine(
            $"HNSW benchmark: N={settings.Keys:N0} keys, d={settings.Dimension}, C={settings.Classes}, clusters={settings.Clusters}, " +
            $"Q={settings.Queries}, TopK={settings.TopK}, efSearch={settings.ExpansionSearch}, θ={settings.Theta}, cores={allThreads}");
        Console.WriteLine($"USearch {HnswVersion()}; TorchSharp threads {torch.get_num_threads()}");

        using var scope = NewDisposeScope();
        var (keys, labels, queries, _) = SyntheticKeys.Generate(
            settings.Keys, settings.Queries, settings.Dimension, settings.Clusters, settings.Classes, settings.Seed);
        Console.WriteLine($"Data generated: resident {Resident()}");

        using var services = new ServiceCollection()
            .AddExactCache()
            .AddHnswCache(o =>
            {
                o.TopK = settings.TopK;
                o.ExpansionSearch = Math.Max(settings.ExpansionSearch, settings.TopK);
                o.Threads = allThreads;
            })
            .BuildServiceProvider();
        var factories = services.GetServices<ICacheMemoryFactory>().ToList();
        var hnswFactory = (HnswCacheMemoryFactory)factories.Single(f => f.Provider == HnswCacheMemoryFactory.ProviderName);
        var exactFactory = factories.Single(f => f.Provider == "Exact");

        // Build: one native thread, then all cores (ratio from the same run).
        double? singleSeconds = null;
        if (!settings.SkipSingleThread)
        {
            var one = new HnswCacheMemoryFactory(new HnswCacheOptions
            {
                TopK = settings.TopK,
                ExpansionSearch = Math.Max(settings.ExpansionSearch, settings.TopK),
                Threads = 1,
            });
            using var single = one.CreateHnsw(settings.Dimension, settings.Classes);
            singleSeconds = Time(() => single.Add(keys, labels));
            Console.WriteLine($"Build, 1 thread:        {singleSeconds:F2} s  ({settings.Keys / singleSeconds:N0} keys/s)");
        }

        var before = Environment.WorkingSet;
        using var hnsw = hnswFactory.CreateHnsw(settings.Dimension, settings.Classes);
        var allSeconds = Time(() => hnsw.Add(keys, labels));
        Console.WriteLine(
            $"Build, {allThreads} threads:       {allSeconds:F2} s  ({settings.Keys / allSeconds:N0} keys/s)" +
            (singleSeconds is { } s1 ? $"  speed-up ×{s1 / allSeconds:F2}" : string.Empty));
        Console.WriteLine(
            $"HNSW memory: native index {Mib(hnsw.NativeMemoryBytes)}, resident +{Mib(Environment.WorkingSet - before)} " +
            $"(keys alone {Mib((long)settings.Keys * settings.Dimension * sizeof(float))} as float32)");

        before = Environment.WorkingSet;
        using var exact = exactFactory.Create(settings.Dimension, settings.Classes);
        var exactBuild = Time(() => exact.Add(keys, labels));
        Console.WriteLine($"Exact store add:        {exactBuild:F2} s, resident +{Mib(Environment.WorkingSet - before)}");

        // Query throughput (one warm-up call each, then the timed call over all queries).
        double[] thetas = [settings.Theta];
        using (var warm = queries.narrow(0, 0, Math.Min(16, settings.Queries)))
        {
            hnsw.ClassLogMass(warm, thetas).Dispose();
            exact.ClassLogMass(warm, thetas).Dispose();
        }

        Tensor hnswLogMass = null!, exactLogMass = null!;
        var hnswSeconds = Time(() => hnswLogMass = hnsw.ClassLogMass(queries, thetas));
        var exactSeconds = Time(() => exactLogMass = exact.ClassLogMass(queries, thetas));
        Console.WriteLine($"Queries, HNSW:          {settings.Queries / hnswSeconds:N0} queries/s ({hnswSeconds * 1e3 / settings.Queries:F3} ms each)");
        Console.WriteLine($"Queries, Exact:         {settings.Queries / exactSeconds:N0} queries/s ({exactSeconds * 1e3 / settings.Queries:F3} ms each)");
        Console.WriteLine($"HNSW / Exact throughput: ×{exactSeconds / hnswSeconds:F2}");

        // Quality: recall@k of the retrieved ids against exact top-k, and top-1 class agreement with the exact log-mass.
        var recall = HnswRecall.AtK(hnsw, queries, keys, settings.TopK);
        var agree = hnswLogMass[0].argmax(1).eq(exactLogMass[0].argmax(1)).to_type(ScalarType.Float32).mean().item<float>();
        Console.WriteLine($"Recall@{settings.TopK}:              {recall:F4}");
        Console.WriteLine($"Top-1 class agreement with Exact: {agree:F4}");
        Console.WriteLine($"Resident at end:        {Resident()}");
        return 0;
    }

    /// <summary>Wall-clock seconds of <paramref name="action"/>; also prints the process CPU seconds it used (other load skews wall time).</summary>
    private static double Time(Action action)
    {
        using var process = Process.GetCurrentProcess();
        var cpu = process.TotalProcessorTime;
        var watch = Stopwatch.StartNew();
        action();
        var wall = watch.Elapsed.TotalSeconds;
        process.Refresh();
        Console.WriteLine(string.Create(Invariant, $"  [{wall:F2} s wall, {(process.TotalProcessorTime - cpu).TotalSeconds:F2} s CPU]"));
        return wall;
    }


    private static string Resident() => Mib(Environment.WorkingSet);

    private static string HnswVersion() =>
        System.Runtime.InteropServices.Marshal.PtrToStringUTF8(USearchNative.Version()) ?? "?";

    private sealed record Settings(
        int Keys, int Dimension, int Classes, int Clusters, int Queries, int TopK, int ExpansionSearch, double Theta, int Seed, bool SkipSingleThread)
    {
        public static Settings Parse(string[] args)
        {
            string? Value(string name) => BenchmarkText.ArgValue(args, name);

            int Int(string name, int fallback) => Value(name) is { } v ? int.Parse(v, Invariant) : fallback;

            return new Settings(
                Int("--keys", 200_000),
                Int("--dim", 256),
                Int("--classes", 100),
                Int("--clusters", 1000),
                Int("--queries", 1000),
                Int("--topk", 50),
                Int("--ef", 64),
                Value("--theta") is { } theta ? double.Parse(theta, Invariant) : 50,
                Int("--seed", 1),
                args.Contains("--skip-single-thread"));
        }
    }
}
