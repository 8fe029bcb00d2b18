using ScalableCache.Host.Cli;

namespace ScalableCache.Host.Reports;

/// <summary>
/// Checks, before a command does any work, that its outputs can be written where they were asked for: the folder exists or can
/// be created (no path component is a file), and a file can be created in it. Every failure is an <see cref="OutputException"/>
/// (exit code <c>OutputFailed</c>) naming the option and the path, so a long run does not end by failing to save.
/// </summary>
internal static class OutputLocation
{
    /// <summary>Checks that <paramref name="folder"/> exists or can be created, and that files can be written in it.</summary>
    /// <exception cref="OutputException">It cannot.</exception>
    public static void CheckFolder(string folder, string option)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        var full = Path.GetFullPath(folder);
        var existing = full;
        while (!Directory.Exists(existing))
        {
            if (Path.Exists(existing))
            {
                throw new OutputException(existing == full
                    ? $"{option}: '{full}' is a file, not a folder."
                    : $"{option}: '{existing}' is a file, so the folder '{full}' cannot be created.");
            }

            existing = Path.GetDirectoryName(existing)!;
        }

        // The folder, or the one the missing folders would be created in, must take a new file.
        var probe = Path.Combine(existing, $".scache-write-test-{Guid.NewGuid():N}");
        try
        {
            using var stream = new FileStream(probe, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.DeleteOnClose);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            var reason = ex switch
            {
                UnauthorizedAccessException => "permission denied",
                FileNotFoundException or DirectoryNotFoundException => "the file system there takes no new files",
                _ => ex.Message.TrimEnd('.'),
            };
            throw new OutputException($"{option}: '{full}' cannot be written: no file can be created in '{existing}' ({reason}).", ex);
        }
    }

    /// <summary>Checks that the file <paramref name="file"/> can be written: it is not a folder, and its folder passes <see cref="CheckFolder"/>.</summary>
    /// <exception cref="OutputException">It cannot.</exception>
    public static void CheckFile(string file, string option)
    {
        ArgumentException.ThrowIfNullOrEmpty(file);
        var full = Path.GetFullPath(file);
        if (Directory.Exists(full))
        {
            throw new OutputException($"{option}: '{full}' is a folder, not a file.");
        }

        CheckFolder(Path.GetDirectoryName(full)!, option);
    }
}
