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
        Description = "CIFAR-10 binary folder (cifar-10-batches-bin or its parent). Default: SCACHE_DATA, else Assets:Cifar10. For ImageNet: the folder holding train/<wnid>/*.JPEG and val/ (required).",
    };

    public static Option<string?> Dataset() => new Option<string?>("--dataset")
    {
        Description = "Data set: cifar10, cifar100 or imagenet. Default: the one the model classifies (ImageNet for 224×224 models such as torchvision:resnet50).",
    }.AcceptOnlyFromAmong("cifar10", "cifar100", "imagenet");

    public static Option<int?> PerClass() => new Option<int?>("--per-class")
    {
        Description = "ImageNet: a seeded class-balanced cache of this many training images per class (the paper used 275); default the whole training set.",
    }.AtLeast(1);

    public static Option<bool> HalfKeys() => new("--half-keys")
    {
        Description = "Hold the per-layer keys of the training and test images as float16 (halves their memory, e.g. for the full ImageNet training set); the cache is composed from them.",
    };

    /// <summary>The data set a <see cref="Dataset"/> value names, or null when absent.</summary>
    public static Experiments.DataSetKind? DatasetKind(string? value) => value switch
    {
        null => null,
        "cifar10" => Experiments.DataSetKind.Cifar10,
        "cifar100" => Experiments.DataSetKind.Cifar100,
        "imagenet" => Experiments.DataSetKind.ImageNet,
        _ => throw new UsageException($"Unknown --dataset '{value}': cifar10, cifar100 or imagenet."),
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

    public static Option<string?> Layers() => new Option<string?>("--layers", "-l")
    {
        Description = "Comma-separated layer names to key the cache on (see `scache layers`; NAME:avg for NAME globally average-pooled). Default: chosen by greedy search on the validation half.",
    }.NameList();

    public static Option<string?> Thetas() => new Option<string?>("--thetas")
    {
        Description = "θ grid, comma-separated (default 10,20,…,90 or GridSearch:Thetas).",
    }.NumberList(NumberRange.Positive);

    public static Option<string?> Lambdas() => new Option<string?>("--lambdas")
    {
        Description = "λ grid, comma-separated (default 0.1,…,0.9 or GridSearch:Lambdas).",
    }.NumberList(NumberRange.UnitInterval);

    public static Option<bool> IncludeCacheOnly() => new("--include-cache-only")
    {
        Description = "Let λ = 1 (cache-only) compete in the mixed model's search.",
    };

    public static Option<int?> WidenThetas() => new Option<int?>("--widen-thetas")
    {
        Description = "Adaptive θ grid: while a chosen θ lies on the grid's edge, add one more θ beyond it and search again, at most N times (default 0 or GridSearch:MaxThetaWidenings).",
    }.AtLeast(0);

    public static Option<int> MaxLayers() => new Option<int>("--max-layers")
    {
        Description = "Largest layer set the greedy combination search may pick.",
        DefaultValueFactory = _ => 3,
    }.AtLeast(1);

    public static Option<string?> Candidates() => new Option<string?>("--candidates")
    {
        Description = "Comma-separated candidate layers for the combination search (NAME:avg taps NAME globally average-pooled). Default: the blocks of the last stage (pooled, NAME:avg, when wider than 24,576 values, as in the ImageNet models) and the pooled features.",
    }.NameList();

    public static Option<int?> MaxTrain() => new Option<int?>("--max-train")
    {
        Description = "Use a seeded class-balanced subset of at most this many training images (quick runs; default all).",
    }.AtLeast(1);

    public static Option<int?> MaxTest() => new Option<int?>("--max-test")
    {
        Description = "Use a seeded class-balanced subset of at most this many test images (quick runs; default all).",
    }.AtLeast(1);

    /// <summary>θ of the cache model: a finite number greater than 0.</summary>
    public static Option<double?> Theta(string description, string name = "--theta") => new Option<double?>(name) { Description = description }.Within(NumberRange.Positive);

    /// <summary>λ of the cache model: a finite number in [0, 1].</summary>
    public static Option<double?> Lambda(string description) => new Option<double?>("--lambda") { Description = description }.Within(NumberRange.UnitInterval);

    /// <summary>Parses a comma-separated list of numbers (see <see cref="NumberList"/>), or null when absent.</summary>
    /// <exception cref="UsageException">The list is empty, has an empty entry, or an entry is not a finite number.</exception>
    public static IReadOnlyList<double>? Numbers(string? text, string option) =>
        text is null ? null : [.. Items(text, option).Select(part => Number(part, option))];

    /// <summary>Splits a comma-separated list of names (see <see cref="NameList"/>), or null when absent.</summary>
    public static IReadOnlyList<string>? Names(string? text) =>
        string.IsNullOrWhiteSpace(text) ? null : text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    /// <summary>Rejects, when the command line is parsed, a value outside <paramref name="range"/> (NaN and ±∞ included).</summary>
    public static Option<double> Within(this Option<double> option, NumberRange range) =>
        Require(option, (double value) => range.Check(value, option.Name));

    /// <inheritdoc cref="Within(Option{double}, NumberRange)"/>
    public static Option<double?> Within(this Option<double?> option, NumberRange range) =>
        Require(option, (double? value) =>
        {
            if (value is { } v)
            {
                range.Check(v, option.Name);
            }
        });

    /// <summary>Rejects, when the command line is parsed, a value below <paramref name="minimum"/>.</summary>
    public static Option<int> AtLeast(this Option<int> option, int minimum) =>
        Require(option, (int value) => CheckAtLeast(value, minimum, option.Name));

    /// <inheritdoc cref="AtLeast(Option{int}, int)"/>
    public static Option<int?> AtLeast(this Option<int?> option, int minimum) =>
        Require(option, (int? value) =>
        {
            if (value is { } v)
            {
                CheckAtLeast(v, minimum, option.Name);
            }
        });

    /// <summary>Rejects, when the command line is parsed, an empty list or one with an empty entry (<c>a,,b</c>).</summary>
    /// <typeparam name="TOption">A string option, <c>Option&lt;string&gt;</c> or <c>Option&lt;string?&gt;</c>.</typeparam>
    public static TOption NameList<TOption>(this TOption option)
        where TOption : Option =>
        Require(option, (string? value) => Items(value ?? string.Empty, option.Name));

    /// <summary>Rejects, when the command line is parsed, an empty list, an empty entry, or an entry that is not a number in <paramref name="range"/>.</summary>
    public static Option<string?> NumberList(this Option<string?> option, NumberRange range) =>
        Require(option, (string? value) =>
        {
            foreach (var number in Numbers(value ?? string.Empty, option.Name)!)
            {
                range.Check(number, option.Name);
            }
        });

    /// <summary>Runs <paramref name="check"/> on a value given on the command line; its <see cref="UsageException"/> becomes a parse error.</summary>
    private static TOption Require<TOption, T>(TOption option, Action<T> check)
        where TOption : Option
    {
        option.Validators.Add(result =>
        {
            if (result.Implicit)
            {
                return; // the default value
            }

            T value;
            try
            {
                value = result.GetValueOrDefault<T>()!;
            }
            catch (InvalidOperationException)
            {
                return; // not convertible to T: the parser reports that itself
            }

            try
            {
                check(value);
            }
            catch (UsageException ex)
            {
                result.AddError(ex.Message);
            }
        });
        return option;
    }

    private static void CheckAtLeast(int value, int minimum, string option)
    {
        if (value < minimum)
        {
            throw new UsageException($"{option} must be at least {minimum}, not {value}.");
        }
    }

    private static string[] Items(string text, string option)
    {
        var items = text.Split(',', StringSplitOptions.TrimEntries);
        if (items.All(i => i.Length == 0))
        {
            throw new UsageException($"{option} is empty: give a comma-separated list, or leave {option} out for the default.");
        }

        return items.Any(i => i.Length == 0)
            ? throw new UsageException($"{option} has an empty entry in '{text}'.")
            : items;
    }

    private static double Number(string text, string option) =>
        double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) && double.IsFinite(value)
            ? value
            : throw new UsageException($"{option}: '{text}' is not a finite number.");
}

/// <summary>The values a numeric option accepts: finite, and between <see cref="Minimum"/> and <see cref="Maximum"/>.</summary>
/// <param name="Minimum">Smallest value; excluded when <paramref name="MinimumExcluded"/>.</param>
/// <param name="Maximum">Largest value (inclusive).</param>
/// <param name="MinimumExcluded">Whether <paramref name="Minimum"/> itself is rejected.</param>
internal sealed record NumberRange(double Minimum, double Maximum, bool MinimumExcluded = false)
{
    /// <summary>θ, temperatures: finite and greater than 0.</summary>
    public static NumberRange Positive { get; } = new(0, double.MaxValue, MinimumExcluded: true);

    /// <summary>λ, fractions: [0, 1].</summary>
    public static NumberRange UnitInterval { get; } = new(0, 1);

    /// <summary>Throws a <see cref="UsageException"/> naming <paramref name="option"/> when <paramref name="value"/> is outside the range.</summary>
    public void Check(double value, string option)
    {
        var inside = double.IsFinite(value) && (MinimumExcluded ? value > Minimum : value >= Minimum) && value <= Maximum;
        if (!inside)
        {
            throw new UsageException(string.Create(CultureInfo.InvariantCulture, $"{option} must be a finite number {this}, not {value}."));
        }
    }

    /// <summary>The range in words, e.g. <c>greater than 0</c> or <c>in [0, 1]</c>.</summary>
    public override string ToString() => Maximum == double.MaxValue
        ? string.Create(CultureInfo.InvariantCulture, $"{(MinimumExcluded ? "greater than" : "at least")} {Minimum}")
        : string.Create(CultureInfo.InvariantCulture, $"in {(MinimumExcluded ? "(" : "[")}{Minimum}, {Maximum}]");
}
