using ScalableCache.Core;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>
/// Per-stage accounting: each stage's peak resident memory is its own (the peak is reset when a stage starts). The peak is the
/// process's, so this runs alone, with the other resident-memory tests: a test freeing memory beside it moved the resident set
/// under it once (a large stage 9 MB short of its 400 MB).
/// </summary>
[Collection(nameof(ProcessMemoryTests))]
public sealed class StageMeterTests
{
    [Fact]
    public void EachStageReportsItsOwnPeakResidentMemory()
    {
        Assert.SkipUnless(OperatingSystem.IsLinux() && ProcessMemory.ResetPeak(), "needs Linux's resettable VmHWM");
        const long size = 400L << 20;
        var meter = new StageMeter();
        var before = ProcessMemory.ResidentBytes();
        meter.Measure("large", () =>
        {
            using var t = ones([size / sizeof(float)], ScalarType.Float32); // touches every page
            return t.sum().item<float>();
        });
        _ = ProcessMemory.ResidentBytes(); // the 400 MB go back to the system
        meter.Measure("small", () => { });
        meter.Measure("small", () => { }); // a repeated stage adds up

        var large = meter.Stages["large"];
        var small = meter.Stages["small"];
        Assert.True(large.PeakResidentBytes >= before + (size * 9 / 10), $"large stage peak {large.PeakResidentBytes:N0} B, resident before {before:N0} B");
        Assert.True(small.PeakResidentBytes < large.PeakResidentBytes - (size / 2), $"small stage peak {small.PeakResidentBytes:N0} B, large {large.PeakResidentBytes:N0} B");
        Assert.True(large.CpuSeconds >= 0 && large.Seconds >= 0 && small.Seconds >= 0);
        Assert.Equal(["large", "small"], meter.Stages.Keys);

        var total = new StageMeter();
        total.Add(meter.Stages);
        total.Add(meter.Stages);
        Assert.Equal(2 * large.Seconds, total.Stages["large"].Seconds, 9);
        Assert.Equal(large.PeakResidentBytes, total.Stages["large"].PeakResidentBytes);
    }
}
