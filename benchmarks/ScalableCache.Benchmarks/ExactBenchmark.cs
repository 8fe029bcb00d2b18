using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using ScalableCache.Core;
using ScalableCache.Exact;
using TorchSharp;
using static TorchSharp.torch;

using static ScalableCache.Benchmarks.BenchmarkText;

namespace ScalableCache.Benchmarks;

/// <summary>
/// The exact store's <see cref="ICacheMemory.ClassLogMass"/> on random unit keys against a bare <c>torch.mm</c> of the
/// same shapes <c>[Q, d] × [d, N]</c>, measured in the same run and interleaved: seconds (median of the repeats after one
/// warm-up), GFLOP/s (<c>2·Q·N·d / s</c>), the ratio mm time / cache time (goal ≥ 0.8), the ratio of a 9-θ call to a
/// 1-θ call (goal ≤ 1.5), the process's peak working set and the extra resident memory of one 9-θ call, and the largest
/// log-mass error against a float64 reference on a few queries.
/// </summary>
/// <remarks>
/// Arguments (all optional): <c>--keys N</c> (50000), <c>--dim d</c> (4096), <c>--queries Q</c> (1000), <c>--classes C</c>
/// (100), <c>--repeats R</c> (3), <c>--key-block B</c> and <c>--query-block b</c> (the store's defaults),
/// <c>--storage Float32|Float16</c>, <c>--threads t</c> (libtorch's default: one per core), <c>--seed s</c> (1), <c>--device cpu|cuda</c>
/// (cpu; with cuda the keys live on the GPU, the bare mm runs there too and every timing waits for the device).
/// </remarks>
internal static class ExactBenchmark
{
    /// <summary>Name of this benchmark in the dispatcher.</summary>
    public const string Name = "exact";

    private const double MmRatioGoal = 0.8;
    private const double ThetaRatioGoal = 1.5;
    private const int CheckedQueries = 8;

    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;
    private static readonly double[] Grid = [10, 20, 30, 40, 50, 60, 70, 80, 90];
    private static readonly double[] Single = [50];

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

        if (settings.Keys < 1 || settings.Dimension < 1 || settings.Queries < 1 || settings.Classes < 1 || settings.Repeats < 1
            || settings.Threads < 1)
        {
            Console.Error.WriteLine("--keys, --dim, --queries, --classes, --repeats and --threads must be positive.");
            return Program.UsageError;
        }

        if (settings.Threads is { } threads)
        {
            set_num_threads(threads);
        }

        using var services = new ServiceCollection()
            .AddExactCache(o =>
            {
                o.KeyBlockSize = settings.KeyBlock ?? o.KeyBlockSize;
                o.QueryBlockSize = settings.QueryBlock ?? o.QueryBlockSize;
                o.StorageType = settings.Storage;
                o.Device = settings.Device;
            })
            .BuildServiceProvider();
        ICacheMemoryFactory factory;
        ExactCacheOptions options;
        try
        {
            options = services.GetRequiredService<Microsoft.Extensions.Options.IOptions<ExactCacheOptions>>().Value;
            factory = services.GetServices<ICacheMemoryFactory>().Single(f => f.Provider == "Exact");
        }
        catch (Microsoft.Extensions.Options.OptionsValidationException error)
        {
            Console.Error.WriteLine(error.Message);
            return Program.UsageError;
        }

        var (n, d, q, c) = (settings.Keys, settings.Dimension, settings.Queries, settings.Classes);
        var flops = 2.0 * q * n * d;
        Console.WriteLine(Line(
            $"Exact benchmark: N={n:N0} keys × d={d:N0}, Q={q:N0} queries, C={c} classes, θ grid of {Grid.Length} ({Grid[0]}…{Grid[^1]}), key block {options.KeyBlockSize}, query block {options.QueryBlockSize}, storage {options.StorageType}, device {settings.Device ?? "cpu"}, torch threads {get_num_threads()}, {Environment.ProcessorCount} cores"));

        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        manual_seed(settings.Seed);
        var keys = randn(n, d);
        keys.div_(keys.norm(1, keepdim: true));
        var labels = randint(0, c, [n], dtype: ScalarType.Int64);
        var queries = randn(q, d);
        queries.div_(queries.norm(1, keepdim: true));
        var device = ScalableCache.Core.TorchDevices.Resolve(settings.Device);
        var onDevice = device.type == DeviceType.CUDA;
        var deviceQueries = onDevice ? queries.to(device) : queries;
        var keysT = onDevice ? keys.to(device).t() : keys.t();
        sync = onDevice ? () => cuda.synchronize(device) : null;

        using var memory = factory.Create(d, c);
        var addSeconds = Time(() => memory.Add(keys, labels));
        Console.WriteLine(Line($"Add: {addSeconds:F2} s; resident {Mib(Environment.WorkingSet)}"));

        // Warm-up, then interleaved repeats so background load hits all three alike.
        Time(() => mm(deviceQueries, keysT).Dispose());
        Time(() => memory.ClassLogMass(queries, Grid).Dispose());
        Time(() => memory.ClassLogMass(queries, Single).Dispose());
        var mmTimes = new List<double>();
        var gridTimes = new List<double>();
        var singleTimes = new List<double>();
        long? callExtraBytes = null;
        for (var r = 0; r < settings.Repeats; r++)
        {
            mmTimes.Add(Time(() => mm(deviceQueries, keysT).Dispose()));
            var start = ResetPeakResident();
            gridTimes.Add(Time(() => memory.ClassLogMass(queries, Grid).Dispose()));
            if (start is { } before && PeakResident() is { } peak)
            {
                callExtraBytes = Math.Max(callExtraBytes ?? 0, peak - before);
            }

            singleTimes.Add(Time(() => memory.ClassLogMass(queries, Single).Dispose()));
        }

        long peakWorkingSet;
        using (var process = Process.GetCurrentProcess())
        {
            peakWorkingSet = process.PeakWorkingSet64; // before the accuracy check below allocates its own buffers
        }

        var maxError = CheckAccuracy(memory, queries, keys, labels, c);

        double mmSeconds = Median(mmTimes), gridSeconds = Median(gridTimes), singleSeconds = Median(singleTimes);
        var mmRatio = mmSeconds / gridSeconds;
        var thetaRatio = gridSeconds / singleSeconds;

        Console.WriteLine();
        Console.WriteLine(Line($"{"",-28} {"median s",9} {"GFLOP/s",9}   runs (s)"));
        Row("torch.mm [Q,d]×[d,N]", mmSeconds, flops, mmTimes);
        Row($"ClassLogMass, {Grid.Length} θ", gridSeconds, flops, gridTimes);
        Row("ClassLogMass, 1 θ", singleSeconds, flops, singleTimes);
        Console.WriteLine(Line($"{"mm time / cache time (9 θ)",-28} {mmRatio,9:F3}   goal ≥ {MmRatioGoal}  {Verdict(mmRatio >= MmRatioGoal)}"));
        Console.WriteLine(Line($"{"9-θ time / 1-θ time",-28} {thetaRatio,9:F3}   goal ≤ {ThetaRatioGoal}  {Verdict(thetaRatio <= ThetaRatioGoal)}"));
        Console.WriteLine(Line($"{"peak working set (process)",-28} {Mib(peakWorkingSet),13}   keys alone: {Mib((long)n * d * 4)} (plus the caller's copy)"));
        var blockMatrix = Mib(4L * Math.Min(options.KeyBlockSize, n) * Math.Min(options.QueryBlockSize, q));
        var extraText = callExtraBytes is { } extra ? Mib(extra) : "n/a";
        Console.WriteLine(Line($"{"extra resident, 9-θ call",-28} {extraText,13}   one [key block × query block] float32 matrix: {blockMatrix}"));
        Console.WriteLine(Line($"{"max |ΔL| vs float64",-28} {maxError,13:E2}   on {CheckedQueries} queries, all {Grid.Length} θ"));

        var json = JsonSerializer.Serialize(new Dictionary<string, object?>
        {
            ["benchmark"] = Name,
            ["keys"] = n,
            ["dim"] = d,
            ["queries"] = q,
            ["classes"] = c,
            ["thetas"] = Grid.Length,
            ["key_block"] = options.KeyBlockSize,
            ["query_block"] = options.QueryBlockSize,
            ["storage"] = options.StorageType.ToString(),
            ["device"] = settings.Device ?? "cpu",
            ["threads"] = get_num_threads(),
            ["repeats"] = settings.Repeats,
            ["add_s"] = Round(addSeconds),
            ["mm_s"] = Round(mmSeconds),
            ["cache_9theta_s"] = Round(gridSeconds),
            ["cache_1theta_s"] = Round(singleSeconds),
            ["mm_gflops"] = Round(flops / mmSeconds / 1e9),
            ["cache_9theta_gflops"] = Round(flops / gridSeconds / 1e9),
            ["cache_1theta_gflops"] = Round(flops / singleSeconds / 1e9),
            ["mm_over_cache"] = Round(mmRatio),
            ["theta9_over_theta1"] = Round(thetaRatio),
            ["peak_working_set_mib"] = Round(peakWorkingSet / 1048576.0),
            ["call_extra_resident_mib"] = callExtraBytes is { } e ? Round(e / 1048576.0) : null,
            ["max_abs_error"] = maxError,
            ["goals_met"] = mmRatio >= MmRatioGoal && thetaRatio <= ThetaRatioGoal,
        });
        Console.WriteLine(json);
        return Program.Success;
    }

    /// <summary>Largest |L − L_ref| over the first queries and all θ, with L_ref from float64 similarities.</summary>
    private static double CheckAccuracy(ICacheMemory memory, Tensor queries, Tensor keys, Tensor labels, int classes)
    {
        using var scope = NewDisposeScope();
        var rows = (int)Math.Min(CheckedQueries, queries.shape[0]);
        var some = queries.narrow(0, 0, rows);
        var logMass = memory.ClassLogMass(some, Grid).to_type(ScalarType.Float64);
        var some64 = some.to_type(ScalarType.Float64);
        var n = keys.shape[0];
        var parts = new List<Tensor>();
        for (long start = 0; start < n; start += 4096)
        {
            parts.Add(mm(some64, keys.narrow(0, start, Math.Min(4096, n - start)).to_type(ScalarType.Float64).t()));
        }

        var s = cat(parts, 1); // [rows, N], float64
        var reference = full(Grid.Length, rows, classes, double.NegativeInfinity, dtype: ScalarType.Float64);
        for (var c = 0; c < classes; c++)
        {
            var members = labels.eq(c).nonzero().view(-1);
            if (members.shape[0] == 0)
            {
                continue;
            }

            var sc = s.index_select(1, members);
            for (var t = 0; t < Grid.Length; t++)
            {
                reference[t].select(1, c).copy_((sc * Grid[t]).logsumexp(1));
            }
        }

        var finite = isfinite(reference);
        var diff = where(finite, (logMass - reference).abs(), zeros_like(reference));
        var mismatch = finite.logical_xor(isfinite(logMass)).any().item<bool>();
        return mismatch ? double.PositiveInfinity : diff.max().item<double>();
    }

    private static void Row(string label, double seconds, double flops, List<double> runs) =>
        Console.WriteLine(Line(
            $"{label,-28} {seconds,9:F3} {flops / seconds / 1e9,9:F1}   {string.Join(" ", runs.Select(r => r.ToString("F3", Invariant)))}"));

    /// <summary>Waits for the device's queued work (CUDA), or null on the CPU.</summary>
    private static Action? sync;

    private static double Time(Action action)
    {
        sync?.Invoke();
        var watch = Stopwatch.StartNew();
        action();
        sync?.Invoke();
        return watch.Elapsed.TotalSeconds;
    }


    private static string Verdict(bool met) => met ? "met" : "MISSED";

    private static double Round(double value) => Math.Round(value, 4);


    private static string Line(FormattableString text) => text.ToString(Invariant);

    private sealed record Settings(
        int Keys, int Dimension, int Queries, int Classes, int Repeats, int? KeyBlock, int? QueryBlock, ExactStorageType Storage, int? Threads,
        int Seed, string? Device)
    {
        public static Settings Parse(string[] args)
        {
            string? Value(string name) => BenchmarkText.ArgValue(args, name);

            int? Int(string name) => Value(name) is { } v
                ? int.TryParse(v, NumberStyles.Integer, Invariant, out var parsed) ? parsed : throw new FormatException($"{name} expects an integer, got '{v}'.")
                : null;

            var storage = ExactStorageType.Float32;
            if (Value("--storage") is { } s && !Enum.TryParse(s, ignoreCase: true, out storage))
            {
                throw new FormatException($"--storage expects Float32 or Float16, got '{s}'.");
            }

            return new Settings(
                Int("--keys") ?? 50_000,
                Int("--dim") ?? 4096,
                Int("--queries") ?? 1000,
                Int("--classes") ?? 100,
                Int("--repeats") ?? 3,
                Int("--key-block"),
                Int("--query-block"),
                storage,
                Int("--threads"),
                Int("--seed") ?? 1,
                Value("--device"));
        }
    }
}
