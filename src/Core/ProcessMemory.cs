using System.Diagnostics;
using System.Runtime.InteropServices;

namespace ScalableCache.Core;

/// <summary>The resident memory of this process, measured so that one store's growth can be compared with another's.</summary>
public static partial class ProcessMemory
{
    /// <summary>
    /// The working set after full garbage collections and, on glibc, <c>malloc_trim(0)</c>. Without the trim, native memory an
    /// earlier step freed stays in the allocator, and a later allocation that reuses it does not show as growth.
    /// </summary>
    public static long ResidentBytes()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
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

    [LibraryImport("libc", EntryPoint = "malloc_trim")]
    private static partial int MallocTrim(nuint pad);
}
