using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using ScalableCache.Core.Evaluation;
using TorchSharp;
using static TorchSharp.torch;

using static ScalableCache.Benchmarks.BenchmarkText;

namespace ScalableCache.Benchmarks;

/// <summary>
/// The layer search's scoring of one layer set (<c>LayerCombinationSearch.Score</c>):
/// the fused kernel against the tensor path it replaced (<see cref="SimilarityLogMass"/>), on the same float16 similarity
/// matrices <c>[Q, N]</c> of L layers, θ grid 10…90 and λ grid 0.1…0.9, in the same process and interleaved: seconds per
/// call, the ratio tensor time / fused time, and whether both choose the same (error, θ, λ); then the fused kernel reading the
/// same matrices from <see cref="SimilarityFile"/>s (written to a temporary folder, deleted at the end) as the layer search now
/// does, and the ratio of its time to the in-memory one.
/// </summary>
/// <remarks>
/// Arguments (all optional): <c>--queries Q</c> (5000), <c>--keys N</c> (50000), <c>--dim d</c> (64, per layer, for making
/// the similarities), <c>--classes C</c> (10), <c>--layers L</c> (2), <c>--repeats R</c> (2), <c>--weighted</c> (score
/// concatenated keys: per-layer norm weights), <c>--threads t</c>, <c>--seed s</c> (1). Both paths run once on one block first
/// (warm-up, not counted).
/// </remarks>
internal static class SearchScoreBenchmark
{
    /// <summary>Name of this benchmark in the dispatcher.</summary>
    public const string Name = "search-score";

    private const int RowBlock = 512;

    private static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;
    private static readonly double[] Thetas = [10, 20, 30, 40, 50, 60, 70, 80, 90];
    private static readonly double[] Lambdas = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

    public static int Run(string[] args)
    {
        ArgumentNullException.ThrowIfNull(args);
        int Int(string name, int fallback) => ArgValue(args, name) is { } v
            ? int.TryParse(v, NumberStyles.Integer, Invariant, out var parsed) ? parsed : -1
            : fallback;
        var (q, n, d, c, layers, repeats, seed) =
            (Int("--queries", 5000), Int("--keys", 50_000), Int("--dim", 64), Int("--classes", 10), Int("--layers", 2), Int("--repeats", 2), Int("--seed", 1));
        var threads = Int("--threads", 0);
        var weighted = args.Contains("--weighted");
        if (q < 1 || n < 1 || d < 1 || c < 1 || layers < 1 || repeats < 1 || threads < 0)
        {
            Console.Error.WriteLine("--queries, --keys, --dim, --classes, --layers, --repeats and --threads must be positive integers.");
            return Program.UsageError;
        }

        if (threads > 0)
        {
            set_num_threads(threads);
        }

        Console.WriteLine(Line(
            $"Search-score benchmark: {layers} float16 similarity matrices [Q={q:N0}, N={n:N0}] ({(weighted ? "weighted sum" : "mean")}), C={c} classes, {Thetas.Length} θ × {Lambdas.Length} λ, query block {RowBlock}, torch threads {get_num_threads()}, {Environment.ProcessorCount} cores"));

        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var gen = manual_seed(seed);
        var trainY = randint(0, c, [n], generator: gen, dtype: ScalarType.Int64);
        var valY = randint(0, c, [q], generator: gen, dtype: ScalarType.Int64);
        var similarities = new Tensor[layers];
        var norms = new (Tensor QueryNorms, Tensor KeyNorms)[layers];
        for (var l = 0; l < layers; l++)
        {
            using var inner = NewDisposeScope();
            var centres = randn(c, d, generator: gen);
            Tensor Raw(Tensor labels) => (centres.index_select(0, labels) * 0.2) + randn(labels.shape[0], d, generator: gen);
            var (train, val) = (Raw(trainY), Raw(valY));
            similarities[l] = LayerCombinationSearch.Similarities(val / val.norm(1, keepdim: true), train / train.norm(1, keepdim: true)).MoveToOuterDisposeScope();
            norms[l] = (val.norm(1).MoveToOuterDisposeScope(), train.norm(1).MoveToOuterDisposeScope());
        }

        var weights = weighted ? LayerCombinationSearch.ConcatenatedWeights(norms) : null;
        var logits = randn(q, c, generator: gen) + (nn.functional.one_hot(valY, c).to_type(ScalarType.Float32) * 1.5);
        var pNet = logits.softmax(1);
        string[] names = [.. Enumerable.Range(0, layers).Select(l => $"layer{l}")];

        var folder = Directory.CreateTempSubdirectory("scache-bench-search-").FullName;
        var files = new SimilarityMatrix[layers];
        for (var l = 0; l < layers; l++)
        {
            using var writer = new SimilarityFile.Writer(Path.Combine(folder, $"s{l}.f16"), q, n);
            for (long start = 0; start < n; start += 256)
            {
                using var inner = NewDisposeScope();
                writer.Append(similarities[l].narrow(1, start, Math.Min(256, n - start)));
            }

            files[l] = writer.Complete();
        }

        LayerSetScore ScoreFiles()
        {
            var errors = LayerCombinationSearch.Errors(files, trainY, pNet, valY, c, Thetas, Lambdas, RowBlock, weights, fused: true);
            return LayerCombinationSearch.Best(names, errors, Thetas, Lambdas, q);
        }

        LayerSetScore Score(bool fused, int rows)
        {
            var (part, partWeights) = rows == q
                ? (similarities, weights)
                : ([.. similarities.Select(s => s.narrow(0, 0, rows))], weights?.Select(w => (w.Query.narrow(0, 0, rows), w.Key)).ToArray());
            var errors = LayerCombinationSearch.Errors(
                part, trainY, pNet.narrow(0, 0, rows), valY.narrow(0, 0, rows), c, Thetas, Lambdas, RowBlock, partWeights, fused);
            return LayerCombinationSearch.Best(names, errors, Thetas, Lambdas, rows);
        }

        var warmRows = Math.Min(RowBlock, q);
        Score(fused: false, warmRows);
        Score(fused: true, warmRows);
        var tensorTimes = new List<double>();
        var fusedTimes = new List<double>();
        LayerSetScore? tensorScore = null, fusedScore = null;
        var fileTimes = new List<double>();
        LayerSetScore? fileScore = null;
        for (var r = 0; r < repeats; r++)
        {
            tensorTimes.Add(Seconds(() => tensorScore = Score(fused: false, q)));
            fusedTimes.Add(Seconds(() => fusedScore = Score(fused: true, q)));
            fileTimes.Add(Seconds(() => fileScore = ScoreFiles()));
        }

        foreach (var f in files)
        {
            f.Dispose();
        }

        Directory.Delete(folder, recursive: true);
        var fileSeconds = Quantile(fileTimes, 0.5);
        var sameFromFiles = (fileScore!.Error, fileScore.Theta, fileScore.Lambda) == (fusedScore!.Error, fusedScore.Theta, fusedScore.Lambda);

        var (tensorSeconds, fusedSeconds) = (Quantile(tensorTimes, 0.5), Quantile(fusedTimes, 0.5));
        var ratio = tensorSeconds / fusedSeconds;
        var same = (tensorScore!.Error, tensorScore.Theta, tensorScore.Lambda) == (fusedScore!.Error, fusedScore.Theta, fusedScore.Lambda);
        string Runs(List<double> times) => string.Join(" ", times.Select(t => t.ToString("F2", Invariant)));
        Console.WriteLine(Line($"{"tensor path (SimilarityLogMass)",-34} {tensorSeconds,8:F2} s   runs {Runs(tensorTimes)}   error {tensorScore.Error:P2} θ={tensorScore.Theta} λ={tensorScore.Lambda}"));
        Console.WriteLine(Line($"{"fused kernel (LogMassKernel)",-34} {fusedSeconds,8:F2} s   runs {Runs(fusedTimes)}   error {fusedScore.Error:P2} θ={fusedScore.Theta} λ={fusedScore.Lambda}"));
        Console.WriteLine(Line($"{"tensor time / fused time",-34} {ratio,8:F2}   same choice: {same}"));
        Console.WriteLine(Line($"{"fused kernel, matrices in files",-34} {fileSeconds,8:F2} s   runs {Runs(fileTimes)}   same choice as in memory: {sameFromFiles}"));
        Console.WriteLine(Line($"{"files time / in-memory fused time",-34} {fileSeconds / fusedSeconds,8:F2}"));
        using (var process = Process.GetCurrentProcess())
        {
            Console.WriteLine(Line($"{"peak working set (process)",-34} {Mib(process.PeakWorkingSet64)}   similarity matrices alone: {Mib(2L * q * n * layers)}"));
        }

        Console.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object?>
        {
            ["benchmark"] = Name,
            ["queries"] = q,
            ["keys"] = n,
            ["classes"] = c,
            ["layers"] = layers,
            ["weighted"] = weighted,
            ["thetas"] = Thetas.Length,
            ["lambdas"] = Lambdas.Length,
            ["threads"] = get_num_threads(),
            ["repeats"] = repeats,
            ["tensor_s"] = Math.Round(tensorSeconds, 3),
            ["fused_s"] = Math.Round(fusedSeconds, 3),
            ["tensor_over_fused"] = Math.Round(ratio, 3),
            ["same_choice"] = same,
            ["files_s"] = Math.Round(fileSeconds, 3),
            ["files_over_fused"] = Math.Round(fileSeconds / fusedSeconds, 3),
            ["same_choice_files"] = sameFromFiles,
        }));
        return Program.Success;
    }

    private static string Line(FormattableString text) => text.ToString(Invariant);
}
