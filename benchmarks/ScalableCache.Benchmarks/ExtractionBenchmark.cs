using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using ScalableCache.Core;
using ScalableCache.Core.Data;
using ScalableCache.Core.Features;
using ScalableCache.Core.Models;
using TorchSharp;
using static TorchSharp.torch;
using static ScalableCache.Benchmarks.BenchmarkText;

namespace ScalableCache.Benchmarks;

/// <summary>
/// Key extraction throughput: images/s of <see cref="DatasetFeatureExtractor"/> with several taps (default <c>layer3.1</c>,
/// <c>layer3.2</c>, <c>avgpool</c> of ResNet-20) against the same forward pass without taps — same batches, same normalisation,
/// logits and probabilities copied out alike — measured in the same run, interleaved batch by batch (each side's time summed over
/// a pass; medians of the repeats after one warm-up batch each), then one uninterrupted pass of the driver over the whole set.
/// Goal: taps cost at most 10 % over the plain pass.
/// </summary>
/// <remarks>
/// Arguments (all optional): <c>--images N</c> (50000, the first N CIFAR-10 training images), <c>--batch B</c> (256),
/// <c>--forward-batch F</c> (<see cref="LayerTapExtractor.DefaultForwardBatchSize"/>: images per call of the network, on both sides
/// and in PyTorch's loop), <c>--repeats R</c> (1), <c>--layers a,b,c</c>, <c>--model NAME</c> (resnet20), <c>--weights FILE</c> (resnet20.safetensors in
/// <c>shared/models/cifar10</c>), <c>--data FOLDER</c> (<c>SCACHE_DATA</c>, else <c>shared/data/cifar10</c> beside the
/// repository), <c>--device cpu|cuda[:N]</c> (cpu), <c>--no-anchor</c> (skip PyTorch's forward pass on the same images, which
/// runs when Debian's <c>python3-torch</c> is installed: images/s and the ratio, goal ≥ 0.95), <c>--default-allocator</c> (leave
/// glibc's allocator as it is instead of <see cref="ProcessMemory.ReuseNativeAllocations"/>, which the <c>scache</c> host applies).
/// </remarks>
internal static class ExtractionBenchmark
{
    /// <summary>Name of this benchmark in the dispatcher.</summary>
    public const string Name = "extract";

    private const double OverheadGoal = 0.10;
    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

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

        if (settings.Images < 1 || settings.Batch < 1 || settings.ForwardBatch < 1 || settings.Repeats < 1 || settings.Layers.Count == 0)
        {
            Console.Error.WriteLine("--images, --batch, --forward-batch and --repeats must be positive and --layers must name at least one layer.");
            return Program.UsageError;
        }

        var shared = BenchmarkText.SharedFolder();
        var weights = settings.Weights ?? Path.Combine(shared ?? ".", "models", "cifar10", "resnet20.safetensors");
        var dataPath = settings.Data ?? Environment.GetEnvironmentVariable(DatasetLocator.EnvironmentVariable)
            ?? Path.Combine(shared ?? ".", "data", "cifar10");
        var device = TorchDevices.Resolve(settings.Device);
        var reuse = !settings.DefaultAllocator && ProcessMemory.ReuseNativeAllocations(); // as the scache host does (Torch:ReuseNativeMemory)

        var load = Stopwatch.StartNew();
        var train = Cifar10.LoadTrain(DatasetLocator.ResolveCifar10(dataPath, DatasetParts.Train));
        if (settings.Images < train.Count)
        {
            train = train.Slice(0, settings.Images);
        }

        var registry = new ModelRegistry();
        using var loaded = registry.Load(settings.Model, weights, device: device);
        var model = loaded.Model;
        var normalization = loaded.Spec.Normalization;
        var input = new InputShape(train.Channels, train.Height, train.Width);
        var layerInfo = LayerInspector.ListLayers(model, input).ToDictionary(l => l.Name);
        var dimension = settings.Layers.Sum(l => layerInfo.TryGetValue(l, out var info) ? info.FeatureCount : 0);
        Console.WriteLine(
            Line($"Extraction benchmark: {settings.Model} ({Path.GetFileName(weights)}), {train.Count:N0} CIFAR-10 training images, batch {settings.Batch} in slices of {settings.ForwardBatch}, ") +
            Line($"taps {string.Join(", ", settings.Layers)} (D = {dimension:N0}), device {device}, torch threads {get_num_threads()}, ") +
            Line($"{Environment.ProcessorCount} cores; native allocator {(reuse ? "reusing freed blocks under 32 MiB (ProcessMemory.ReuseNativeAllocations)" : "glibc defaults (--default-allocator)")}; ") +
            Line($"setup {load.Elapsed.TotalSeconds:F1} s"));

        using var extractor = new LayerTapExtractor(model, settings.Layers) { ForwardBatchSize = settings.ForwardBatch };
        var options = new FeatureExtractionOptions { BatchSize = settings.Batch, Device = device };
        var warmUp = train.Slice(0, Math.Min(settings.Batch, train.Count));
        PlainPass(model, warmUp, normalization, settings.Batch, settings.ForwardBatch, device);
        DatasetFeatureExtractor.Extract(extractor, warmUp, normalization, options).Dispose();

        // Interleaved batch by batch (alternating which side goes first), so that load from other processes on a shared machine
        // hits both sides alike; each side's time is the sum over the batches of one pass.
        var plainTimes = new List<double>();
        var tapTimes = new List<double>();
        for (var r = 0; r < settings.Repeats; r++)
        {
            double plainTotal = 0, tapTotal = 0;
            for (var (start, b) = (0, 0); start < train.Count; start += settings.Batch, b++)
            {
                var batch = train.Slice(start, Math.Min(settings.Batch, train.Count - start));
                double Plain() => Time(() => PlainPass(model, batch, normalization, settings.Batch, settings.ForwardBatch, device));
                double Taps() => Time(() =>
                    DatasetFeatureExtractor.Extract(extractor, batch, normalization, options).Dispose());
                if (b % 2 == 0)
                {
                    plainTotal += Plain();
                    tapTotal += Taps();
                }
                else
                {
                    tapTotal += Taps();
                    plainTotal += Plain();
                }
            }

            plainTimes.Add(plainTotal);
            tapTimes.Add(tapTotal);
        }

        // One uninterrupted pass of the driver over the whole set, as a caller runs it (keys preallocated for all images).
        var wholePass = Time(() => DatasetFeatureExtractor.Extract(extractor, train, normalization, options).Dispose());

        double plain = Median(plainTimes), taps = Median(tapTimes);
        var overhead = (taps / plain) - 1;
        using var process = Process.GetCurrentProcess();
        Console.WriteLine();
        Console.WriteLine(Line($"{"",-30} {"median s",9} {"images/s",10}   runs (s)"));
        Row("forward, no taps", plain, train.Count, plainTimes);
        Row($"forward + {settings.Layers.Count} taps → keys", taps, train.Count, tapTimes);
        Row("driver, one uninterrupted pass", wholePass, train.Count, [wholePass]);
        Console.WriteLine(Line($"{"tap overhead",-30} {overhead * 100,8:F1} %   goal ≤ {OverheadGoal * 100:F0} %  {(overhead <= OverheadGoal ? "met" : "MISSED")}"));
        Console.WriteLine(Line($"{"peak working set (process)",-30} {process.PeakWorkingSet64 / 1048576.0,9:F0} MiB   keys alone: {train.Count * dimension * 4 / 1048576.0:F0} MiB"));

        var anchor = settings.NoAnchor ? null : TorchAnchor(settings, dataPath, train.Count, normalization, train.Count / wholePass, train.Count / plain);
        Console.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object?>
        {
            ["benchmark"] = Name,
            ["pytorch"] = anchor,
            ["model"] = settings.Model,
            ["images"] = train.Count,
            ["batch"] = settings.Batch,
            ["forward_batch"] = settings.ForwardBatch,
            ["layers"] = settings.Layers,
            ["dim"] = dimension,
            ["device"] = device.ToString(),
            ["threads"] = get_num_threads(),
            ["repeats"] = settings.Repeats,
            ["plain_s"] = Math.Round(plain, 3),
            ["taps_s"] = Math.Round(taps, 3),
            ["plain_images_per_s"] = Math.Round(train.Count / plain, 1),
            ["taps_images_per_s"] = Math.Round(train.Count / taps, 1),
            ["driver_pass_s"] = Math.Round(wholePass, 3),
            ["overhead"] = Math.Round(overhead, 4),
            ["goal_met"] = overhead <= OverheadGoal,
        }));
        return Program.Success;
    }

    /// <summary>
    /// PyTorch's forward pass (Debian's <c>python3-torch</c>, same threads) over the same images from the same <c>.th</c>
    /// checkpoint, and our driver's and plain pass's images/s over its. Only for the akamaster CIFAR ResNets (<c>resnetN</c>).
    /// </summary>
    private static Dictionary<string, object>? TorchAnchor(
        Settings settings, string dataPath, int images, InputNormalization normalization, double driver, double plain)
    {
        var depth = settings.Model.StartsWith("resnet", StringComparison.Ordinal) && int.TryParse(settings.Model.AsSpan(6), out var d) ? d : 0;
        var folder = Directory.GetFiles(dataPath, "data_batch_1.bin", SearchOption.AllDirectories).FirstOrDefault() is { } first ? Path.GetDirectoryName(first) : null;
        var checkpoint = settings.Weights is { } w && w.EndsWith(".th", StringComparison.Ordinal) ? w
            : BenchmarkText.SharedFolder() is { } shared && Directory.Exists(Path.Combine(shared, "models", "cifar10"))
                ? Directory.GetFiles(Path.Combine(shared, "models", "cifar10"), $"{settings.Model}-*.th").FirstOrDefault()
                : null;
        if (depth == 0 || folder is null || checkpoint is null || normalization.IsPerPixel)
        {
            Console.WriteLine($"PyTorch anchor skipped: it runs the akamaster CIFAR ResNets from their .th file on the CIFAR-10 binary batches ({settings.Model}).");
            return null;
        }

        if (!PythonAnchor.Available("torch", out var why))
        {
            Console.WriteLine($"PyTorch anchor skipped: {why} (apt-get install python3-torch)");
            return null;
        }

        string Join(IReadOnlyList<float> values) => string.Join(",", values.Select(v => v.ToString("R", Invariant)));
        Console.WriteLine($"PyTorch ({PythonAnchor.Interpreter}) on the same {images:N0} images from {Path.GetFileName(checkpoint)} …");
        var result = PythonAnchor.Run(
            "torch_forward_anchor.py",
            [folder, images.ToString(Invariant), Math.Min(settings.Batch, settings.ForwardBatch).ToString(Invariant), depth.ToString(Invariant),
                get_num_threads().ToString(Invariant), checkpoint, Join(normalization.Mean), Join(normalization.Std)],
            TimeSpan.FromHours(2));
        var rate = result.GetProperty("imagesPerSecond").GetDouble();
        var (version, cpu, errors) = (result.GetProperty("torch").GetString(), result.GetProperty("cpuSeconds").GetDouble(), result.GetProperty("errors").GetInt32());
        Console.WriteLine(Line($"PyTorch {version}: {rate:F0} images/s ({cpu:F1} s CPU, {errors} errors); ours / PyTorch: driver ×{driver / rate:F2}, plain pass ×{plain / rate:F2} (goal ≥ 0.95)"));
        return new Dictionary<string, object>
        {
            ["version"] = result.GetProperty("torch").GetString() ?? "?",
            ["images_per_s"] = Math.Round(rate, 1),
            ["errors"] = result.GetProperty("errors").GetInt32(),
            ["driver_ratio"] = Math.Round(driver / rate, 3),
            ["plain_ratio"] = Math.Round(plain / rate, 3),
        };
    }

    /// <summary>
    /// The driver's loop without taps: same batches, slices of <paramref name="forwardBatch"/> images per call of the network, same
    /// normalisation, logits and probabilities copied into CPU tensors.
    /// </summary>
    private static void PlainPass(ImageClassifier model, ImageDataset data, InputNormalization normalization, int batch, int forwardBatch, Device device)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var count = data.Count;
        var size = data.ImageSize;
        var logits = empty([count, model.ClassCount], ScalarType.Float32);
        var probabilities = empty([count, model.ClassCount], ScalarType.Float32);
        var buffer = new byte[Math.Min(batch, count) * size];
        for (var start = 0; start < count; start += batch)
        {
            var n = Math.Min(batch, count - start);
            data.Pixels.Slice(start * size, n * size).CopyTo(buffer);
            var x = empty([n, data.Channels, data.Height, data.Width], ScalarType.Byte);
            x.bytes = buffer.AsSpan(0, n * size);
            var normalized = normalization.Normalize(x, device);
            var output = cat([.. Enumerable.Range(0, (n + forwardBatch - 1) / forwardBatch)
                .Select(i => model.Logits(normalized.narrow(0, i * forwardBatch, Math.Min(forwardBatch, n - (i * forwardBatch)))))], 0);
            logits.narrow(0, start, n).copy_(output);
            probabilities.narrow(0, start, n).copy_(nn.functional.softmax(output, 1));
            scope.DisposeEverythingBut(logits, probabilities);
        }
    }

    private static void Row(string label, double seconds, int images, List<double> runs) =>
        Console.WriteLine(Line(
            $"{label,-30} {seconds,9:F2} {images / seconds,10:F0}   {string.Join(" ", runs.Select(r => r.ToString("F2", Invariant)))}"));

    private static double Time(Action action)
    {
        var watch = Stopwatch.StartNew();
        action();
        return watch.Elapsed.TotalSeconds;
    }


    private static string Line(FormattableString text) => text.ToString(Invariant);

    private sealed record Settings(
        int Images, int Batch, int ForwardBatch, int Repeats, IReadOnlyList<string> Layers, string Model, string? Weights, string? Data, string Device, bool NoAnchor,
        bool DefaultAllocator)
    {
        public static Settings Parse(string[] args)
        {
            string? Value(string name) => BenchmarkText.ArgValue(args, name);

            int? Int(string name) => Value(name) is { } v
                ? int.TryParse(v, NumberStyles.Integer, Invariant, out var parsed) ? parsed : throw new FormatException($"{name} expects an integer, got '{v}'.")
                : null;

            var layers = Value("--layers") is { } l
                ? l.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                : ["layer3.1", "layer3.2", "avgpool"];
            return new Settings(
                Int("--images") ?? 50_000,
                Int("--batch") ?? 256,
                Int("--forward-batch") ?? LayerTapExtractor.DefaultForwardBatchSize,
                Int("--repeats") ?? 1,
                layers,
                Value("--model") ?? "resnet20",
                Value("--weights"),
                Value("--data"),
                Value("--device") ?? "cpu",
                args.Contains("--no-anchor"),
                args.Contains("--default-allocator"));
        }
    }
}
