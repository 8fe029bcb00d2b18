using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using ScalableCache.Core;
using ScalableCache.Core.Data;
using ScalableCache.Core.Models;
using ScalableCache.Core.Persistence;
using ScalableCache.Exact;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Benchmarks;

/// <summary>
/// Load and crash test of <c>scache serve</c> on localhost. Starts the server (<c>dotnet SCACHE.dll serve --cache FILE</c>) on a
/// loopback port, then:
/// <list type="number">
/// <item>load: <c>--clients K</c> concurrent clients for <c>--seconds S</c>, each request one CIFAR-10 test image (binary tensor body),
/// <c>--add-fraction</c> of them adds (each a different image, with its true label), the rest predictions: throughput, p50/p95/p99
/// latency, errors (any answer but 200), key count;</item>
/// <item>restart while idle: the probe images' predictions before a <c>kill -9</c> and after the restart;</item>
/// <item>crash during adds: K clients add (distinct images) and the server is killed with SIGKILL after <c>--kill-after</c> seconds;
/// after the restart the key count must lie between the base plus every acknowledged add and that plus the adds in flight;</item>
/// <item>audit: the server is stopped with SIGTERM (last snapshot) and the cache file is read back: every acknowledged add's key and
/// label sit at the index its answer gave, and every added row is a different attempted image (none duplicated).</item>
/// </list>
/// </summary>
/// <remarks>
/// Arguments: <c>--scache DLL</c> (src/Host/bin/Release/net10.0/scache.dll), <c>--cache FILE</c> (required; a copy is served),
/// <c>--clients K</c> (8), <c>--seconds S</c> (60), <c>--add-fraction F</c> (0.1), <c>--kill-after S</c> (5),
/// <c>--snapshot-interval S</c> (15), <c>--probes N</c> (100), <c>--out DIR</c> (report folder, required), <c>--weights FILE</c>,
/// <c>--data FOLDER</c> (as the other benchmarks).
/// </remarks>
internal static class ServeBenchmark
{
    /// <summary>Name of this benchmark in the dispatcher.</summary>
    public const string Name = "serve";

    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

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

        return RunAsync(s).GetAwaiter().GetResult();
    }

    private static async Task<int> RunAsync(Settings s)
    {
        Directory.CreateDirectory(s.Out);
        var served = Path.Combine(s.Out, "served.scache");
        File.Copy(s.Cache, served, overwrite: true);
        foreach (var stale in Directory.EnumerateFiles(s.Out, "served.scache.log.*"))
        {
            File.Delete(stale);
        }

        var test = Cifar10.LoadTest(DatasetLocator.ResolveCifar10(s.Data, DatasetParts.Test));
        var report = new Dictionary<string, object?>
        {
            ["startedUtc"] = DateTime.UtcNow,
            ["clients"] = s.Clients,
            ["seconds"] = s.Seconds,
            ["addFraction"] = s.AddFraction,
            ["loadBefore"] = LoadAverage(),
        };
        var port = FreePort();
        var url = $"http://127.0.0.1:{port}";
        using var http = new HttpClient(new SocketsHttpHandler { MaxConnectionsPerServer = Math.Max(s.Clients, 2) }) { BaseAddress = new Uri(url), Timeout = TimeSpan.FromSeconds(120) };
        var adds = new AddLedger();
        var nextImage = 0;

        var server = await Start(s, served, url, http, "1").ConfigureAwait(false);
        var info = await Info(http).ConfigureAwait(false);
        var baseKeys = info.GetProperty("keys").GetInt64();
        report["model"] = info.GetProperty("model").GetString();
        report["layers"] = info.GetProperty("layers").EnumerateArray().Select(l => l.GetString()).ToArray();
        report["provider"] = info.GetProperty("provider").GetString();
        report["theta"] = info.GetProperty("theta").GetDouble();
        report["lambda"] = info.GetProperty("lambda").GetDouble();
        report["dimension"] = info.GetProperty("dimension").GetInt32();
        report["baseKeys"] = baseKeys;
        Console.Error.WriteLine($"serving {baseKeys} keys on {url}; load: {s.Clients} clients for {s.Seconds} s");

        // 1. Load.
        var load = await Load(http, test, s.Clients, TimeSpan.FromSeconds(s.Seconds), s.AddFraction, adds, () => Interlocked.Increment(ref nextImage) - 1).ConfigureAwait(false);
        report["load"] = load.Summary();
        var afterLoad = await Info(http).ConfigureAwait(false);
        report["keysAfterLoad"] = afterLoad.GetProperty("keys").GetInt64();
        report["logAfterLoad"] = JsonSerializer.Deserialize<object>(afterLoad.GetProperty("log").GetRawText()); // adds vs group commits
        report["snapshotAfterLoad"] = JsonSerializer.Deserialize<object>(afterLoad.GetProperty("snapshot").GetRawText());
        Console.Error.WriteLine(JsonSerializer.Serialize(report["load"]));

        // 2. kill -9 while idle: the same answers after the restart.
        var probes = Enumerable.Range(test.Count - s.Probes, s.Probes).ToArray();
        var before = await Predict(http, test, probes).ConfigureAwait(false);
        var keysBefore = (await Info(http).ConfigureAwait(false)).GetProperty("keys").GetInt64();
        Kill(server);
        server = await Start(s, served, url, http, "2").ConfigureAwait(false);
        var restarted = await Info(http).ConfigureAwait(false);
        var after = await Predict(http, test, probes).ConfigureAwait(false);
        report["idleCrash"] = new Dictionary<string, object?>
        {
            ["keysBefore"] = keysBefore,
            ["keysAfter"] = restarted.GetProperty("keys").GetInt64(),
            ["recovery"] = JsonSerializer.Deserialize<object>(restarted.GetProperty("recovery").GetRawText()),
            ["probes"] = probes.Length,
            ["samePredictions"] = before.Classes.SequenceEqual(after.Classes),
            ["maxProbabilityDifference"] = before.Probabilities.Zip(after.Probabilities).Max(p => Math.Abs(p.First - p.Second)),
        };
        Console.Error.WriteLine(JsonSerializer.Serialize(report["idleCrash"]));

        // 3. kill -9 during adds.
        var keysBeforeBurst = restarted.GetProperty("keys").GetInt64();
        var ackedBefore = adds.Acked.Count;
        var stop = new StrongBox<bool>();
        var burst = Load(http, test, s.Clients, TimeSpan.FromSeconds(s.KillAfter + 30), 1.0, adds, () => Interlocked.Increment(ref nextImage) - 1, stop);
        await Task.Delay(TimeSpan.FromSeconds(s.KillAfter)).ConfigureAwait(false);
        var logBeforeKill = (await Info(http).ConfigureAwait(false)).GetProperty("log").GetRawText();
        Volatile.Write(ref stop.Value, true); // no new request from here on: the ones in flight meet the kill
        var inFlightAtKill = adds.InFlight.Count;
        Kill(server);
        var interrupted = await burst.ConfigureAwait(false);
        var inFlight = adds.InFlight.Keys.ToArray(); // never answered: durable or not
        server = await Start(s, served, url, http, "3").ConfigureAwait(false);
        var recovered = await Info(http).ConfigureAwait(false);
        var keysAfterCrash = recovered.GetProperty("keys").GetInt64();
        var ackedInBurst = adds.Acked.Count - ackedBefore;
        var lowest = baseKeys + adds.Acked.Count;
        report["addCrash"] = new Dictionary<string, object?>
        {
            ["keysBeforeBurst"] = keysBeforeBurst,
            ["logJustBeforeKill"] = JsonSerializer.Deserialize<object>(logBeforeKill),
            ["ackedInBurst"] = ackedInBurst,
            ["inFlightAtKill"] = inFlightAtKill,
            ["unanswered"] = inFlight.Length,
            ["burstRequests"] = interrupted.Summary(),
            ["keysAfterRestart"] = keysAfterCrash,
            ["expectedAtLeast"] = lowest,
            ["expectedAtMost"] = lowest + inFlight.Length,
            ["countWithinBounds"] = keysAfterCrash >= lowest && keysAfterCrash <= lowest + inFlight.Length,
            ["recovery"] = JsonSerializer.Deserialize<object>(recovered.GetProperty("recovery").GetRawText()),
        };
        Console.Error.WriteLine(JsonSerializer.Serialize(report["addCrash"]));
        var afterCrash = await Predict(http, test, probes).ConfigureAwait(false);

        // 4. SIGTERM: last snapshot; then the audit of the file.
        var stopped = Stop(server);
        report["gracefulStopExit"] = stopped;
        report["audit"] = Audit(s, served, test, baseKeys, adds, inFlight);
        report["probePredictionsChangedByBurst"] = afterCrash.Classes.Zip(after.Classes).Count(p => p.First != p.Second);
        report["loadAfter"] = LoadAverage();
        report["finishedUtc"] = DateTime.UtcNow;
        Console.Error.WriteLine(JsonSerializer.Serialize(report["audit"]));

        var json = JsonSerializer.Serialize(report, new JsonSerializerOptions { WriteIndented = true });
        File.WriteAllText(Path.Combine(s.Out, "serve-benchmark.json"), json);
        Console.WriteLine(json);
        var audit = (Dictionary<string, object?>)report["audit"]!;
        var ok = load.Errors == 0 && (bool)((Dictionary<string, object?>)report["idleCrash"]!)["samePredictions"]! &&
            (bool)((Dictionary<string, object?>)report["addCrash"]!)["countWithinBounds"]! && (bool)audit["everyAckedPresent"]! && (bool)audit["noneDuplicated"]!;
        return ok ? Program.Success : 1;
    }

    /// <summary>Runs clients until the deadline (or until the server goes away); each request is one image.</summary>
    private static async Task<LoadResult> Load(
        HttpClient http, ImageDataset images, int clients, TimeSpan duration, double addFraction, AddLedger adds, Func<int> nextAddImage,
        StrongBox<bool>? stop = null)
    {
        var result = new LoadResult();
        var stopwatch = Stopwatch.StartNew();
        var deadline = stopwatch.Elapsed + duration;
        var workers = Enumerable.Range(0, clients).Select(c => Task.Run(async () =>
        {
            var random = new Random(1000 + c);
            var gone = 0;
            while (stopwatch.Elapsed < deadline && gone < 3 && !(stop is not null && Volatile.Read(ref stop.Value)))
            {
                var add = random.NextDouble() < addFraction;
                var image = add ? nextAddImage() % images.Count : random.Next(images.Count);
                var started = stopwatch.Elapsed;
                if (add)
                {
                    adds.InFlight[image] = true;
                }

                try
                {
                    using var response = await http.PostAsync(add ? "/v1/memory" : "/v1/predict", Body(images, image, add)).ConfigureAwait(false);
                    var body = await response.Content.ReadAsStringAsync().ConfigureAwait(false);
                    var seconds = (stopwatch.Elapsed - started).TotalSeconds;
                    result.Record(add ? "memory" : "predict", response.StatusCode, seconds);
                    if (add && response.StatusCode == HttpStatusCode.OK)
                    {
                        using var document = JsonDocument.Parse(body);
                        adds.Acked[image] = document.RootElement.GetProperty("firstKey").GetInt64();
                    }

                    if (add)
                    {
                        adds.InFlight.TryRemove(image, out _);
                    }

                    gone = 0;
                }
                catch (Exception e) when (e is HttpRequestException or TaskCanceledException or IOException)
                {
                    result.Interrupted(add ? "memory" : "predict");
                    gone++;
                    await Task.Delay(100).ConfigureAwait(false);
                }
            }
        })).ToArray();
        await Task.WhenAll(workers).ConfigureAwait(false);
        result.Elapsed = stopwatch.Elapsed.TotalSeconds;
        return result;
    }

    private static ByteArrayContent Body(ImageDataset images, int index, bool withLabel)
    {
        var pixels = images.GetImage(index);
        var body = new byte[20 + (4 * pixels.Length) + (withLabel ? 4 : 0)];
        "SCT1"u8.CopyTo(body);
        int[] dims = [1, images.Channels, images.Height, images.Width];
        for (var i = 0; i < 4; i++)
        {
            BinaryPrimitives.WriteInt32LittleEndian(body.AsSpan(4 + (4 * i)), dims[i]);
        }

        for (var i = 0; i < pixels.Length; i++)
        {
            BinaryPrimitives.WriteSingleLittleEndian(body.AsSpan(20 + (4 * i)), pixels[i] / 255f);
        }

        if (withLabel)
        {
            BinaryPrimitives.WriteInt32LittleEndian(body.AsSpan(20 + (4 * pixels.Length)), images.Labels[index]);
        }

        var content = new ByteArrayContent(body);
        content.Headers.ContentType = new("application/x-scache-tensor");
        return content;
    }

    private static async Task<(long[] Classes, float[] Probabilities)> Predict(HttpClient http, ImageDataset images, int[] indices)
    {
        var classes = new List<long>();
        var probabilities = new List<float>();
        foreach (var index in indices)
        {
            using var response = await http.PostAsync("/v1/predict", Body(images, index, withLabel: false)).ConfigureAwait(false);
            response.EnsureSuccessStatusCode();
            using var document = JsonDocument.Parse(await response.Content.ReadAsStringAsync().ConfigureAwait(false));
            var prediction = document.RootElement.GetProperty("predictions")[0];
            classes.Add(prediction.GetProperty("class").GetInt64());
            probabilities.AddRange(prediction.GetProperty("probabilities").EnumerateArray().Select(p => p.GetSingle()));
        }

        return ([.. classes], [.. probabilities]);
    }

    /// <summary>Reads the stopped server's cache file: each acknowledged add at its index, every added row a distinct attempted image.</summary>
    private static Dictionary<string, object?> Audit(Settings s, string served, ImageDataset images, long baseKeys, AddLedger adds, int[] unanswered)
    {
        using var scope = NewDisposeScope();
        using var net = new ModelRegistry().Load("resnet20", s.Weights);
        var factory = new ExactCacheMemoryFactory(new ExactCacheOptions());
        using var classifier = CacheClassifier.Load(served, net.Model, new CacheLoadOptions { Providers = [factory], AllowCheckpointMismatch = true });
        var state = ((IPersistentCacheMemory)classifier.Memory).ExportState();
        var labels = state.Blob("labels").ReadInt32s();
        var d = classifier.Dimension;
        var count = classifier.Count;
        var grown = new float[(count - baseKeys) * d];
        using (var keys = state.Blob("keys").OpenRead())
        {
            var skip = new byte[1 << 20];
            var remaining = baseKeys * d * 4;
            while (remaining > 0)
            {
                remaining -= keys.Read(skip, 0, (int)Math.Min(skip.Length, remaining));
            }

            keys.ReadExactly(System.Runtime.InteropServices.MemoryMarshal.AsBytes(grown.AsSpan()));
        }

        // The keys every attempted add should have, from the same network and recipe.
        var attempted = adds.Acked.Keys.Concat(unanswered).Distinct().Order().ToArray();
        var expected = new Dictionary<int, float[]>();
        for (var start = 0; start < attempted.Length; start += 256)
        {
            var batch = attempted[start..Math.Min(attempted.Length, start + 256)];
            using var x = cat(batch.Select(i => images.ToTensor(i, 1)).ToArray());
            var (k, _) = classifier.Features(x);
            var values = k.data<float>().ToArray();
            for (var j = 0; j < batch.Length; j++)
            {
                expected[batch[j]] = values[(j * d)..((j + 1) * d)];
            }
        }

        // Similarities of every added row to every attempted image's key: [rows, attempted].
        var rows = count - baseKeys;
        using var stored = tensor(grown, [rows, d]);
        using var wanted = tensor(attempted.SelectMany(i => expected[i]).ToArray(), [attempted.Length, d]);
        using var similarity = stored.matmul(wanted.t());
        var sims = similarity.data<float>().ToArray();
        var column = attempted.Select((image, j) => (image, j)).ToDictionary(p => p.image, p => p.j);

        var missing = 0;
        var minimum = double.PositiveInfinity;
        foreach (var (image, firstKey) in adds.Acked)
        {
            var row = firstKey - baseKeys;
            var sim = row >= 0 && row < rows ? sims[(row * attempted.Length) + column[image]] : double.NegativeInfinity;
            minimum = Math.Min(minimum, sim);
            if (sim < 0.9999 || labels[firstKey] != images.Labels[image])
            {
                missing++;
            }
        }

        var matched = new Dictionary<int, long>();
        var unmatched = 0;
        var duplicates = 0;
        for (long row = 0; row < rows; row++)
        {
            var best = 0;
            for (var j = 1; j < attempted.Length; j++)
            {
                if (sims[(row * attempted.Length) + j] > sims[(row * attempted.Length) + best])
                {
                    best = j;
                }
            }

            if (attempted.Length == 0 || sims[(row * attempted.Length) + best] < 0.9999)
            {
                unmatched++;
            }
            else if (!matched.TryAdd(attempted[best], row))
            {
                duplicates++;
            }
        }

        return new Dictionary<string, object?>
        {
            ["keysInFile"] = count,
            ["addedRows"] = count - baseKeys,
            ["acked"] = adds.Acked.Count,
            ["unansweredAtKill"] = unanswered.Length,
            ["unansweredButDurable"] = unanswered.Count(matched.ContainsKey),
            ["ackedMissing"] = missing,
            ["minimumAckedKeySimilarity"] = minimum,
            ["rowsMatchingNoAttemptedImage"] = unmatched,
            ["duplicatedImages"] = duplicates,
            ["everyAckedPresent"] = missing == 0,
            ["noneDuplicated"] = duplicates == 0 && unmatched == 0,
        };
    }

    private static async Task<Process> Start(Settings s, string cache, string url, HttpClient http, string tag)
    {
        var info = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in new[]
        {
            s.Scache, "serve", "--cache", cache, "--urls", url, "--snapshot-interval", s.SnapshotInterval.ToString(Invariant), "--verbose",
            "--weights", s.Weights, "--data", s.Data ?? "",
        }.Where(a => a.Length > 0))
        {
            info.ArgumentList.Add(a);
        }

        var process = Process.Start(info) ?? throw new InvalidOperationException("could not start the server");
        var log = new StreamWriter(Path.Combine(s.Out, $"server-{tag}.log")) { AutoFlush = true };
        process.OutputDataReceived += (_, e) => Log(log, e.Data);
        process.ErrorDataReceived += (_, e) => Log(log, e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        var started = Stopwatch.StartNew();
        while (started.Elapsed < TimeSpan.FromMinutes(10))
        {
            if (process.HasExited)
            {
                throw new InvalidOperationException($"the server exited with {process.ExitCode}; see server-{tag}.log");
            }

            try
            {
                using var response = await http.GetAsync("/v1/health").ConfigureAwait(false);
                if (response.StatusCode == HttpStatusCode.OK)
                {
                    Console.Error.WriteLine($"server {tag} healthy after {started.Elapsed.TotalSeconds:F1} s");
                    return process;
                }
            }
            catch (HttpRequestException)
            {
            }

            await Task.Delay(200).ConfigureAwait(false);
        }

        process.Kill();
        throw new TimeoutException("the server did not become healthy in 10 minutes");
    }

    private static void Log(StreamWriter log, string? line)
    {
        if (line is not null)
        {
            lock (log)
            {
                log.WriteLine(line);
            }
        }
    }

    /// <summary>SIGKILL (kill -9): no shutdown code runs.</summary>
    private static void Kill(Process server)
    {
        server.Kill(entireProcessTree: false);
        server.WaitForExit();
        Console.Error.WriteLine($"killed the server with SIGKILL (exit {server.ExitCode})");
    }

    /// <summary>SIGTERM: the server commits, snapshots and exits.</summary>
    private static int Stop(Process server)
    {
        using (var kill = Process.Start("kill", ["-TERM", server.Id.ToString(Invariant)]))
        {
            kill.WaitForExit();
        }

        if (!server.WaitForExit(TimeSpan.FromMinutes(5)))
        {
            server.Kill();
        }

        return server.ExitCode;
    }

    private static async Task<JsonElement> Info(HttpClient http)
    {
        using var document = JsonDocument.Parse(await http.GetStringAsync("/v1/info").ConfigureAwait(false));
        return document.RootElement.Clone();
    }

    private static string LoadAverage() => File.Exists("/proc/loadavg") ? File.ReadAllText("/proc/loadavg").Trim() : "n/a";

    private static int FreePort()
    {
        using var listener = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>Adds by image index: acknowledged (with the key index the answer gave) and sent but not answered yet.</summary>
    private sealed class AddLedger
    {
        public ConcurrentDictionary<int, long> Acked { get; } = new();

        public ConcurrentDictionary<int, bool> InFlight { get; } = new();
    }

    private sealed class LoadResult
    {
        private readonly ConcurrentDictionary<string, ConcurrentBag<double>> _latencies = new();
        private readonly ConcurrentDictionary<string, int> _statuses = new();
        private int _interrupted;

        public double Elapsed { get; set; }

        public int Errors => _statuses.Where(kv => !kv.Key.EndsWith(" 200", StringComparison.Ordinal)).Sum(kv => kv.Value);

        public void Record(string endpoint, HttpStatusCode status, double seconds)
        {
            _latencies.GetOrAdd(endpoint, _ => []).Add(seconds);
            _statuses.AddOrUpdate($"{endpoint} {(int)status}", 1, (_, n) => n + 1);
        }

        public void Interrupted(string endpoint) => Interlocked.Increment(ref _interrupted);

        public Dictionary<string, object?> Summary()
        {
            var all = _latencies.Values.SelectMany(v => v).ToArray();
            var result = new Dictionary<string, object?>
            {
                ["seconds"] = Elapsed,
                ["requests"] = all.Length,
                ["requestsPerSecond"] = all.Length / Math.Max(Elapsed, 1e-9),
                ["errors"] = Errors,
                ["interruptedRequests"] = _interrupted,
                ["statuses"] = new SortedDictionary<string, int>(_statuses),
                ["all"] = Percentiles(all),
            };
            foreach (var (endpoint, values) in _latencies)
            {
                result[endpoint] = Percentiles([.. values]);
            }

            return result;
        }

        private static Dictionary<string, double> Percentiles(double[] values)
        {
            Array.Sort(values);
            double At(double q) => values.Length == 0 ? double.NaN : values[Math.Min(values.Length - 1, (int)Math.Ceiling(q * values.Length) - 1)] * 1000;
            return new Dictionary<string, double>
            {
                ["count"] = values.Length,
                ["p50Ms"] = At(0.50),
                ["p95Ms"] = At(0.95),
                ["p99Ms"] = At(0.99),
                ["maxMs"] = values.Length == 0 ? double.NaN : values[^1] * 1000,
            };
        }
    }

    private sealed record Settings(
        string Scache, string Cache, int Clients, int Seconds, double AddFraction, int KillAfter, int SnapshotInterval, int Probes, string Out,
        string Weights, string? Data)
    {
        public static Settings Parse(string[] args)
        {
            string Required(string name) => BenchmarkText.ArgValue(args, name) ?? throw new FormatException($"{name} is required.");
            int Int(string name, int value) => BenchmarkText.ArgValue(args, name) is { } t ? int.Parse(t, Invariant) : value;
            var root = BenchmarkText.RepositoryRoot() ?? Directory.GetCurrentDirectory();
            return new Settings(
                BenchmarkText.ArgValue(args, "--scache") ?? Path.Combine(root, "src", "Host", "bin", "Release", "net10.0", "scache.dll"),
                Path.GetFullPath(Required("--cache")),
                Int("--clients", 8),
                Int("--seconds", 60),
                BenchmarkText.ArgValue(args, "--add-fraction") is { } f ? double.Parse(f, Invariant) : 0.1,
                Int("--kill-after", 5),
                Int("--snapshot-interval", 15),
                Int("--probes", 100),
                Path.GetFullPath(Required("--out")),
                BenchmarkText.ArgValue(args, "--weights") ?? Path.Combine(root, "..", "shared", "models", "cifar10", "resnet20.safetensors"),
                BenchmarkText.ArgValue(args, "--data") ?? Path.Combine(root, "..", "shared", "data", "cifar10"));
        }
    }
}
