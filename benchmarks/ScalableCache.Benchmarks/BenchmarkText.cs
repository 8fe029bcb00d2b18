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

    /// <summary>Seconds <paramref name="action"/> takes.</summary>
    public static double Seconds(Action action)
    {
        ArgumentNullException.ThrowIfNull(action);
        var watch = System.Diagnostics.Stopwatch.StartNew();
        action();
        return watch.Elapsed.TotalSeconds;
    }

    /// <summary>The <paramref name="q"/>-quantile (0.5 = median) of <paramref name="values"/>, nearest rank.</summary>
    public static double Quantile(IReadOnlyCollection<double> values, double q)
    {
        ArgumentNullException.ThrowIfNull(values);
        var sorted = values.Order().ToArray();
        return sorted[Math.Clamp((int)Math.Ceiling(q * sorted.Length) - 1, 0, sorted.Length - 1)];
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

    /// <summary>The <c>shared/</c> folder beside the repository that holds this build, or null.</summary>
    public static string? SharedFolder()
    {
        var root = RepositoryRoot();
        var shared = root is null ? null : Path.Combine(Path.GetDirectoryName(root) ?? root, "shared");
        return shared is not null && Directory.Exists(shared) ? shared : null;
    }

    /// <summary>Bytes as mebibytes, one decimal.</summary>
    public static string Mib(long bytes) => string.Create(CultureInfo.InvariantCulture, $"{bytes / 1048576.0:F1} MiB");

    /// <summary>Resets Linux's peak-resident counter (VmHWM) and returns the current resident bytes; null where unsupported.</summary>
    public static long? ResetPeakResident()
    {
        try
        {
            File.WriteAllText("/proc/self/clear_refs", "5");
            return StatusBytes("VmRSS:");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException)
        {
            return null;
        }
    }

    /// <summary>Peak resident bytes since the last reset (VmHWM); null where unsupported.</summary>
    public static long? PeakResident() => StatusBytes("VmHWM:");

    /// <summary>Resident bytes now (VmRSS); null where unsupported.</summary>
    public static long? Resident() => StatusBytes("VmRSS:");

    /// <summary>A field of <c>/proc/self/status</c> given in kB, in bytes; null where unsupported.</summary>
    public static long? StatusBytes(string field)
    {
        try
        {
            var line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith(field, StringComparison.Ordinal));
            var kb = line?[field.Length..].Trim().Split(' ')[0];
            return kb is null ? null : long.Parse(kb, CultureInfo.InvariantCulture) * 1024;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
        {
            return null;
        }
    }

    /// <summary>The median of <paramref name="values"/> (the mean of the middle two for an even count).</summary>
    public static double Median(IReadOnlyCollection<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[(sorted.Length / 2) - 1] + sorted[sorted.Length / 2]) / 2;
    }
}
