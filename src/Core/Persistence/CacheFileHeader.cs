using System.Globalization;

namespace ScalableCache.Core.Persistence;

/// <summary>
/// What a cache file says about its memory: how the keys were made (model, layers, flips, normalisation), the mixing
/// parameters chosen for it, and the memory's shape. Pass one to <see cref="CacheFile.Save"/> (the shape fields may be left
/// at their defaults: they are taken from the memory); <see cref="CacheFile.Load(string, CacheProviderSelector, CancellationToken)"/>
/// and <see cref="CacheFile.ReadHeader"/> return the stored one.
/// </summary>
public sealed record CacheFileHeader
{
    /// <summary>Format version the file was written in (<see cref="CacheFile.FormatVersion"/> for files this build writes).</summary>
    public int FormatVersion { get; init; } = CacheFile.FormatVersion;

    /// <summary>Oldest reader format version that can read the file.</summary>
    public int MinimumReaderVersion { get; init; } = CacheFile.FormatVersion;

    /// <summary>Provider of the stored memory (e.g. <c>Exact</c>); the same provider must be registered to load it.</summary>
    public string Provider { get; init; } = "";

    /// <summary>Key dimension d.</summary>
    public int Dimension { get; init; }

    /// <summary>Number of keys.</summary>
    public long Count { get; init; }

    /// <summary>Number of classes C.</summary>
    public int ClassCount { get; init; }

    /// <summary>The network the keys come from.</summary>
    public CacheModelId Model { get; init; } = new("");

    /// <summary>Layers whose (unit-normalised) outputs were concatenated into the keys, in order.</summary>
    public IReadOnlyList<string> Layers { get; init; } = [];

    /// <summary>
    /// How the keys were made, as data (layers, key normalisation, input normalisation and size), so a loaded file rebuilds its own
    /// query path; <see langword="null"/> in files written before the recipe was recorded. When set, its layers are the header's.
    /// </summary>
    public KeyRecipe? Recipe { get; init; }

    /// <summary>Whether horizontally flipped training images were added to the cache (the paper's C-10+ cache).</summary>
    public bool Flip { get; init; }

    /// <summary>How images and keys were normalised (input mean/std, per-layer and final L2 normalisation), for people and checks.</summary>
    public string Normalization { get; init; } = "";

    /// <summary>Inverse temperature θ chosen for this cache, if one was.</summary>
    public double? Theta { get; init; }

    /// <summary>Cache weight λ in <c>[0, 1]</c> chosen for this cache, if one was.</summary>
    public double? Lambda { get; init; }

    /// <summary>When the file was written (UTC). <see cref="CacheFile.Save"/> uses the current time when left at its default.</summary>
    public DateTime CreatedUtc { get; init; }

    /// <summary>Free-form facts (e.g. training subset, seed, writer version); names and values are text.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; init; } = new Dictionary<string, string>();

    /// <summary>Every problem with the caller-supplied fields, as messages; empty when they are valid.</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (Model is null || string.IsNullOrWhiteSpace(Model.Name))
        {
            errors.Add("The model name is empty.");
        }
        else if (Model.CheckpointSha256 is { } sha && (sha.Length != 64 || !sha.All(char.IsAsciiHexDigit)))
        {
            errors.Add($"The checkpoint SHA-256 '{sha}' is not 64 hexadecimal digits.");
        }

        if (Model?.CheckpointFile is { } file
            && (string.IsNullOrWhiteSpace(file) || file is "." or ".." || file.IndexOfAny(['/', '\\']) >= 0 || file.Any(char.IsControl)))
        {
            errors.Add($"The checkpoint file name '{file}' is not a plain file name (no folder).");
        }

        if (Layers is null || Layers.Any(string.IsNullOrWhiteSpace))
        {
            errors.Add("A layer name is empty.");
        }
        else if (Recipe is not null && !Recipe.Layers.SequenceEqual(Layers, StringComparer.Ordinal))
        {
            errors.Add($"The key recipe's layers [{string.Join(", ", Recipe.Layers)}] differ from the header's [{string.Join(", ", Layers)}].");
        }

        if (Theta is { } theta && !(theta > 0 && double.IsFinite(theta)))
        {
            errors.Add($"θ must be finite and positive (got {theta.ToString(CultureInfo.InvariantCulture)}).");
        }

        if (Lambda is { } lambda && !(lambda >= 0 && lambda <= 1))
        {
            errors.Add($"λ must lie in [0, 1] (got {lambda.ToString(CultureInfo.InvariantCulture)}).");
        }

        if (Normalization is null)
        {
            errors.Add("The normalisation description is null.");
        }

        if (Metadata is null)
        {
            errors.Add("The metadata is null.");
        }

        if (Dimension < 0 || Count < 0 || ClassCount < 0)
        {
            errors.Add("Dimension, count and class count cannot be negative.");
        }

        if (CreatedUtc != default && CreatedUtc.Kind == DateTimeKind.Local)
        {
            errors.Add("The creation time must be UTC.");
        }

        return errors;
    }
}

/// <summary>Identifies the network whose features are the keys.</summary>
/// <param name="Name">Registry name, e.g. <c>resnet20</c>.</param>
/// <param name="CheckpointSha256">SHA-256 of the checkpoint file (64 lower-case hex digits), when known.</param>
/// <param name="CheckpointFile">The checkpoint's file name (no folder), when known.</param>
public sealed record CacheModelId(string Name, string? CheckpointSha256 = null, string? CheckpointFile = null);

/// <summary>A loaded cache file: its header and the restored memory (owned by the caller, who disposes it).</summary>
/// <param name="Header">The stored header.</param>
/// <param name="Memory">The restored memory.</param>
public sealed record LoadedCacheFile(CacheFileHeader Header, ICacheMemory Memory);
