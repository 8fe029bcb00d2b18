using System.Globalization;
using ScalableCache.Host.Cli;

namespace ScalableCache.Host.Reports;

/// <summary>
/// An output folder for one command's report: Markdown, JSON result and PNG plots. Files are written atomically. The folder is
/// checked when the command starts and created with its first file, so a command that fails or is stopped before it writes
/// anything leaves no empty folder behind.
/// </summary>
internal sealed class ReportFolder
{
    private bool _created;

    private ReportFolder(string path) => Path = path;

    /// <summary>The folder.</summary>
    public string Path { get; }

    /// <summary>
    /// Uses <paramref name="requested"/> (<c>--out</c>) or <c>runs/&lt;command&gt;-&lt;UTC timestamp&gt;</c>, after checking that it
    /// can be created and written (<see cref="OutputLocation.CheckFolder"/>); it is created when the first file is written.
    /// </summary>
    /// <exception cref="OutputException">The folder cannot be created or written.</exception>
    public static ReportFolder Create(string? requested, string command)
    {
        var path = System.IO.Path.GetFullPath(
            requested ?? System.IO.Path.Combine("runs", $"{command}-{DateTime.UtcNow.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture)}"));
        OutputLocation.CheckFolder(path, "--out");
        return new ReportFolder(path);
    }

    /// <summary>Full path of a file in the folder, creating the folder if this is its first file.</summary>
    /// <exception cref="OutputException">The folder cannot be created.</exception>
    public string File(string name)
    {
        if (!_created)
        {
            try
            {
                Directory.CreateDirectory(Path);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                throw new OutputException($"Could not create the report folder '{Path}': {ex.Message}", ex);
            }

            _created = true;
        }

        return System.IO.Path.Combine(Path, name);
    }

    /// <summary>Writes text through a temporary file and a rename, so a failure leaves any previous file intact.</summary>
    public string WriteText(string name, string content)
    {
        var target = File(name);
        var temp = target + ".tmp";
        try
        {
            System.IO.File.WriteAllText(temp, content);
            System.IO.File.Move(temp, target, overwrite: true);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new OutputException($"Could not write '{target}': {ex.Message}. Any previous file there is unchanged.", ex);
        }

        return target;
    }

    /// <summary>Writes the result object as JSON (same shape as <c>--json</c> prints).</summary>
    public string WriteJson(string name, object result) => WriteText(name, CommandOutput.Serialize(result) + Environment.NewLine);
}
