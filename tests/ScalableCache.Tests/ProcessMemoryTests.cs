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
        var before = ProcessMemory.ResidentBytes();
        long during;
        using (var block = ones(bytes / sizeof(float)))
        {
            during = ProcessMemory.ResidentBytes();
        }

        var after = ProcessMemory.ResidentBytes();
        Assert.InRange(during - before, (long)(0.75 * bytes), (long)(1.5 * bytes)); // slack: the runtime may free memory of its own meanwhile
        Assert.True(during - after > 0.75 * bytes, $"resident fell by {(during - after) / 1048576.0:F0} MiB after the tensor was freed");
    }
}
