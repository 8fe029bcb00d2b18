using System.CommandLine;
using System.Globalization;

namespace ScalableCache.Host.Cli;

/// <summary>Option definitions shared by several commands (a new instance per command).</summary>
internal static class CommonOptions
{
    public static Option<string> Model(string defaultValue = "resnet20") => new("--model", "-m")
    {
        Description = "Model name from the registry: resnet20, resnet32, resnet44, resnet56, resnet110 or cifar-resnet:N.",
        DefaultValueFactory = _ => defaultValue,
    };

    public static Option<string?> Weights() => new("--weights")
    {
        Description = "Checkpoint file (.safetensors, .pt/.pth, or legacy .th). Default: looked up by model name in Assets:Models / SCACHE_MODELS, else downloaded.",
    };

    public static Option<string?> Data() => new("--data")
    {
        Description = "CIFAR-10 binary folder (cifar-10-batches-bin or its parent). Default: SCACHE_DATA, else Assets:Cifar10.",
    };

    public static Option<string?> Out() => new("--out", "-o")
    {
        Description = "Report folder (Markdown, JSON, PNG). Default: runs/<command>-<UTC time>.",
    };

    public static Option<int> Seed() => new("--seed")
    {
        Description = "Seed of the random validation/report split of the test set (and of subsets).",
        DefaultValueFactory = _ => 0,
    };

    public static Option<bool> Flip() => new("--flip")
    {
        Description = "Add horizontally flipped training images to the cache (the paper's C-10+ cache: 100,000 keys).",
    };

    public static Option<string?> Layers() => new("--layers", "-l")
    {
        Description = "Comma-separated layer names to key the cache on (see `scache layers`). Default: chosen by greedy search on the validation half.",
    };

    public static Option<string?> Thetas() => new("--thetas")
    {
        Description = "θ grid, comma-separated (default 10,20,…,90 or GridSearch:Thetas).",
    };

    public static Option<string?> Lambdas() => new("--lambdas")
    {
        Description = "λ grid, comma-separated (default 0.1,…,0.9 or GridSearch:Lambdas).",
    };

    public static Option<bool> IncludeCacheOnly() => new("--include-cache-only")
    {
        Description = "Let λ = 1 (cache-only) compete in the mixed model's search.",
    };

    public static Option<int> MaxLayers() => new("--max-layers")
    {
        Description = "Largest layer set the greedy combination search may pick.",
        DefaultValueFactory = _ => 3,
    };

    public static Option<string?> Candidates() => new("--candidates")
    {
        Description = "Comma-separated candidate layers for the combination search. Default: the blocks of the last stage and the pooled features.",
    };

    public static Option<int?> MaxTrain() => new("--max-train")
    {
        Description = "Use a seeded class-balanced subset of at most this many training images (quick runs; default all).",
    };

    public static Option<int?> MaxTest() => new("--max-test")
    {
        Description = "Use a seeded class-balanced subset of at most this many test images (quick runs; default all).",
    };

    /// <summary>Parses a comma-separated list of numbers, or null when absent.</summary>
    public static IReadOnlyList<double>? Numbers(string? text, string option)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            return null;
        }

        var values = new List<double>();
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!double.TryParse(part, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) || !double.IsFinite(value))
            {
                throw new UsageException($"{option}: '{part}' is not a number.");
            }

            values.Add(value);
        }

        return values;
    }

    /// <summary>Splits a comma-separated list of names, or null when absent.</summary>
    public static IReadOnlyList<string>? Names(string? text) =>
        string.IsNullOrWhiteSpace(text) ? null : text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
}
