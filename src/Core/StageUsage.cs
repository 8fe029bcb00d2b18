using System.Diagnostics;

namespace ScalableCache.Core;

/// <summary>What one stage of a job cost: wall time, this process's CPU time (user + system) and its peak resident memory.</summary>
/// <param name="Seconds">Wall-clock seconds.</param>
/// <param name="CpuSeconds">CPU seconds of the whole process (all threads, user + system) during the stage.</param>
/// <param name="PeakResidentBytes">
/// Largest resident set of the process during the stage (Linux: <c>VmHWM</c>, reset when the stage starts); where the peak cannot
/// be reset, the process's peak since it started. Freed native memory is handed back (<see cref="ProcessMemory.Trim"/>) before the reset.
/// </param>
public sealed record StageUsage(double Seconds, double CpuSeconds, long PeakResidentBytes);

/// <summary>
/// Measures stages one after another (<see cref="Measure{T}(string, Func{T})"/>) and keeps each one's <see cref="StageUsage"/> by
/// name. Not thread-safe: one stage at a time per process, since the peak resident set is a process-wide counter.
/// </summary>
public sealed class StageMeter(Action<string, StageUsage>? finished = null)
{
    private readonly Dictionary<string, StageUsage> _stages = new(StringComparer.Ordinal);

    /// <summary>A line for people about one finished stage.</summary>
    public static string Describe(string name, StageUsage usage)
    {
        ArgumentNullException.ThrowIfNull(usage);
        return string.Create(System.Globalization.CultureInfo.InvariantCulture,
            $"{name}: {usage.Seconds:0.0} s wall, {usage.CpuSeconds:0.0} s CPU, peak resident {usage.PeakResidentBytes / 1e9:0.00} GB");
    }

    /// <summary>The stages measured so far, in order.</summary>
    public IReadOnlyDictionary<string, StageUsage> Stages => _stages;

    /// <summary>Runs <paramref name="work"/> as stage <paramref name="name"/> and records what it cost (a repeated name adds up).</summary>
    public T Measure<T>(string name, Func<T> work)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(work);
        var start = Start();
        var result = work();
        Record(name, start);
        return result;
    }

    /// <summary>Runs <paramref name="work"/> as stage <paramref name="name"/>.</summary>
    public void Measure(string name, Action work)
    {
        ArgumentNullException.ThrowIfNull(work);
        Measure(name, () =>
        {
            work();
            return 0;
        });
    }

    /// <summary>Adds the stages of <paramref name="other"/> (e.g. a fit's, measured by the library) under their names.</summary>
    public void Add(IReadOnlyDictionary<string, StageUsage> other)
    {
        ArgumentNullException.ThrowIfNull(other);
        foreach (var (name, usage) in other)
        {
            _stages[name] = _stages.TryGetValue(name, out var before) ? Sum(before, usage) : usage;
        }
    }

    private static (long Timestamp, TimeSpan Cpu) Start()
    {
        ProcessMemory.Trim();
        ProcessMemory.ResetPeak();
        return (Stopwatch.GetTimestamp(), ProcessMemory.CpuTime());
    }

    private void Record(string name, (long Timestamp, TimeSpan Cpu) start)
    {
        var usage = new StageUsage(
            Stopwatch.GetElapsedTime(start.Timestamp).TotalSeconds, (ProcessMemory.CpuTime() - start.Cpu).TotalSeconds, ProcessMemory.PeakResidentBytes());
        Add(new Dictionary<string, StageUsage> { [name] = usage });
        finished?.Invoke(name, usage);
    }

    private static StageUsage Sum(StageUsage a, StageUsage b) =>
        new(a.Seconds + b.Seconds, a.CpuSeconds + b.CpuSeconds, Math.Max(a.PeakResidentBytes, b.PeakResidentBytes));
}
