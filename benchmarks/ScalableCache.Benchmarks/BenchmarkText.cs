using System.Globalization;

namespace ScalableCache.Benchmarks;

/// <summary>Argument lookup and number formatting shared by the benchmarks.</summary>
internal static class BenchmarkText
{
    /// <summary>The value after <paramref name="name"/> in <paramref name="args"/>, or null when the flag or its value is missing.</summary>
    public static string? ArgValue(string[] args, string name)
    {
        var i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }

    /// <summary>The repository root (the folder with ScalableCache.sln above the binaries), or null when not run from a checkout.</summary>
    public static string? RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "ScalableCache.sln")))
            {
                return dir.FullName;
            }
        }

        return null;
    }

    /// <summary>Bytes as mebibytes, one decimal.</summary>
    public static string Mib(long bytes) => string.Create(CultureInfo.InvariantCulture, $"{bytes / 1048576.0:F1} MiB");
}
