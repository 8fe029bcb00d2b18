using ScalableCache.Core;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>Runs alone: other tests allocating at the same time would move the resident set under it.</summary>
[CollectionDefinition(nameof(ProcessMemoryTests), DisableParallelization = true)]
public sealed class ProcessMemoryCollection;

[Collection(nameof(ProcessMemoryTests))]
public sealed class ProcessMemoryTests
{
    [Fact]
    public void ResidentBytesSeesANativeAllocationComeAndGo()
    {
        const long bytes = 256L * 1024 * 1024;
        const double mib = 1 << 20;

        // Even alone, one attempt can be disturbed: the runtime returns memory freed by earlier tests to the system a little at
        // a time, so a reading can drop by more than 100 MiB while the tensor exists (seen once: +99 MiB for 256 MiB). Such
        // noise does not hit every attempt; a ResidentBytes that missed native allocations would fail every one.
        const int attempts = 5;
        var seen = new List<string>();
        for (var attempt = 0; attempt < attempts; attempt++)
        {
            var before = ProcessMemory.ResidentBytes();
            long during;
            using (var block = ones(bytes / sizeof(float))) // ones writes every element, so every page is resident
            {
                during = ProcessMemory.ResidentBytes();
            }

            var after = ProcessMemory.ResidentBytes();
            var grew = during - before;
            var fell = during - after;
            if (grew >= 0.75 * bytes && grew <= 1.5 * bytes && fell > 0.75 * bytes)
            {
                return;
            }

            seen.Add($"grew {grew / mib:F0} MiB, fell {fell / mib:F0} MiB");
        }

        Assert.Fail($"A {bytes / mib:F0} MiB tensor was not seen coming and going (growth 75–150 % of it, fall over 75 %) in {attempts} attempts: {string.Join("; ", seen)}");
    }

    [Fact]
    public void GlibcTakesTheAllocatorSettingsAndBadOnesAreRefused()
    {
        // The speed-up itself (fewer page faults per forward pass) is measured by `scache-bench extract` against
        // --default-allocator; here: the settings reach glibc (mallopt accepts both) and nonsense is refused before it.
        Assert.SkipUnless(OperatingSystem.IsLinux(), "mallopt is glibc's");
        Assert.Throws<ArgumentOutOfRangeException>(() => ProcessMemory.ReuseNativeAllocations(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => ProcessMemory.ReuseNativeAllocations(keepFreeBytes: -1));
        Assert.True(ProcessMemory.ReuseNativeAllocations(), "glibc takes M_MMAP_THRESHOLD and M_TRIM_THRESHOLD");
    }
}
