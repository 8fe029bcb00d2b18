using System.Globalization;
using ScalableCache.Host.Cli;

namespace ScalableCache.Host.Reports;

/// <summary>An output folder for one command's report: Markdown, JSON result and PNG plots. Files are written atomically.</summary>
internal sealed class ReportFolder
{
    private ReportFolder(string path) => Path = path;

    /// <summary>The folder.</summary>
    public string Path { get; }

    /// <summary>Uses <paramref name="requested"/> or <c>runs/&lt;command&gt;-&lt;UTC timestamp&gt;</c>; creates it.</summary>
    public static ReportFolder Create(string? requested, string command)
    {
        var path = requested ?? System.IO.Path.Combine("runs", $"{command}-{DateTime.UtcNow.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture)}");
        Directory.CreateDirectory(path);
        return new ReportFolder(System.IO.Path.GetFullPath(path));
    }

    /// <summary>Full path of a file in the folder.</summary>
    public string File(string name) => System.IO.Path.Combine(Path, name);

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
