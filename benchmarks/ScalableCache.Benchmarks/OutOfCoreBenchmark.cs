using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using ScalableCache.Core;
using ScalableCache.Core.Persistence;
using ScalableCache.Exact;
using ScalableCache.Hnsw;
using ScalableCache.RandomProjection;
using static TorchSharp.torch;

using static ScalableCache.Benchmarks.BenchmarkText;

namespace ScalableCache.Benchmarks;

/// <summary>
/// Keys out of core at ImageNet size (issue #13): unit keys — synthetic clustered ones (default 1,281,167 × 2,048, 1,000 classes),
/// or real ones from a key file (<c>--keys</c>) — streamed in blocks into one key file per storage type (never N × d in memory),
/// each opened memory-mapped by the exact store; then RandomProjection→Exact and RandomProjection→HNSW stores built from the
/// first of those key files (<see cref="CacheMemoryExtensions.AddKeyFile"/>), one at a time. Reports build (write) seconds, open
/// seconds, resident memory (VmRSS/VmHWM) around the queries, seconds for Q queries at 1 θ and at 9 θ, the ratio of a bare matrix
/// product of the same shapes in the same run (<c>[Q, d] × [d, N]</c>, key block by key block, from memory) to each, and for the
/// approximate and half-precision stores top-1 agreement, p_mem total-variation distance and the largest |ΔL| against the first
/// exact store (Exact float32 by default) on the first <c>--agreement</c> queries (at θ = 50), and for RandomProjection→HNSW recall@k
/// (the share of each query's exact top-k keys, by inner product with the d-dimensional key file, among the k keys it retrieves) and
/// recall 10@k (the share of the exact top 10 among them).
/// </summary>
/// <remarks>
/// Arguments: <c>--rows N</c> (1281167; with <c>--keys</c>, all the file's rows not held out as queries), <c>--dim d</c> (2048),
/// <c>--classes C</c> (1000), <c>--queries Q</c> (10000), <c>--agreement A</c> (1000, at most Q), <c>--storages Float32,Float16</c>
/// (any of Float32, Float16, BFloat16), <c>--rp-dim k</c> (256; 0 skips RandomProjection), <c>--rp-inner Exact,Hnsw</c> (the stores
/// under the projection; HNSW with the store's defaults M 16, efConstruction 128, efSearch 128, top-k 100, all cores),
/// <c>--folder DIR</c> (a new folder under the system temp folder; the key files this run writes are deleted at the end unless
/// <c>--keep</c>), <c>--verify true|false</c> (open with key verification, true), <c>--seed s</c> (1), <c>--json PATH</c> (also write
/// the results as JSON), <c>--noise x</c> (0.5: the norm of a key's offset from its class centre before normalising; larger is harder
/// for approximate stores).
/// Real keys: <c>--keys FILE</c> (a finished key file, e.g. the training keys of <c>scache build --keys-file</c>; d and C are the
/// file's) and <c>--query-keys FILE</c> (queries = its first Q rows, e.g. <c>scache build --test-keys --keys-file</c>). Without
/// <c>--query-keys</c> the last Q rows of <c>--keys</c> (Q at most half the file) are held out as queries and the stores get the rows
/// before them (training keys queried by themselves would each find an identical key). The file itself
/// is only read (block by block), never changed or deleted.
/// </remarks>
internal static class OutOfCoreBenchmark
{
    /// <summary>Name of this benchmark in the dispatcher.</summary>
    public const string Name = "out-of-core";

    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;
    private static readonly double[] Grid = [10, 20, 30, 40, 50, 60, 70, 80, 90];
    private static readonly double[] Single = [50];

    public static int Run(string[] args)
    {
        ArgumentNullException.ThrowIfNull(args);
        Settings s;
        try
        {
            s = Settings.Parse(args);
        }
        catch (FormatException error)
        {
            Console.Error.WriteLine(error.Message);
            return Program.UsageError;
        }

        KeyFile? realKeys = null;
        KeyFile? realQueries = null;
        try
        {
            if (s.Keys is { } keysPath)
            {
                realKeys = KeyFile.Open(keysPath, new KeyFileOpenOptions { VerifyKeys = s.Verify });
                realQueries = s.QueryKeys is { } queryPath ? KeyFile.Open(queryPath, new KeyFileOpenOptions { VerifyKeys = s.Verify }) : null;
                s = s.ForRealKeys(realKeys, realQueries);
            }

            return Run(s, realKeys, realQueries);
        }
        catch (Exception e) when (e is CacheFileException or FileNotFoundException or FormatException)
        {
            Console.Error.WriteLine(e.Message);
            return e is FormatException ? Program.UsageError : Program.InvalidInput;
        }
        finally
        {
            realKeys?.Dispose();
            realQueries?.Dispose();
        }
    }

    private static int Run(Settings s, KeyFile? realKeys, KeyFile? realQueries)
    {
        var folder = s.Folder ?? Directory.CreateTempSubdirectory("scache-ooc-").FullName;
        Directory.CreateDirectory(folder);
        var hnswOptions = new HnswCacheOptions();
        var results = new Dictionary<string, object?>
        {
            ["keys"] = realKeys?.Path ?? "synthetic", ["queryKeys"] = realQueries?.Path ?? (realKeys is null ? "synthetic" : "last rows of keys (held out)"),
            ["rows"] = s.Rows, ["noise"] = realKeys is null ? s.Noise : null, ["dimension"] = s.Dimension, ["classes"] = s.Classes, ["queries"] = s.Queries,
            ["agreementQueries"] = s.Agreement, ["rpDimension"] = s.RpDim,
            ["hnsw"] = $"M {hnswOptions.Connectivity}, efConstruction {hnswOptions.ExpansionAdd}, efSearch {hnswOptions.ExpansionSearch}, top-k {hnswOptions.TopK}, threads {hnswOptions.EffectiveThreads}",
            ["torchThreads"] = get_num_threads(), ["cores"] = Environment.ProcessorCount, ["loadAverageStart"] = LoadAverage(),
        };
        Say($"Out-of-core benchmark: {(realKeys is null ? "synthetic" : realKeys.Path)} N={s.Rows:N0} × d={s.Dimension}, C={s.Classes}, Q={s.Queries:N0} (agreement on {s.Agreement:N0}), storages {string.Join(",", s.Storages)}, RP k={s.RpDim} over {string.Join(",", s.RpInner)} (HNSW {results["hnsw"]}), folder {folder}, torch threads {get_num_threads()}, load {LoadAverage()}");

        var paths = s.Storages.ToDictionary(t => t, t => Path.Combine(folder, $"keys-{t}{KeyFile.Extension}".ToLowerInvariant()));
        var writers = new Dictionary<ExactStorageType, KeyFileWriter>();
        var writeSeconds = s.Storages.ToDictionary(t => t, _ => 0.0);
        Tensor queries;
        var generateSeconds = 0.0;
        using var noGrad = no_grad();
        try
        {
            // 1. One pass over the source (synthetic draws, or the real key file's blocks) feeds every writer, a block at a time.
            using (var sampler = realKeys is null ? new SyntheticKeys(s.Dimension, s.Classes, s.Classes, s.Seed, s.Noise) : null)
            {
                foreach (var type in s.Storages)
                {
                    writers[type] = KeyFileWriter.Open(paths[type], new KeyFileLayout(s.Dimension, s.Classes, ExactCacheOptions.ToScalarType(type)));
                }

                // Synthetic blocks as before (the draws depend on them); real ones of about 64 MiB of float32 keys.
                var blockRows = realKeys is null ? SyntheticKeys.BlockRows : (int)Math.Clamp((64L << 20) / (4L * s.Dimension), 1, SyntheticKeys.BlockRows);
                var watch = Stopwatch.StartNew();
                var lastReport = 0.0;
                for (var start = 0; start < s.Rows; start += blockRows)
                {
                    using var scope = NewDisposeScope();
                    var n = Math.Min(blockRows, s.Rows - start);
                    var g = Stopwatch.StartNew();
                    var (keys, labels) = sampler?.Sample(n) ?? realKeys!.ReadKeys(start, n);
                    generateSeconds += g.Elapsed.TotalSeconds;
                    foreach (var type in s.Storages)
                    {
                        writeSeconds[type] += Seconds(() => writers[type].Append(keys, labels));
                    }

                    var done = start + n;
                    if (watch.Elapsed.TotalSeconds - lastReport > 30 || done == s.Rows)
                    {
                        lastReport = watch.Elapsed.TotalSeconds;
                        var rate = done / watch.Elapsed.TotalSeconds;
                        Say($"  written {done:N0}/{s.Rows:N0} keys, {rate:N0} keys/s, ETA {(s.Rows - done) / rate:F0} s, resident {Mib(Resident() ?? 0)}");
                    }
                }

                foreach (var type in s.Storages)
                {
                    writeSeconds[type] += Seconds(writers[type].Complete);
                    writers[type].Dispose();
                }

                (queries, _) = sampler?.Sample(s.Queries)
                    ?? (realQueries is not null ? realQueries.ReadKeys(0, s.Queries) : realKeys!.ReadKeys(realKeys.Count - s.Queries, s.Queries));
            }

            results["generateSeconds"] = Round(generateSeconds);
            Say($"{(realKeys is null ? "Generation" : "Reading the source key file")} {generateSeconds:F1} s (not counted in write times); resident after build {Mib(Resident() ?? 0)}");

            // 2. Bare matrix product of the same shapes, key block by key block (keys [4096, d] from memory, reused).
            var keyBlock = new ExactCacheOptions().KeyBlockSize;
            var queryBlock = new ExactCacheOptions().QueryBlockSize;
            var baseline = BareProduct(queries, s.Rows, keyBlock, queryBlock);
            results["bareProductSeconds"] = Round(baseline);
            Say($"Bare mm [Q={s.Queries}, d] × [d, N] in key blocks of {keyBlock} × query blocks of {queryBlock}: {baseline:F2} s ({2.0 * s.Queries * s.Rows * s.Dimension / baseline / 1e9:F1} GFLOP/s)");

            // 3. Each mapped exact store: open, queries at 1 and 9 θ, resident memory.
            Tensor? reference = null;
            var stores = new List<Dictionary<string, object?>>();
            foreach (var type in s.Storages)
            {
                var row = new Dictionary<string, object?> { ["store"] = $"Exact {type} (mapped)", ["fileBytes"] = new FileInfo(paths[type]).Length, ["writeSeconds"] = Round(writeSeconds[type]) };
                var before = Resident();
                ExactCacheMemory? memory = null;
                row["openSeconds"] = Round(Seconds(() => memory = ExactCacheMemory.OpenKeyFile(paths[type], open: new KeyFileOpenOptions { VerifyKeys = s.Verify })));
                using (memory)
                {
                    row["residentAfterOpenBytes"] = Resident() - before;
                    var (single, grid, peak, result) = Query(memory!, queries, row);
                    row["seconds1Theta"] = Round(single);
                    row["seconds9Theta"] = Round(grid);
                    row["bareOverStore1Theta"] = Round(baseline / single);
                    row["bareOverStore9Theta"] = Round(baseline / grid);
                    row["peakResidentBytes"] = peak;
                    if (reference is null)
                    {
                        reference = result;
                    }
                    else
                    {
                        Compare(row, reference, result, s.Agreement);
                        result.Dispose();
                    }
                }

                stores.Add(row);
                Say(Describe(row));
            }

            // 4. Each random-projection store, built from the first key file (float32 blocks of it), queried, compared, disposed.
            foreach (var inner in s.RpDim > 0 ? s.RpInner : [])
            {
                var source = paths[s.Storages[0]];
                var row = new Dictionary<string, object?> { ["store"] = $"RandomProjection {s.Dimension}→{s.RpDim} → {inner} (from {Path.GetFileName(source)})" };
                var before = Resident();
                var factory = new RandomProjectionCacheMemoryFactory(
                    new RandomProjectionCacheOptions { OutputDimension = s.RpDim, Inner = inner },
                    [new ExactCacheMemoryFactory(new ExactCacheOptions()), new HnswCacheMemoryFactory(hnswOptions)]);
                using var file = KeyFile.Open(source, new KeyFileOpenOptions { VerifyKeys = s.Verify });
                using var rp = factory.CreateProjected(s.Dimension, s.Classes);
                var lastReport = Stopwatch.StartNew();
                row["writeSeconds"] = Round(Seconds(() => rp.AddKeyFile(file, progress: new ProgressLines(done =>
                {
                    if (lastReport.Elapsed.TotalSeconds > 30 || done == file.Count)
                    {
                        lastReport.Restart();
                        Say($"  {inner}: added {done:N0}/{file.Count:N0} projected keys, resident {Mib(Resident() ?? 0)}");
                    }
                }))));
                row["residentAfterBuildBytes"] = Resident() - before;
                var (single, grid, peak, result) = Query(rp, queries, row);
                row["seconds1Theta"] = Round(single);
                row["seconds9Theta"] = Round(grid);
                row["bareOverStore1Theta"] = Round(baseline / single);
                row["bareOverStore9Theta"] = Round(baseline / grid);
                row["peakResidentBytes"] = peak;
                if (reference is not null)
                {
                    Compare(row, reference, result, s.Agreement);
                }

                if (inner.Equals("Hnsw", StringComparison.OrdinalIgnoreCase))
                {
                    using var scope = NewDisposeScope();
                    var agreementQueries = queries.narrow(0, 0, s.Agreement);
                    // recall@k: the share of the exact top-k among the top-k retrieved; 10@k: of the exact top 10 among them.
                    var (recall, recall10) = (double.NaN, double.NaN);
                    row["recallSeconds"] = Round(Seconds(() => recall = HnswRecall.AtK(rp, agreementQueries, file, hnswOptions.TopK)));
                    recall10 = HnswRecall.AtK(rp, agreementQueries, file, Math.Min(10, hnswOptions.TopK));
                    row["recallAtK"] = hnswOptions.TopK;
                    row["recall"] = Math.Round(recall, 6);
                    row["recall10AtK"] = Math.Round(recall10, 6);
                }

                result.Dispose();
                stores.Add(row);
                Say(Describe(row));
            }

            reference?.Dispose();
            results["stores"] = stores;
            results["loadAverageEnd"] = LoadAverage();
            Say($"Load average at the end: {LoadAverage()}");
            if (s.Json is { } json)
            {
                File.WriteAllText(json, JsonSerializer.Serialize(results, new JsonSerializerOptions { WriteIndented = true }));
            }

            return Program.Success;
        }
        finally
        {
            foreach (var writer in writers.Values)
            {
                writer.Dispose();
            }

            if (!s.Keep)
            {
                foreach (var path in paths.Values)
                {
                    File.Delete(path);
                }

                if (s.Folder is null)
                {
                    Directory.Delete(folder, recursive: true);
                }
            }
        }
    }

    /// <summary>Seconds at 1 θ and at 9 θ, peak resident bytes over both calls (VmHWM after a reset), and the 1-θ log-mass.</summary>
    private static (double Single, double Grid, long? Peak, Tensor Result) Query(ICacheMemory memory, Tensor queries, Dictionary<string, object?> row)
    {
        row["residentAtQueryStartBytes"] = ResetPeakResident();
        Tensor? result = null;
        var single = Seconds(() => result = memory.ClassLogMass(queries, Single));
        var grid = Seconds(() => memory.ClassLogMass(queries, Grid).Dispose());
        return (single, grid, PeakResident(), result!);
    }

    /// <summary>Top-1 agreement, mean p_mem total variation and largest |ΔL| against the reference on the first queries.</summary>
    private static void Compare(Dictionary<string, object?> row, Tensor reference, Tensor actual, int queries)
    {
        using var scope = NewDisposeScope();
        var a = reference[0].narrow(0, 0, queries);
        var b = actual[0].narrow(0, 0, queries);
        row["top1Agreement"] = Math.Round(a.argmax(1).eq(b.argmax(1)).to_type(ScalarType.Float32).mean().item<float>(), 6);
        row["pMemTvd"] = Math.Round(a.softmax(1).sub(b.softmax(1)).abs().sum(1).mul(0.5).mean().item<float>(), 8);
        var finite = isfinite(a).logical_and(isfinite(b));
        row["maxAbsLogMassDelta"] = Math.Round(where(finite, a - b, 0f).abs().max().item<float>(), 6);
    }

    /// <summary>
    /// Seconds of the products the exact store computes, alone: per block of <paramref name="keyBlock"/> keys (from memory) one
    /// <c>mm</c> with each block of <paramref name="queryBlock"/> queries (the store's default query block), keys outer as in the store.
    /// </summary>
    private static double BareProduct(Tensor queries, long rows, int keyBlock, int queryBlock)
    {
        using var scope = NewDisposeScope();
        var keys = randn(keyBlock, queries.shape[1]);
        keys.div_(keys.norm(1, keepdim: true));
        var blocks = Enumerable.Range(0, (int)((queries.shape[0] + queryBlock - 1) / queryBlock))
            .Select(j => queries.narrow(0, (long)j * queryBlock, Math.Min(queryBlock, queries.shape[0] - ((long)j * queryBlock))).t()).ToArray();
        return Seconds(() =>
        {
            for (long start = 0; start < rows; start += keyBlock)
            {
                var n = (int)Math.Min(keyBlock, rows - start);
                foreach (var block in blocks)
                {
                    mm(keys.narrow(0, 0, n), block).Dispose();
                }
            }
        });
    }

    private static string Describe(Dictionary<string, object?> row) =>
        string.Join(", ", row.Select(kv => string.Create(Invariant, $"{kv.Key} {kv.Value}")));

    private static string LoadAverage()
    {
        try
        {
            return File.ReadAllText("/proc/loadavg").Trim();
        }
        catch (IOException)
        {
            return "?";
        }
    }

    private static void Say(FormattableString text) => Console.WriteLine(text.ToString(Invariant));

    private static void Say(string text) => Console.WriteLine(text);

    private static double Round(double value) => Math.Round(value, 4);

    private sealed class ProgressLines(Action<long> report) : IProgress<long>
    {
        public void Report(long value) => report(value);
    }

    private sealed record Settings(
        int Rows, int Dimension, int Classes, int Queries, int Agreement, ExactStorageType[] Storages, int RpDim, string? Folder, bool Keep,
        bool Verify, int Seed, string? Json, double Noise, string[] RpInner, string? Keys, string? QueryKeys, bool RowsGiven)
    {
        /// <summary>d, C and N from the real key file (N: the rows before the held-out queries, or --rows of them), Q capped by the query rows.</summary>
        public Settings ForRealKeys(KeyFile keys, KeyFile? queryKeys)
        {
            if (queryKeys is not null && (queryKeys.Layout.Dimension != keys.Layout.Dimension || queryKeys.Layout.ClassCount != keys.Layout.ClassCount))
            {
                throw new FormatException(
                    $"--query-keys '{queryKeys.Path}' holds {queryKeys.Layout.Dimension}-d keys of {queryKeys.Layout.ClassCount} classes; --keys '{keys.Path}' " +
                    $"holds {keys.Layout.Dimension}-d keys of {keys.Layout.ClassCount}: they must come from the same model and layers.");
            }

            var queries = (int)Math.Min(Queries, queryKeys?.Count ?? keys.Count / 2);
            var available = keys.Count - (queryKeys is null ? queries : 0);
            var rows = (int)(RowsGiven ? Math.Min(Rows, available) : available);
            if (rows < 1 || queries < 1)
            {
                throw new FormatException($"--keys '{keys.Path}' ({keys.Count} rows) leaves no keys or no queries.");
            }

            return this with
            {
                Rows = rows, Dimension = keys.Layout.Dimension, Classes = keys.Layout.ClassCount, Queries = queries, Agreement = Math.Min(Agreement, queries),
                RpDim = Math.Min(RpDim, keys.Layout.Dimension),
            };
        }

        public static Settings Parse(string[] args)
        {
            string? Value(string name) => ArgValue(args, name);

            int Int(string name, int fallback) => Value(name) is { } v
                ? int.TryParse(v, NumberStyles.Integer, Invariant, out var parsed) && parsed >= 0 ? parsed : throw new FormatException($"{name} expects a non-negative integer, got '{v}'.")
                : fallback;

            var storages = (Value("--storages") ?? "Float32,Float16").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(t => Enum.TryParse<ExactStorageType>(t, ignoreCase: true, out var type) && Enum.IsDefined(type)
                    ? type : throw new FormatException($"--storages expects Float32, Float16 or BFloat16, got '{t}'."))
                .Distinct().ToArray();
            var inner = (Value("--rp-inner") ?? "Exact,Hnsw").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(t => t.Equals("Exact", StringComparison.OrdinalIgnoreCase) ? "Exact" : t.Equals("Hnsw", StringComparison.OrdinalIgnoreCase) ? "Hnsw"
                    : throw new FormatException($"--rp-inner expects Exact and/or Hnsw, got '{t}'."))
                .Distinct().ToArray();
            var verify = Value("--verify") is not { } v || (bool.TryParse(v, out var b) ? b : throw new FormatException($"--verify expects true or false, got '{v}'."));
            var settings = new Settings(
                Int("--rows", 1_281_167), Int("--dim", 2048), Int("--classes", 1000), Int("--queries", 10_000), Int("--agreement", 1000),
                storages, Int("--rp-dim", 256), Value("--folder"), args.Contains("--keep"), verify, Int("--seed", 1), Value("--json"),
                Value("--noise") is { } noise ? double.TryParse(noise, NumberStyles.Float, Invariant, out var n) && n >= 0 ? n : throw new FormatException($"--noise expects a number ≥ 0, got '{noise}'.") : 0.5,
                inner, Value("--keys"), Value("--query-keys"), Value("--rows") is not null);
            if (settings.QueryKeys is not null && settings.Keys is null)
            {
                throw new FormatException("--query-keys gives the queries for --keys: give --keys too.");
            }

            if (settings.Rows < 1 || settings.Dimension < 1 || settings.Classes < 1 || settings.Queries < 1 || storages.Length == 0)
            {
                throw new FormatException("--rows, --dim, --classes and --queries must be positive, and --storages must name at least one type.");
            }

            return settings with { Agreement = Math.Clamp(settings.Agreement, 1, settings.Queries) };
        }
    }
}
