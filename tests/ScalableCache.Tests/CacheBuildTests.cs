using ScalableCache.Core;
using ScalableCache.Core.Evaluation;
using ScalableCache.Exact;
using Xunit;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>
/// Building a memory chunk by chunk (<see cref="CacheEvaluation.Build(ICacheMemoryFactory, long, int, int, Func{long, long, ValueTuple{Tensor, Tensor}}, int)"/>)
/// holds one chunk outside the memory, not every chunk read: the build disposes each chunk once added, also a chunk detached from
/// every dispose scope (as a <see cref="FeatureTable"/>'s keys are), which would otherwise stay resident until the garbage collector
/// finalises it. Alone in its collection: the resident set it measures is the whole process's.
/// </summary>
[Collection(nameof(CacheBuildTests))]
public sealed class CacheBuildTests
{
    [Fact]
    public void EveryChunkReadIsDisposedOnceAddedSoTheBuildDoesNotHoldTheStoreTwice()
    {
        Assert.SkipUnless(OperatingSystem.IsLinux() && ProcessMemory.ResetPeak(), "needs Linux's resettable VmHWM");
        const int rows = 4096, dimension = 4096, chunks = 8; // 64 MiB a chunk, 512 MiB stored
        const long chunkBytes = (long)rows * dimension * sizeof(float);
        var read = new List<Tensor>();
        ICacheMemory Build(int count) => CacheEvaluation.Build(
            new ExactCacheMemoryFactory(new ExactCacheOptions()), (long)rows * count, dimension, 10,
            (start, n) =>
            {
                var keys = rand(n, dimension).DetachFromDisposeScope(); // in no scope: only Build can free it in time
                var labels = (arange(start, start + n) % 10).DetachFromDisposeScope();
                read.Add(keys);
                read.Add(labels);
                return (keys, labels);
            },
            rows);

        Build(1).Dispose(); // the kernels' code and the thread pools are resident before the measured build
        var meter = new StageMeter();
        var before = ProcessMemory.ResidentBytes();
        using var memory = meter.Measure("build", () => Build(chunks));

        Assert.Equal((long)rows * chunks, memory.Count);
        Assert.All(read, t => Assert.True(t.IsInvalid, "a chunk read for the build was left to the finaliser"));
        var grown = meter.Stages["build"].PeakResidentBytes - before;
        // Kept until finalised, the chunks read would be as much again as the store (measured: store + 12 chunks without the
        // disposal, store + 4 with it: the chunk being read, its copy checks and the allocator's slack).
        Assert.True(grown < 2 * chunks * chunkBytes,
            $"the build grew the resident set by {grown:N0} B; the store is {chunks * chunkBytes:N0} B, and every chunk read kept would be as much again");
    }
}

/// <summary>Runs <see cref="CacheBuildTests"/> with no other test beside it.</summary>
[CollectionDefinition(nameof(CacheBuildTests), DisableParallelization = true)]
public sealed class CacheBuildTestsCollection;
