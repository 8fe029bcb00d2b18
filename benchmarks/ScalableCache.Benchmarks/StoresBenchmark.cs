using System.Diagnostics;
using System.Globalization;
using ScalableCache.Core;
using Microsoft.Extensions.DependencyInjection;
using ScalableCache.Hnsw;
using ScalableCache.RandomProjection;
using TorchSharp;
using static TorchSharp.torch;

using static ScalableCache.Benchmarks.BenchmarkText;

namespace ScalableCache.Benchmarks;

/// <summary>
/// Every key store on the same synthetic clustered keys (default 1,000,000 × 256), in one process: Exact,
/// RandomProjection over Exact, Hnsw and RandomProjection over Hnsw. For each: build time (wall and CPU), growth of the
/// process resident set over the build, query throughput of <see cref="ICacheMemory.ClassLogMass"/> (one θ), the error
/// of the p_mem classifier against the queries' true labels, and for the approximate stores top-1 agreement with Exact,
/// mean total-variation distance of p_mem from Exact's and (HNSW) recall@k. Ratios are against Exact in the same run.
/// </summary>
/// <remarks>
/// Arguments (all optional): <c>--keys N</c> (1000000), <c>--dim d</c> (256), <c>--classes C</c> (100), <c>--clusters K</c>
/// (10000), <c>--noise s</c> (1.0: same-cluster cosine about 0.5), <c>--queries Q</c> (2000), <c>--theta θ</c> (50), <c>--ratio r</c> (projection ratio,
/// 0.125), <c>--topk k</c> (50), <c>--ef efSearch</c> (128), <c>--efc efConstruction</c> (128), <c>--m M</c> (16),
/// <c>--seed s</c> (1), <c>--stores a,b</c> (Exact,RandomProjection,Hnsw,RandomProjection+Hnsw; Exact always runs).
/// </remarks>
internal static class StoresBenchmark
{
    /// <summary>Name of this benchmark in the dispatcher.</summary>
    public const string Name = "stores";

    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    private static readonly string[] AllStores = ["Exact", "RandomProjection", "Hnsw", "RandomProjection+Hnsw"];

    public static int Run(string[] args)
    {
        ArgumentNullException.ThrowIfNull(args);
        Settings settings;
        try
        {
            settings = Settings.Parse(args);
        }
        catch (FormatException e)
        {
            Console.Error.WriteLine(e.Message);
            return Program.UsageError;
        }

        Console.WriteLine(string.Create(Invariant,
            $"Stores benchmark: N={settings.Keys:N0} keys, d={settings.Dimension}, C={settings.Classes}, clusters={settings.Clusters}, noise={settings.Noise}, " +
            $"Q={settings.Queries}, θ={settings.Theta}, projection ratio {settings.Ratio}, HNSW M={settings.Connectivity} efC={settings.ExpansionAdd} " +
            $"efS={settings.ExpansionSearch} k={settings.TopK}; {Environment.ProcessorCount} cores, TorchSharp threads {get_num_threads()}"));

        var watch = Stopwatch.StartNew();
        var (keys, labels, queries, queryLabels) = SyntheticKeys.Generate(
            settings.Keys, settings.Queries, settings.Dimension, settings.Clusters, settings.Classes, settings.Seed, settings.Noise);
        using var keysScope = keys;
        using var labelsScope = labels;
        using var queriesScope = queries;
        using var queryLabelsScope = queryLabels;
        Console.WriteLine(string.Create(Invariant,
            $"Data generated in {watch.Elapsed.TotalSeconds:F1} s; keys {Mib((long)settings.Keys * settings.Dimension * sizeof(float))} as float32; resident {Mib(Resident())}"));

        using var services = new ServiceCollection().AddExactCache().BuildServiceProvider();
        var exactFactory = services.GetServices<ICacheMemoryFactory>().Single(f => f.Provider == "Exact");
        var hnswOptions = new HnswCacheOptions
        {
            Connectivity = settings.Connectivity,
            ExpansionAdd = settings.ExpansionAdd,
            ExpansionSearch = Math.Max(settings.ExpansionSearch, settings.TopK),
            TopK = settings.TopK,
            InitialCapacity = settings.Keys,
        };
        var hnswFactory = new HnswCacheMemoryFactory(hnswOptions);
        ICacheMemoryFactory[] inner = [exactFactory, hnswFactory];
        RandomProjectionCacheMemoryFactory Projection(string over) =>
            new(new RandomProjectionCacheOptions { Inner = over, Ratio = settings.Ratio }, inner);

        var results = new List<Measurement>();
        Measurement? exact = null;
        foreach (var store in AllStores.Where(s => s == "Exact" || settings.Stores.Contains(s, StringComparer.OrdinalIgnoreCase)))
        {
            ICacheMemoryFactory factory = store switch
            {
                "Exact" => exactFactory,
                "RandomProjection" => Projection("Exact"),
                "Hnsw" => hnswFactory,
                _ => Projection("Hnsw"),
            };
            var measurement = Measure(store, factory, settings, keys, labels, queries, queryLabels, exact);
            exact ??= measurement;
            results.Add(measurement);
        }

        Console.WriteLine();
        Console.WriteLine(
            "| store | build s (CPU s) | build ×Exact | resident MiB | memory ×Exact | queries/s | throughput ×Exact | p_mem error | top-1 agreement | mean TVD | recall@k |");
        Console.WriteLine("|---|---|---|---|---|---|---|---|---|---|---|");
        foreach (var m in results)
        {
            Console.WriteLine(string.Create(Invariant,
                $"| {m.Store} | {m.BuildSeconds:F1} ({m.BuildCpuSeconds:F1}) | {m.BuildSeconds / exact!.BuildSeconds:F2} | {m.ResidentBytes / 1048576.0:F0} | " +
                $"{(double)m.ResidentBytes / exact.ResidentBytes:F2} | {m.QueriesPerSecond:F0} | {m.QueriesPerSecond / exact.QueriesPerSecond:F2} | {m.Error:P2} | " +
                $"{Optional(m.Agreement, "F4")} | {Optional(m.TotalVariation, "F4")} | {Optional(m.Recall, "F4")} |"));
        }

        Console.WriteLine(string.Create(Invariant, $"Total {watch.Elapsed.TotalSeconds:F0} s; resident at end {Mib(Resident())}."));
        return Program.Success;
    }

    private static Measurement Measure(
        string store, ICacheMemoryFactory factory, Settings settings, Tensor keys, Tensor labels, Tensor queries, Tensor queryLabels, Measurement? exact)
    {
        Console.WriteLine($"— {store}");
        var before = Resident();
        using var process = Process.GetCurrentProcess();
        var cpu = process.TotalProcessorTime;
        var watch = Stopwatch.StartNew();
        var memory = factory.Create(settings.Dimension, settings.Classes);
        try
        {
            // Added in slices, as a serving cache grows; each Add is one published snapshot.
            const int slice = 100_000;
            for (var start = 0; start < settings.Keys; start += slice)
            {
                var n = Math.Min(slice, settings.Keys - start);
                using var k = keys.narrow(0, start, n);
                using var l = labels.narrow(0, start, n);
                memory.Add(k, l);
            }

            var build = watch.Elapsed.TotalSeconds;
            process.Refresh();
            var buildCpu = (process.TotalProcessorTime - cpu).TotalSeconds;
            var resident = Resident() - before;
            Console.WriteLine(string.Create(Invariant, $"  build {build:F1} s wall, {buildCpu:F1} s CPU; resident +{Mib(resident)}"));

            // Warm-up, then every query in batches of 256 (as an evaluation loop sends them).
            double[] thetas = [settings.Theta];
            using (var warm = queries.narrow(0, 0, Math.Min(64, settings.Queries)))
            {
                memory.ClassLogMass(warm, thetas).Dispose();
            }

            watch.Restart();
            var parts = new List<Tensor>();
            for (var start = 0; start < settings.Queries; start += 256)
            {
                using var batch = queries.narrow(0, start, Math.Min(256, settings.Queries - start));
                using var logMass = memory.ClassLogMass(batch, thetas);
                parts.Add(logMass[0].clone());
            }

            var seconds = watch.Elapsed.TotalSeconds;
            var all = cat(parts);
            foreach (var p in parts)
            {
                p.Dispose();
            }

            using var scope = NewDisposeScope();
            var pMem = Probabilities(all);
            var prediction = pMem.argmax(1);
            var error = prediction.ne(queryLabels).to_type(ScalarType.Float64).mean().item<double>();
            double? agreement = null, tvd = null, recall = null;
            if (exact is not null)
            {
                agreement = prediction.eq(exact.Prediction).to_type(ScalarType.Float64).mean().item<double>();
                tvd = (pMem - exact.PMem).abs().sum(1).mul(0.5).mean().item<double>();
            }

            if (memory is IHnswCacheMemory hnsw)
            {
                recall = HnswRecall.AtK(hnsw, queries, keys, settings.TopK);
            }

            var qps = settings.Queries / seconds;
            Console.WriteLine(string.Create(Invariant,
                $"  {qps:F0} queries/s; p_mem error {error:P2}; agreement {Optional(agreement, "F4")}, TVD {Optional(tvd, "F4")}; recall@{settings.TopK} {Optional(recall, "F4")}"));
            return new Measurement(
                store, build, buildCpu, resident, qps, error, agreement, tvd, recall,
                exact is null ? pMem.MoveToOuterDisposeScope() : pMem, exact is null ? prediction.MoveToOuterDisposeScope() : prediction);
        }
        finally
        {
            memory.Dispose();
        }
    }

    /// <summary>p_mem from per-class log-masses (classes with no mass, −∞, get 0).</summary>
    private static Tensor Probabilities(Tensor logMass) => logMass.to_type(ScalarType.Float64).softmax(1);

    private static string Optional(double? value, string format) => value is { } v ? v.ToString(format, Invariant) : "–";

    private static long Resident() => ProcessMemory.ResidentBytes();


    private sealed record Measurement(
        string Store, double BuildSeconds, double BuildCpuSeconds, long ResidentBytes, double QueriesPerSecond, double Error, double? Agreement,
        double? TotalVariation, double? Recall, Tensor PMem, Tensor Prediction);

    private sealed record Settings(
        int Keys, int Dimension, int Classes, int Clusters, double Noise, int Queries, double Theta, double Ratio, int TopK, int ExpansionSearch,
        int ExpansionAdd, int Connectivity, int Seed, IReadOnlyList<string> Stores)
    {
        public static Settings Parse(string[] args)
        {
            string? Value(string name) => BenchmarkText.ArgValue(args, name);

            int Int(string name, int fallback, int min) =>
                Value(name) is not { } v ? fallback
                : int.TryParse(v, NumberStyles.Integer, Invariant, out var x) && x >= min ? x
                : throw new FormatException($"{name} must be an integer ≥ {min} (got '{v}').");

            double Real(string name, double fallback) =>
                Value(name) is not { } v ? fallback
                : double.TryParse(v, NumberStyles.Float, Invariant, out var x) && x > 0 && double.IsFinite(x) ? x
                : throw new FormatException($"{name} must be a positive number (got '{v}').");

            var stores = Value("--stores")?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) ?? AllStores;
            var unknown = stores.Where(s => !AllStores.Contains(s, StringComparer.OrdinalIgnoreCase)).ToList();
            if (unknown.Count > 0)
            {
                throw new FormatException($"Unknown store '{string.Join("', '", unknown)}'; known: {string.Join(", ", AllStores)}.");
            }

            var keys = Int("--keys", 1_000_000, 1);
            var queries = Int("--queries", 2_000, 1);
            var topK = Int("--topk", 50, 1);
            if (topK > keys)
            {
                throw new FormatException("--topk must not exceed --keys.");
            }

            return new Settings(
                keys, Int("--dim", 256, 8), Int("--classes", 100, 2), Int("--clusters", 10_000, 1), Real("--noise", 1.0), queries, Real("--theta", 50),
                Real("--ratio", RandomProjectionCacheOptions.DefaultRatio), topK, Int("--ef", 128, 1), Int("--efc", 128, 1), Int("--m", 16, 2),
                Int("--seed", 1, 0), stores);
        }
    }
}
