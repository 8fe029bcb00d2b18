using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using ScalableCache.Core;
using ScalableCache.RandomProjection;
using static TorchSharp.torch;
using static ScalableCache.Benchmarks.BenchmarkText;

namespace ScalableCache.Benchmarks;

/// <summary>
/// Random projection, in one run: (1) for each matrix kind, the time to generate the <c>[k, d]</c> matrix and the
/// projection throughput of <c>N</c> keys <c>[N, d] → [N, k]</c> with the dense float32 multiply the store uses, and,
/// for the sparse kinds, with a TorchSharp COO sparse multiply on a subset (the layout the store does not use: this is
/// the measurement behind that choice); (2) query time of the exact store at dimension d against the random-projection
/// store (Gaussian, re-normalised) over the exact store at dimension k, on the same clustered keys and queries, with the
/// speed-up and the top-class agreement between the two. Timings are medians (and, for queries, the best) of the repeats
/// after one warm-up; the two stores' queries are interleaved so background load hits both alike.
/// </summary>
/// <remarks>
/// Arguments (all optional): <c>--keys N</c> (50000), <c>--dim d</c> (4096), <c>--out k</c> (512), <c>--queries Q</c>
/// (500), <c>--classes C</c> (100), <c>--repeats R</c> (3), <c>--coo-rows n</c> (2000; 0 skips the COO measurement),
/// <c>--noise σ</c> (1.0: keys are <c>normalise(centre + σ·N(0, I/d))</c>), <c>--seed s</c> (1).
/// </remarks>
internal static class RandomProjectionBenchmark
{
    /// <summary>Name of this benchmark in the dispatcher.</summary>
    public const string Name = "randomprojection";

    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;
    private static readonly double[] Grid = [10, 20, 30, 40, 50, 60, 70, 80, 90];

    public static int Run(string[] args)
    {
        ArgumentNullException.ThrowIfNull(args);
        Settings settings;
        try
        {
            settings = Settings.Parse(args);
        }
        catch (FormatException error)
        {
            Console.Error.WriteLine(error.Message);
            return Program.UsageError;
        }

        var (n, d, k, q, c) = (settings.Keys, settings.Dimension, settings.Output, settings.Queries, settings.Classes);
        if (n < 1 || d < 1 || k < 1 || k > d || q < 1 || c < 1 || settings.Repeats < 1 || settings.CooRows < 0 || !(settings.Noise >= 0))
        {
            Console.Error.WriteLine("--keys, --dim, --queries, --classes, --repeats must be positive, 1 ≤ --out ≤ --dim, --coo-rows ≥ 0, --noise ≥ 0.");
            return Program.UsageError;
        }

        Console.WriteLine(Line(
            $"RandomProjection benchmark: N={n:N0} keys, d={d:N0} → k={k:N0}, Q={q:N0} queries, C={c} classes, noise {settings.Noise}, θ grid of {Grid.Length}, repeats {settings.Repeats}, torch threads {get_num_threads()}, {Environment.ProcessorCount} cores"));

        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var (keys, labels, queries) = Generate(settings);
        var json = new Dictionary<string, object?>
        {
            ["benchmark"] = Name,
            ["keys"] = n,
            ["dim"] = d,
            ["out"] = k,
            ["queries"] = q,
            ["classes"] = c,
            ["threads"] = get_num_threads(),
            ["repeats"] = settings.Repeats,
        };

        // (1) Projection throughput per kind.
        Console.WriteLine();
        Console.WriteLine(Line($"{"kind",-11} {"density",8} {"generate s",10} {"dense s",9} {"rows/s",11} {"GFLOP/s",8} {"COO rows/s",11} {"dense/COO",9}"));
        var flopsPerRow = 2.0 * d * k;
        foreach (var kind in Enum.GetValues<RandomProjectionKind>())
        {
            var definition = new RandomProjectionDefinition(kind, (ulong)settings.Seed, d, k);
            RandomProjectionMatrix? projection = null;
            var generate = Time(() => projection = RandomProjectionMatrix.Create(definition));
            using var dense = projection!;
            Time(() => dense.Apply(keys.narrow(0, 0, Math.Min(n, 1000))).Dispose());
            var denseTimes = Repeat(settings.Repeats, () => dense.Apply(keys).Dispose());
            var denseSeconds = Median(denseTimes);
            var denseRate = n / denseSeconds;

            double? cooRate = null;
            if (kind != RandomProjectionKind.Gaussian && settings.CooRows > 0)
            {
                using var sparse = RandomProjectionMatrix.Create(definition, null, sparse: true);
                var subset = keys.narrow(0, 0, Math.Min(n, settings.CooRows));
                Time(() => sparse.Apply(subset.narrow(0, 0, Math.Min(subset.shape[0], 100))).Dispose());
                cooRate = subset.shape[0] / Median(Repeat(settings.Repeats, () => sparse.Apply(subset).Dispose()));
            }

            var cooText = cooRate is { } r ? r.ToString("N0", Invariant) : "—";
            var ratioText = cooRate is { } r2 ? (denseRate / r2).ToString("F1", Invariant) : "—";
            Console.WriteLine(Line(
                $"{kind,-11} {dense.Density,8:F4} {generate,10:F3} {denseSeconds,9:F3} {denseRate,11:N0} {flopsPerRow * denseRate / 1e9,8:F1} {cooText,11} {ratioText,9}"));
            json[$"{kind}_generate_s"] = Round(generate);
            json[$"{kind}_dense_s"] = Round(denseSeconds);
            json[$"{kind}_dense_rows_per_s"] = Math.Round(denseRate);
            json[$"{kind}_coo_rows_per_s"] = cooRate is { } r3 ? Math.Round(r3) : null;
        }

        // (2) Queries: Exact at d vs RandomProjection(Gaussian) over Exact at k, same keys and queries.
        using var services = new ServiceCollection()
            .AddExactCache()
            .AddRandomProjectionCache(o =>
            {
                o.Inner = "Exact";
                o.OutputDimension = k;
                o.Seed = (ulong)settings.Seed;
            })
            .BuildServiceProvider();
        var exactFactory = services.GetServices<ICacheMemoryFactory>().Single(f => f.Provider == "Exact");
        var projectedFactory = services.GetRequiredService<RandomProjectionCacheMemoryFactory>();

        using var exact = exactFactory.Create(d, c);
        var exactAdd = Time(() => exact.Add(keys, labels));
        using var projected = projectedFactory.Create(d, c);
        var projectedAdd = Time(() => projected.Add(keys, labels));

        Time(() => exact.ClassLogMass(queries, Grid).Dispose());
        Time(() => projected.ClassLogMass(queries, Grid).Dispose());
        var exactTimes = new List<double>();
        var projectedTimes = new List<double>();
        for (var i = 0; i < settings.Repeats; i++)
        {
            exactTimes.Add(Time(() => exact.ClassLogMass(queries, Grid).Dispose()));
            projectedTimes.Add(Time(() => projected.ClassLogMass(queries, Grid).Dispose()));
        }

        var exactSeconds = Median(exactTimes);
        var projectedSeconds = Median(projectedTimes);
        var (exactBest, projectedBest) = (exactTimes.Min(), projectedTimes.Min());
        using var exactLogMass = exact.ClassLogMass(queries, Grid);
        using var projectedLogMass = projected.ClassLogMass(queries, Grid);
        var agreement = projectedLogMass.argmax(2).eq(exactLogMass.argmax(2)).to_type(ScalarType.Float64).mean().item<double>();
        var exactAccuracy = exactLogMass.argmax(2).eq(QueryLabels(settings).unsqueeze(0)).to_type(ScalarType.Float64).mean().item<double>();
        var speedUp = exactSeconds / projectedSeconds;
        var bestSpeedUp = exactBest / projectedBest;

        Console.WriteLine();
        Console.WriteLine(Line($"{"store",-34} {"add s",8} {"query s",9} {"best s",8}   runs (s)"));
        Console.WriteLine(Line($"{$"Exact, d={d}",-34} {exactAdd,8:F3} {exactSeconds,9:F3} {exactBest,8:F3}   {Runs(exactTimes)}"));
        Console.WriteLine(Line($"{$"RandomProjection→Exact, k={k}",-34} {projectedAdd,8:F3} {projectedSeconds,9:F3} {projectedBest,8:F3}   {Runs(projectedTimes)}"));
        Console.WriteLine(Line($"query speed-up (Exact / RP→Exact): {speedUp:F2}× on medians, {bestSpeedUp:F2}× on best runs (less sensitive to other load)"));
        Console.WriteLine(Line($"top-class agreement with Exact (all θ): {agreement:P1}; Exact's own accuracy on these clusters: {exactAccuracy:P1}"));

        json["exact_add_s"] = Round(exactAdd);
        json["projected_add_s"] = Round(projectedAdd);
        json["exact_query_s"] = Round(exactSeconds);
        json["projected_query_s"] = Round(projectedSeconds);
        json["query_speed_up"] = Round(speedUp);
        json["query_speed_up_best"] = Round(bestSpeedUp);
        json["top_class_agreement"] = Round(agreement);
        Console.WriteLine(JsonSerializer.Serialize(json));
        return Program.Success;
    }

    /// <summary>Clustered unit keys and queries: <c>normalise(centre_y + σ·N(0, I)/√d)</c>, labels uniform over classes.</summary>
    private static (Tensor Keys, Tensor Labels, Tensor Queries) Generate(Settings settings)
    {
        var (n, d, q, c) = (settings.Keys, settings.Dimension, settings.Queries, settings.Classes);
        manual_seed(settings.Seed);
        var centres = Normalise(randn(c, d));
        var labels = randint(0, c, [n], dtype: ScalarType.Int64);
        var keys = Normalise(centres.index_select(0, labels).add_(randn(n, d).mul_(settings.Noise / Math.Sqrt(d))));
        var queries = Normalise(centres.index_select(0, QueryLabels(settings)).add_(randn(q, d).mul_(settings.Noise / Math.Sqrt(d))));
        return (keys, labels, queries);
    }

    private static Tensor QueryLabels(Settings settings) => arange(settings.Queries, dtype: ScalarType.Int64).remainder(settings.Classes);

    private static Tensor Normalise(Tensor rows) => rows.div_(rows.norm(1, keepdim: true));

    private static List<double> Repeat(int repeats, Action action) => [.. Enumerable.Range(0, repeats).Select(_ => Time(action))];

    private static double Time(Action action)
    {
        var watch = Stopwatch.StartNew();
        action();
        return watch.Elapsed.TotalSeconds;
    }


    private static string Runs(List<double> runs) => string.Join(" ", runs.Select(r => r.ToString("F3", Invariant)));

    private static double Round(double value) => Math.Round(value, 4);

    private static string Line(FormattableString text) => text.ToString(Invariant);

    private sealed record Settings(int Keys, int Dimension, int Output, int Queries, int Classes, int Repeats, int CooRows, double Noise, int Seed)
    {
        public static Settings Parse(string[] args)
        {
            string? Value(string name) => BenchmarkText.ArgValue(args, name);

            int Int(string name, int fallback) => Value(name) is { } v
                ? int.TryParse(v, NumberStyles.Integer, Invariant, out var parsed) ? parsed : throw new FormatException($"{name} expects an integer, got '{v}'.")
                : fallback;

            double Double(string name, double fallback) => Value(name) is { } v
                ? double.TryParse(v, NumberStyles.Float, Invariant, out var parsed) ? parsed : throw new FormatException($"{name} expects a number, got '{v}'.")
                : fallback;

            return new Settings(
                Int("--keys", 50_000),
                Int("--dim", 4096),
                Int("--out", 512),
                Int("--queries", 500),
                Int("--classes", 100),
                Int("--repeats", 3),
                Int("--coo-rows", 2000),
                Double("--noise", 1.0),
                Int("--seed", 1));
        }
    }
}
