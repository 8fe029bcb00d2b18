using System.Diagnostics;
using System.Text.Json;

namespace ScalableCache.Benchmarks;

/// <summary>
/// Runs a peer implementation in Python (a script under <c>anchors/</c> next to the benchmark) as the anchor of a ratio,
/// when an interpreter with the script's module is present; benchmarks print their own figures either way. Never used by tests.
/// </summary>
internal static class PythonAnchor
{
    /// <summary>The interpreter: <c>SCACHE_ANCHOR_PYTHON</c>, else Debian's <c>/usr/bin/python3</c> (where <c>python3-hnswlib</c>, <c>python3-torch</c> install), else <c>python3</c>.</summary>
    public static string Interpreter =>
        Environment.GetEnvironmentVariable("SCACHE_ANCHOR_PYTHON") is { Length: > 0 } configured ? configured
        : File.Exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";

    /// <summary>
    /// Whether <paramref name="module"/> imports in <see cref="Interpreter"/>; when not, <paramref name="why"/> says what to install.
    /// </summary>
    public static bool Available(string module, out string why)
    {
        var (code, _, error) = Execute(["-c", $"import {module}"], TimeSpan.FromSeconds(60));
        why = code == 0 ? string.Empty : $"{Interpreter} cannot import {module} ({error.Trim().Split('\n').LastOrDefault()})";
        return code == 0;
    }

    /// <summary>Runs <c>anchors/<paramref name="script"/></c> with <paramref name="arguments"/>; its last stdout line is one JSON object.</summary>
    public static JsonElement Run(string script, IEnumerable<string> arguments, TimeSpan timeout)
    {
        var path = Path.Combine(AppContext.BaseDirectory, "anchors", script);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"The anchor script is missing from the build output: {path}", path);
        }

        var (code, output, error) = Execute([path, .. arguments], timeout);
        if (code != 0)
        {
            throw new InvalidOperationException($"{script} exited with {code}: {error.Trim()}");
        }

        var last = output.Trim().Split('\n').Last();
        return JsonDocument.Parse(last).RootElement.Clone();
    }

    private static (int Code, string Output, string Error) Execute(IEnumerable<string> arguments, TimeSpan timeout)
    {
        var info = new ProcessStartInfo(Interpreter) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var argument in arguments)
        {
            info.ArgumentList.Add(argument);
        }

        try
        {
            using var process = Process.Start(info) ?? throw new InvalidOperationException($"could not start {Interpreter}");
            var output = process.StandardOutput.ReadToEndAsync();
            var error = process.StandardError.ReadToEndAsync();
            if (!process.WaitForExit(timeout))
            {
                process.Kill(entireProcessTree: true);
                return (-1, string.Empty, $"timed out after {timeout.TotalSeconds:F0} s");
            }

            return (process.ExitCode, output.Result, error.Result);
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            return (-1, string.Empty, e.Message);
        }
    }
}
