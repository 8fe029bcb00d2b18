using System.Diagnostics;
using System.Runtime.InteropServices;

namespace ScalableCache.Core;

/// <summary>The resident memory of this process, measured so that one store's growth can be compared with another's.</summary>
public static partial class ProcessMemory
{
    /// <summary>
    /// The working set after full garbage collections, the last of them aggressive (<see cref="GCCollectionMode.Aggressive"/>),
    /// and, on glibc, <c>malloc_trim(0)</c>. Without the trim, native memory an earlier step freed stays in the allocator, and a
    /// later allocation that reuses it does not show as growth. Without the aggressive collection, the collector keeps the
    /// regions it emptied committed for reuse: after a few hundred thousand short-lived objects (a tensor per query) that was
    /// 30–60 MiB of a 2 MiB heap, and it stayed or went depending on the collector's own schedule.
    /// </summary>
    public static long ResidentBytes()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        if (OperatingSystem.IsLinux())
        {
            try
            {
                _ = MallocTrim(0);
            }
            catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
            {
                // Not glibc: the working set is read as it is.
            }
        }

        using var process = Process.GetCurrentProcess();
        return process.WorkingSet64;
    }

    /// <summary>
    /// Hands memory the native allocator holds but no longer uses back to the system (glibc <c>malloc_trim(0)</c>); a no-op elsewhere.
    /// Between stages this keeps one stage's freed temporaries from counting as the next one's resident memory.
    /// </summary>
    public static void Trim()
    {
        if (OperatingSystem.IsLinux())
        {
            try
            {
                _ = MallocTrim(0);
            }
            catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
            {
            }
        }
    }

    /// <summary>
    /// The largest resident set of this process since it started or since the last <see cref="ResetPeak"/> (Linux <c>VmHWM</c>);
    /// elsewhere the .NET peak working set.
    /// </summary>
    public static long PeakResidentBytes()
    {
        if (OperatingSystem.IsLinux())
        {
            try
            {
                foreach (var line in File.ReadLines("/proc/self/status"))
                {
                    // "VmHWM:   123456 kB"
                    if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                    {
                        var digits = line.AsSpan(6).Trim().TrimEnd("kB").Trim();
                        return long.Parse(digits, System.Globalization.CultureInfo.InvariantCulture) * 1024;
                    }
                }
            }
            catch (IOException)
            {
            }
        }

        using var process = Process.GetCurrentProcess();
        return process.PeakWorkingSet64;
    }

    /// <summary>
    /// Starts a new peak for <see cref="PeakResidentBytes"/> at the current resident set (Linux: writes 5 to
    /// <c>/proc/self/clear_refs</c>); returns whether it could. Elsewhere the peak stays the process's since start.
    /// </summary>
    public static bool ResetPeak()
    {
        if (!OperatingSystem.IsLinux())
        {
            return false;
        }

        try
        {
            File.WriteAllText("/proc/self/clear_refs", "5");
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }

    /// <summary>
    /// Memory this process could still allocate without swapping or being stopped, in bytes: on Linux the kernel's
    /// <c>MemAvailable</c> (<c>/proc/meminfo</c>), lowered to the cgroup's remaining limit (<c>memory.max − memory.current</c>)
    /// when the process runs under one; elsewhere the .NET runtime's view of the memory it may use. <c>null</c> when neither
    /// can be read.
    /// </summary>
    public static long? AvailableBytes()
    {
        if (!OperatingSystem.IsLinux())
        {
            var total = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
            return total > 0 ? total : null;
        }

        long? available = null;
        try
        {
            foreach (var line in File.ReadLines("/proc/meminfo"))
            {
                if (line.StartsWith("MemAvailable:", StringComparison.Ordinal)
                    && long.TryParse(line["MemAvailable:".Length..].Trim().Split(' ')[0], out var kib))
                {
                    available = kib * 1024;
                    break;
                }
            }

            if (File.Exists("/sys/fs/cgroup/memory.max")
                && long.TryParse(File.ReadAllText("/sys/fs/cgroup/memory.max").Trim(), out var limit)
                && long.TryParse(File.ReadAllText("/sys/fs/cgroup/memory.current").Trim(), out var current))
            {
                var left = Math.Max(0, limit - current);
                available = available is { } a ? Math.Min(a, left) : left;
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Unreadable: whatever was read so far.
        }

        return available;
    }

    /// <summary>CPU time of this process so far, all threads, user + system.</summary>
    public static TimeSpan CpuTime()
    {
        using var process = Process.GetCurrentProcess();
        return process.TotalProcessorTime;
    }

    /// <summary>The largest block <see cref="ReuseNativeAllocations"/> keeps in the allocator for reuse: 32 MiB (glibc's own ceiling for its adaptive threshold).</summary>
    public const int DefaultReuseBelowBytes = 32 << 20;

    /// <summary>
    /// Lets the native allocator (glibc) reuse freed blocks below <paramref name="reuseBelowBytes"/> instead of handing each back to the
    /// system (<c>mallopt(M_MMAP_THRESHOLD)</c>) and keep up to <paramref name="keepFreeBytes"/> of free memory at the top of its heaps
    /// (<c>mallopt(M_TRIM_THRESHOLD)</c>). A forward pass allocates and frees each layer's activations (megabytes) once per batch; with
    /// glibc's defaults many of them are mapped fresh every time and the kernel zeroes their pages again (about a sixth of the
    /// CPU time of a CIFAR ResNet-20 test pass went to those page faults). Blocks at or above the threshold (a store's key blocks) are still mapped
    /// and returned when freed, and <see cref="Trim"/> still hands free memory back. Process-wide: for applications to call once
    /// at startup (the <c>scache</c> host does, <c>Torch:ReuseNativeMemory</c>). Returns whether the allocator took both settings
    /// (false off glibc).
    /// </summary>
    public static bool ReuseNativeAllocations(int reuseBelowBytes = DefaultReuseBelowBytes, int keepFreeBytes = 64 << 20)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(reuseBelowBytes);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(keepFreeBytes);
        if (!OperatingSystem.IsLinux())
        {
            return false;
        }

        try
        {
            return Mallopt(MmapThreshold, reuseBelowBytes) == 1 & Mallopt(TrimThreshold, keepFreeBytes) == 1;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return false; // not glibc
        }
    }

    private const int TrimThreshold = -1; // M_TRIM_THRESHOLD
    private const int MmapThreshold = -3; // M_MMAP_THRESHOLD

    [LibraryImport("libc", EntryPoint = "malloc_trim")]
    private static partial int MallocTrim(nuint pad);

    [LibraryImport("libc", EntryPoint = "mallopt")]
    private static partial int Mallopt(int parameter, int value);
}
