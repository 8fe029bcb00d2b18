using System.Diagnostics;
using System.Globalization;

namespace ScalableCache.Host.Cli;

/// <summary>
/// Progress of long work on stderr: a redrawn line when stderr is a terminal, plain lines (every 10 %) when it is a log or pipe.
/// </summary>
internal sealed class ProgressReporter(CommandOutput output) : Core.ICacheFitProgress
{
    /// <summary>A progress sink for one step of <paramref name="total"/> units.</summary>
    public IProgress<long> Step(string label, long total) => new StepProgress(output, label, total);

    IProgress<long>? Core.ICacheFitProgress.Step(string label, long total) => Step(label, total);

    /// <summary>A free-text status line.</summary>
    public void Status(string message) => output.Status(message);

    /// <summary>Times <paramref name="work"/> and reports its duration.</summary>
    public T Timed<T>(string label, Func<T> work, out TimeSpan elapsed)
    {
        ArgumentNullException.ThrowIfNull(work);
        var watch = Stopwatch.StartNew();
        output.Status(label + " …");
        var result = work();
        elapsed = watch.Elapsed;
        output.Status($"{label}: {elapsed.TotalSeconds.ToString("0.0", CultureInfo.InvariantCulture)} s");
        return result;
    }

    private sealed class StepProgress(CommandOutput output, string label, long total) : IProgress<long>
    {
        private readonly Stopwatch _watch = Stopwatch.StartNew();
        private int _lastDecile = -1;

        public void Report(long value)
        {
            var fraction = total <= 0 ? 1 : Math.Clamp(value / (double)total, 0, 1);
            var rate = value / Math.Max(_watch.Elapsed.TotalSeconds, 1e-9);
            var text = string.Create(CultureInfo.InvariantCulture, $"{label}: {value}/{total} ({fraction:P0}, {rate:0}/s)");
            if (output.Interactive)
            {
                output.Error.Profile.Out.Writer.Write("\r" + text.PadRight(70));
                if (value >= total)
                {
                    output.Error.Profile.Out.Writer.WriteLine();
                }

                return;
            }

            var decile = (int)(fraction * 10);
            if (decile != _lastDecile)
            {
                _lastDecile = decile;
                output.Error.Profile.Out.Writer.WriteLine(text);
            }
        }
    }
}

/// <summary>An <see cref="IProgress{T}"/> that reports on the calling thread, in order.</summary>
internal sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
