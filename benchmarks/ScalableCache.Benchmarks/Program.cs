namespace ScalableCache.Benchmarks;

/// <summary>
/// <c>scache-bench NAME [options]</c>: runs one benchmark. Each benchmark lives in its own file as a static class with a
/// <c>Name</c> and a <c>Run(string[] args)</c> returning the exit code; register it in <see cref="Benchmarks"/>.
/// Run in Release: <c>dotnet run -c Release --project benchmarks/ScalableCache.Benchmarks -- exact --keys 50000</c>.
/// </summary>
internal static class Program
{
    /// <summary>Exit code: the benchmark ran.</summary>
    public const int Success = 0;

    /// <summary>Exit code: unknown benchmark or bad arguments.</summary>
    public const int UsageError = 2;

    /// <summary>Exit code: an input file the arguments name is missing, damaged or unusable.</summary>
    public const int InvalidInput = 3;

    private static readonly (string Name, string Description, Func<string[], int> Run)[] Benchmarks =
    [
        (ExactBenchmark.Name, "Exact store: blocked multi-θ log-mass vs a bare matrix multiply of the same shapes", ExactBenchmark.Run),
        (HnswBenchmark.Name, "HNSW store vs the exact store: build time, query throughput, recall, memory", HnswBenchmark.Run),
        (ExtractionBenchmark.Name, "Key extraction: images/s with layer taps vs the same forward pass without taps (ResNet-20)", ExtractionBenchmark.Run),
        (StoresBenchmark.Name, "Every store on the same synthetic keys (default 1,000,000 × 256): build, resident memory, throughput, error, agreement, recall; ratios vs Exact", StoresBenchmark.Run),
        (ServeBenchmark.Name, "scache serve on localhost: K clients for S seconds (90 % predict, 10 % add), then kill -9 while idle and during adds, restart, audit", ServeBenchmark.Run),
        (OrleansBenchmark.Name, "Orleans store (3 silos in this process, loopback TCP) vs one exact store on ResNet-20 keys: max |ΔL|, predictions, add and query latency per batch, Hnsw shards vs Exact", OrleansBenchmark.Run),
        (OutOfCoreBenchmark.Name, "Keys out of core at ImageNet size (1,281,167 × 2,048 synthetic keys, 1,000 classes): key-file write, mapped open, resident memory, 1-θ and 9-θ query seconds vs a bare mm, RP→Exact/RP→HNSW (built from the key file) and float16 agreement, recall and p_mem TVD vs Exact float32; --keys for real keys", OutOfCoreBenchmark.Run),
        (SearchScoreBenchmark.Name, "Layer search: scoring one layer set ([5,000, 50,000] float16 similarities, 9 θ × 9 λ) with the fused kernel vs the tensor path (SimilarityLogMass); ratio and same choice", SearchScoreBenchmark.Run),
        (RandomProjectionBenchmark.Name, "Random projection: matrix generation and projection throughput per kind (dense vs COO), RP→Exact vs Exact queries", RandomProjectionBenchmark.Run),
    ];

    public static int Main(string[] args)
    {
        if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
        {
            PrintUsage(Console.Out);
            return args.Length == 0 ? UsageError : Success;
        }

        var match = Benchmarks.FirstOrDefault(b => string.Equals(b.Name, args[0], StringComparison.OrdinalIgnoreCase));
        if (match.Run is null)
        {
            Console.Error.WriteLine($"Unknown benchmark '{args[0]}'.");
            PrintUsage(Console.Error);
            return UsageError;
        }

        return match.Run(args[1..]);
    }

    private static void PrintUsage(TextWriter writer)
    {
        writer.WriteLine("usage: scache-bench NAME [options]   (build with -c Release)");
        foreach (var (name, description, _) in Benchmarks)
        {
            writer.WriteLine($"  {name,-8} {description}");
        }
    }
}
