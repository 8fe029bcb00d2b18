namespace ScalableCache.Core.Data;

/// <summary>Which parts of a data set a caller needs; the locator checks only their files.</summary>
[Flags]
public enum DatasetParts
{
    /// <summary>The training files.</summary>
    Train = 1,

    /// <summary>The test files.</summary>
    Test = 2,

    /// <summary>Training and test files.</summary>
    All = Train | Test,
}

/// <summary>
/// Finds a data set's folder from what a user points at: the folder itself (e.g. <c>cifar-10-batches-bin</c>), its parent
/// (e.g. <c>shared/data/cifar10</c>) or the data root above that (e.g. <c>shared/data</c>). With no path, the
/// <see cref="EnvironmentVariable"/> environment variable is used. What is missing is reported by name.
/// </summary>
public static class DatasetLocator
{
    /// <summary>Environment variable naming the data folder when no <c>--data</c> path is given.</summary>
    public const string EnvironmentVariable = "SCACHE_DATA";

    /// <summary>How to point the tools at a local copy; ends every not-found message.</summary>
    public const string Hint =
        "Point at a local copy with --data <folder> or the " + EnvironmentVariable + " environment variable " +
        "(the data set folder itself, or a folder above it).";

    /// <summary>The CIFAR-10 binary folder (the one holding <c>test_batch.bin</c>) reached from <paramref name="path"/>.</summary>
    /// <exception cref="DirectoryNotFoundException">No path was given and <see cref="EnvironmentVariable"/> is unset, or the path does not exist.</exception>
    /// <exception cref="FileNotFoundException">The folder exists but lacks files <paramref name="parts"/> needs; the message lists them.</exception>
    public static string ResolveCifar10(string? path, DatasetParts parts = DatasetParts.All) =>
        Resolve("CIFAR-10", path, Cifar10.FolderName, "cifar10", Cifar10.RequiredFiles(parts), Cifar10.KnownFiles);

    /// <summary>The CIFAR-100 binary folder (the one holding <c>test.bin</c>) reached from <paramref name="path"/>.</summary>
    /// <exception cref="DirectoryNotFoundException">No path was given and <see cref="EnvironmentVariable"/> is unset, or the path does not exist.</exception>
    /// <exception cref="FileNotFoundException">The folder exists but lacks files <paramref name="parts"/> needs; the message lists them.</exception>
    public static string ResolveCifar100(string? path, DatasetParts parts = DatasetParts.All) =>
        Resolve("CIFAR-100", path, Cifar100.FolderName, "cifar100", Cifar100.RequiredFiles(parts), Cifar100.KnownFiles);

    /// <summary>The names in <paramref name="requiredFiles"/> that are not files in <paramref name="folder"/>.</summary>
    public static IReadOnlyList<string> MissingFiles(string folder, IReadOnlyList<string> requiredFiles)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(requiredFiles);
        return [.. requiredFiles.Where(f => !File.Exists(Path.Combine(folder, f)))];
    }

    private static string Resolve(
        string name, string? path, string folderName, string shortName, IReadOnlyList<string> required, IReadOnlyList<string> known)
    {
        var given = string.IsNullOrWhiteSpace(path) ? Environment.GetEnvironmentVariable(EnvironmentVariable) : path;
        if (string.IsNullOrWhiteSpace(given))
        {
            throw new DirectoryNotFoundException($"No {name} location was given and {EnvironmentVariable} is not set. {Hint}");
        }

        var full = Path.GetFullPath(given);
        string[] candidates = [full, Path.Combine(full, folderName), Path.Combine(full, shortName, folderName)];
        foreach (var candidate in candidates)
        {
            if (Directory.Exists(candidate) && MissingFiles(candidate, required).Count == 0)
            {
                return candidate;
            }
        }

        if (File.Exists(full))
        {
            throw new DirectoryNotFoundException(
                $"'{full}' is a file; {name} is located by its folder ({folderName} or a folder above it). {Hint}");
        }

        if (!Directory.Exists(full))
        {
            throw new DirectoryNotFoundException($"{name} folder '{full}' does not exist. {Hint}");
        }

        var partial = candidates.FirstOrDefault(c => Directory.Exists(c) && known.Any(f => File.Exists(Path.Combine(c, f))));
        if (partial is not null)
        {
            var missing = MissingFiles(partial, required);
            throw new FileNotFoundException(
                $"{name} folder '{partial}' lacks {string.Join(", ", missing)}. {Hint}", Path.Combine(partial, missing[0]));
        }

        throw new FileNotFoundException(
            $"No {name} files ({string.Join(", ", required)}) in any of: {string.Join(", ", candidates.Select(c => $"'{c}'"))}. {Hint}",
            Path.Combine(full, required[0]));
    }
}
