using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using ScalableCache.Core;
using ScalableCache.Core.Data;
using ScalableCache.Core.Evaluation;
using ScalableCache.Core.Models;
using ScalableCache.Exact;
using ScalableCache.Hnsw;
using ScalableCache.Orleans;
using TorchSharp;
using static ScalableCache.Benchmarks.BenchmarkText;
using static TorchSharp.torch;

namespace ScalableCache.Benchmarks;

/// <summary>
/// The Orleans store against one exact store on ResNet-20 keys of CIFAR-10 (layers <c>layer3.0, layer3.2</c>, d = 8,192),
/// in one process: <c>--silos</c> silo hosts (localhost clustering, so shard calls cross loopback TCP with the Orleans
/// serializer) and a client, built as <c>scache silo</c> and the factory build them. Reports max |ΔL| and prediction
/// agreement over every test query, the add time, and per query batch the latency (median and p90 of the repeats,
/// interleaved with the single store batch by batch so load from other processes hits both alike) and throughput, with
/// their ratios; the per-shard figures a capacity estimate needs (keys, bytes, the single store's cost per key); and the
/// same cluster with HNSW shards against the exact answer (error, agreement, recall of the union of the shards' top-k,
/// through the grains — the ids the shards retrieve, mapped to the cache's insertion order — and, as a cross-check, on local
/// stores built on the same split).
/// </summary>
/// <remarks>
/// Arguments (all optional): <c>--train N</c> (20000 training images as keys), <c>--test N</c> (1000 test images as
/// queries), <c>--shards S</c> (3), <c>--silos K</c> (3), <c>--batches 1,10,100</c>, <c>--repeats R</c> (5),
/// <c>--json FILE</c> (the results as JSON), <c>--no-hnsw</c>.
/// </remarks>
internal static class OrleansBenchmark
{
    /// <summary>Name of this benchmark in the dispatcher.</summary>
    public const string Name = "orleans";

    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;
    private static readonly string[] Layers = ["layer3.0", "layer3.2"];

    public static int Run(string[] args)
    {
        ArgumentNullException.ThrowIfNull(args);
        int Int(string name, int fallback) => ArgValue(args, name) is { } v ? int.Parse(v, Invariant) : fallback;
        var (trainCount, testCount, shards, siloCount, repeats) = (Int("--train", 20000), Int("--test", 1000), Int("--shards", 3), Int("--silos", 3), Int("--repeats", 5));
        var batches = (ArgValue(args, "--batches") ?? "1,10,100").Split(',').Select(b => int.Parse(b, Invariant)).ToArray();
        var shared = SharedFolder() ?? throw new DirectoryNotFoundException("No shared/ folder beside the repository.");

        // Keys and queries, as the tests make them.
        var registry = new ModelRegistry();
        using var loaded = registry.Load("resnet20", Path.Combine(shared, "models", "cifar10", "resnet20.safetensors"));
        var fitter = new CacheFitter(loaded.Model, new CacheFitOptions
        {
            Store = new ExactCacheMemoryFactory(new ExactCacheOptions()),
            Input = loaded.Spec.Normalization,
            InputShape = loaded.Spec.Input,
        });
        var cifar = DatasetLocator.ResolveCifar10(Path.Combine(shared, "data", "cifar10"), DatasetParts.Train | DatasetParts.Test);
        // Queries: the first --test test images, or (--report-half) the report half of the experiments' seeded split (seed
        // --seed, 0 by default, as `scache reproduce`): the 5,000 images whose errors the reports give.
        var testSet = Cifar10.LoadTest(cifar);
        var reportHalf = args.Contains("--report-half");
        var queries = reportHalf ? testSet.Subset(testSet.SeededSplit(Int("--seed", 0), 0.5).Second) : testSet.Slice(0, testCount);
        testCount = queries.Count;
        FeatureTable? train = null, test = null;
        var extractSeconds = Seconds(() =>
        {
            train = fitter.Extract(Cifar10.LoadTrain(cifar).Slice(0, trainCount), Layers, "train");
            test = fitter.Extract(queries, Layers, "test");
        });
        using var trainTable = train!;
        using var testTable = test!;
        var d = (int)trainTable.KeyDimension;
        Console.WriteLine(Line($"Orleans benchmark: ResNet-20 keys {trainCount:N0} × {d:N0}, {testCount:N0} queries{(reportHalf ? " (the report half)" : "")} (extracted in {extractSeconds:F1} s); ") +
            Line($"{siloCount} silos and the client in this process, {shards} shards, {Environment.ProcessorCount} cores, torch threads {get_num_threads()}; load {Load()}"));

        var options = new OrleansCacheOptions { Shards = shards, ClusterId = "bench-" + Environment.ProcessId, CallTimeoutSeconds = 120 };
        var silos = StartSilos(options, siloCount);
        var results = new Dictionary<string, object?>
        {
            ["train"] = trainCount, ["test"] = testCount, ["reportHalf"] = reportHalf, ["dimension"] = d, ["shards"] = shards, ["silos"] = siloCount,
            ["cores"] = Environment.ProcessorCount, ["loadBefore"] = Load(),
        };
        try
        {
            using var factory = new OrleansCacheMemoryFactory(options);
            using var single = new ExactCacheMemory(d, 10);
            using var sharded = factory.CreateSharded(d, 10);
            var addSingle = Seconds(() => single.Add(trainTable.Keys, trainTable.Labels));
            var addSharded = Seconds(() => sharded.Add(trainTable.Keys, trainTable.Labels));
            Console.WriteLine(Line($"add {trainCount:N0} keys: single {addSingle:F2} s, Orleans {addSharded:F2} s (× {addSharded / addSingle:F2}); shard sizes {string.Join(", ", sharded.ShardCounts)}"));
            results["addSeconds"] = new { single = addSingle, orleans = addSharded };

            // Exactness over every query: max |ΔL| at three θ, predictions of the mixture and of the cache alone.
            double[] thetas = [10, 50, 90];
            var maxDelta = new float[thetas.Length];
            long predictionsDiffer = 0, cacheOnlyDiffer = 0;
            for (var start = 0; start < testCount; start += 250)
            {
                using var scope = NewDisposeScope();
                var n = Math.Min(250, testCount - start);
                var q = testTable.Keys.narrow(0, start, n);
                var a = single.ClassLogMass(q, thetas);
                var b = sharded.ClassLogMass(q, thetas);
                for (var t = 0; t < thetas.Length; t++)
                {
                    maxDelta[t] = Math.Max(maxDelta[t], (a[t] - b[t]).abs().masked_select(isfinite(a[t])).max().item<float>());
                }

                var p = testTable.Probabilities.narrow(0, start, n);
                predictionsDiffer += CacheMixer.Predict(single, q, p, 90, 0.8).ne(CacheMixer.Predict(sharded, q, p, 90, 0.8)).sum().item<long>();
                cacheOnlyDiffer += a[2].argmax(1).ne(b[2].argmax(1)).sum().item<long>();
            }

            Console.WriteLine(Line($"exactness over {testCount:N0} queries: max |ΔL| = {string.Join(", ", maxDelta.Select(m => m.ToString("E2", Invariant)))} at θ = 10, 50, 90; predictions that differ: {predictionsDiffer} (θ 90, λ 0.8), {cacheOnlyDiffer} (cache alone)"));
            results["float64Reference"] = Reference(trainTable, testTable.Keys.narrow(0, 0, Math.Min(100, testCount)), thetas, single, sharded);
            results["maxAbsDeltaL"] = maxDelta;
            results["predictionsDiffer"] = predictionsDiffer;
            results["cacheOnlyPredictionsDiffer"] = cacheOnlyDiffer;

            // Latency and throughput per batch, one θ (a prediction) and nine (the grid search), interleaved.
            var rows = new List<object>();
            Console.WriteLine("batch  θs   single median  p90       Orleans median  p90      ratio   single q/s  Orleans q/s");
            foreach (var (batch, thetaSet) in batches.Select(b => (b, new[] { 90.0 })).Append((batches.Max(), Enumerable.Range(1, 9).Select(i => 10.0 * i).ToArray())))
            {
                var (s, o) = (new List<double>(), new List<double>());
                for (var r = 0; r <= repeats; r++)
                {
                    using var scope = NewDisposeScope();
                    var q = testTable.Keys.narrow(0, (r * batch) % Math.Max(1, testCount - batch), batch);
                    double TimeSingle() => Seconds(() => single.ClassLogMass(q, thetaSet).Dispose());
                    double TimeSharded() => Seconds(() => sharded.ClassLogMass(q, thetaSet).Dispose());
                    double ts, to;
                    if (r % 2 == 0)
                    {
                        ts = TimeSingle();
                        to = TimeSharded();
                    }
                    else
                    {
                        to = TimeSharded();
                        ts = TimeSingle();
                    }

                    if (r > 0)
                    {
                        s.Add(ts);
                        o.Add(to);
                    }
                }

                var (sm, om) = (Quantile(s, 0.5), Quantile(o, 0.5));
                Console.WriteLine(Line($"{batch,5}  {thetaSet.Length,2}   {sm * 1000,10:F1} ms {Quantile(s, 0.9) * 1000,8:F1} ms {om * 1000,10:F1} ms {Quantile(o, 0.9) * 1000,8:F1} ms  × {om / sm,5:F2}  {batch / sm,10:F0}  {batch / om,10:F0}"));
                rows.Add(new
                {
                    batch, thetas = thetaSet.Length, singleMedianMs = sm * 1000, singleP90Ms = Quantile(s, 0.9) * 1000,
                    orleansMedianMs = om * 1000, orleansP90Ms = Quantile(o, 0.9) * 1000, ratio = om / sm, singleQps = batch / sm, orleansQps = batch / om,
                });
            }

            results["latency"] = rows;
            var keysPerShard = sharded.ShardCounts.Max();
            results["perShard"] = new { keys = keysPerShard, keyBytes = keysPerShard * (4L * d + 8) };

            if (!args.Contains("--no-hnsw"))
            {
                results["hnsw"] = HnswShards(options, trainTable, testTable, single);
            }
        }
        finally
        {
            foreach (var silo in silos)
            {
                silo.StopAsync().GetAwaiter().GetResult();
                silo.Dispose();
            }
        }

        results["loadAfter"] = Load();
        if (ArgValue(args, "--json") is { } json)
        {
            File.WriteAllText(json, JsonSerializer.Serialize(results, new JsonSerializerOptions { WriteIndented = true }));
        }

        return Program.Success;
    }

    /// <summary>
    /// Per θ: max |ΔL| between the two stores, and each store's max |L − L₆₄| against a float64 computation of the same
    /// log-mass (keys, queries and the log-sum-exp in double), on the first queries.
    /// </summary>
    private static object Reference(FeatureTable train, Tensor queries, double[] thetas, ICacheMemory single, ICacheMemory sharded)
    {
        using var scope = NewDisposeScope();
        var similarities = queries.to_type(ScalarType.Float64).mm(train.Keys.to_type(ScalarType.Float64).t()); // [b, N]
        var labels = train.Labels;
        var a = single.ClassLogMass(queries, thetas);
        var b = sharded.ClassLogMass(queries, thetas);
        var rows = new List<object>();
        for (var t = 0; t < thetas.Length; t++)
        {
            var scaled = similarities * thetas[t];
            var reference = stack(Enumerable.Range(0, 10).Select(c => scaled.index_select(1, labels.eq(c).nonzero().squeeze(1)).logsumexp(1)).ToArray(), 1);
            double Max(Tensor x) => (x.to_type(ScalarType.Float64) - reference).abs().max().item<double>();
            var delta = (a[t] - b[t]).abs().max().item<float>();
            rows.Add(new { theta = thetas[t], maxAbsDeltaL = delta, singleVsFloat64 = Max(a[t]), orleansVsFloat64 = Max(b[t]), maxAbsL = reference.abs().max().item<double>() });
            Console.WriteLine(Line($"  θ {thetas[t],3}: max |ΔL| {delta:E2}; vs float64: single {Max(a[t]):E2}, Orleans {Max(b[t]):E2} (|L| up to {reference.abs().max().item<double>():F1}, float32 spacing there {MathF.BitIncrement((float)reference.abs().max().item<double>()) - (float)reference.abs().max().item<double>():E2})"));
        }

        return rows;
    }

    /// <summary>
    /// HNSW shards (default settings) against the exact answer, and the recall of the union of the shards' top-k: through the
    /// grains (<see cref="OrleansCacheMemory.RetrievedKeys"/>) and on local stores holding the same rows.
    /// </summary>
    private static object HnswShards(OrleansCacheOptions options, FeatureTable train, FeatureTable test, ExactCacheMemory exact)
    {
        var hnswOptions = options.Clone();
        hnswOptions.Inner = "Hnsw";
        using var factory = new OrleansCacheMemoryFactory(hnswOptions);
        using var sharded = factory.CreateSharded((int)train.KeyDimension, 10);
        var build = Seconds(() => sharded.Add(train.Keys, train.Labels));
        using var scope = NewDisposeScope();
        var q = test.Keys;
        var a = exact.ClassLogMass(q, [90.0]);
        var b = sharded.ClassLogMass(q, [90.0]);
        var labels = test.Labels;
        var exactErrors = a[0].argmax(1).ne(labels).sum().item<long>();
        var hnswErrors = b[0].argmax(1).ne(labels).sum().item<long>();
        var agreement = a[0].argmax(1).eq(b[0].argmax(1)).to_type(ScalarType.Float64).mean().item<double>();

        // The union of per-shard top-k, on local HNSW stores holding the same rows the shards hold (contiguous, in shard order).
        var hnsw = new HnswCacheOptions();
        var counts = sharded.ShardCounts;
        var union = new List<HashSet<long>>();
        long offset = 0;
        foreach (var count in counts)
        {
            using var local = new HnswCacheMemoryFactory(hnsw).CreateHnsw((int)train.KeyDimension, 10);
            local.Add(train.Keys.narrow(0, offset, count), train.Labels.narrow(0, offset, count));
            var retrieved = local.RetrievedKeys(q);
            for (var i = 0; i < retrieved.Count; i++)
            {
                if (union.Count <= i)
                {
                    union.Add([]);
                }

                union[i].UnionWith(retrieved[i].Select(k => k + offset));
            }

            offset += count;
        }

        var k = hnsw.TopK;
        var truth = q.mm(train.Keys.t()).topk(k, 1).indexes.data<long>().ToArray();
        var recall = Enumerable.Range(0, union.Count).Average(i => truth.Skip(i * k).Take(k).Count(union[i].Contains) / (double)k);
        double throughGrains = 0;
        var retrieveSeconds = Seconds(() => throughGrains = HnswRecall.AtK(sharded, q, train.Keys, k));
        Console.WriteLine(Line($"HNSW shards (top-k {k} each, {counts.Count} shards → up to {k * counts.Count} keys per query): build {build:F1} s; cache-only error at θ 90 ") +
            Line($"{hnswErrors}/{q.shape[0]} vs exact {exactErrors}; top-class agreement {agreement:P2}; recall@{k} of the union vs exact: through the grains {throughGrains:P2} ") +
            Line($"({retrieveSeconds:F1} s), on local stores with the same split {recall:P2}"));
        return new
        {
            topK = k, buildSeconds = build, hnswCacheOnlyErrors = hnswErrors, exactCacheOnlyErrors = exactErrors, agreement, unionRecallAtK = throughGrains,
            unionRecallAtKLocalSplit = recall, retrieveSeconds,
        };
    }

    private static List<IHost> StartSilos(OrleansCacheOptions options, int count)
    {
        var silos = new List<IHost>();
        var ports = Enumerable.Range(0, count).Select(_ => (Silo: FreePort(), Gateway: FreePort())).ToList();
        options.PrimarySiloPort = ports[0].Silo;
        options.GatewayPorts = [.. ports.Select(p => p.Gateway)];
        foreach (var (silo, gateway) in ports)
        {
            var own = options.Clone();
            (own.SiloPort, own.GatewayPort) = (silo, gateway);
            var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
            builder.Logging.SetMinimumLevel(LogLevel.Error);
            builder.Services.AddExactCache();
            builder.Services.AddHnswCache();
            builder.UseOrleans(s => s.UseCacheClustering(own).AddCacheShards());
            var host = builder.Build();
            host.StartAsync().GetAwaiter().GetResult();
            silos.Add(host);
        }

        return silos;
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    private static string Load() => File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "n/a";

    private static string Line(FormattableString text) => text.ToString(Invariant);
}
