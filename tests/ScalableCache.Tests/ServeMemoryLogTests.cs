using ScalableCache.Core.Persistence;
using Xunit;

namespace ScalableCache.Tests;

/// <summary>The append-only memory log on its own: round trip, offset chain, torn tails, damage, identity, rotation.</summary>
public sealed class ServeMemoryLogTests : IDisposable
{
    private const int D = 5;
    private const int C = 4;
    private readonly PersistenceTempFolder _folder = new();

    private string LogFile => _folder.File("memory.log");

    public void Dispose() => _folder.Dispose();

    [Fact]
    public void AppendedRecordsComeBackInOrderAfterReopening()
    {
        var written = new List<MemoryLogEntry>();
        using (var log = MemoryLog.Open(LogFile, D, C))
        {
            Assert.Null(log.NextOffset);
            written.AddRange([Entry(100, 3, seed: 1), Entry(103, 1, seed: 2)]);
            log.Append(written);
            written.Add(Entry(104, 7, seed: 3));
            log.Append([written[^1]]);
            Assert.Equal(111, log.NextOffset);
        }

        var replayed = new List<MemoryLogEntry>();
        using (var reopened = MemoryLog.Open(LogFile, D, C, replayed.Add))
        {
            Assert.Equal(new MemoryLogRecovery(1, 3, 11, 0, null), reopened.Recovery);
            Assert.Equal(111, reopened.NextOffset);
        }

        AssertSame(written, replayed);
    }

    [Fact]
    public void AnEntryThatDoesNotContinueTheLogOrIsMalformedIsRefusedAndNothingIsWritten()
    {
        using var log = MemoryLog.Open(LogFile, D, C);
        log.Append([Entry(0, 2, seed: 1)]);
        var bytes = log.Bytes;
        Assert.Throws<ArgumentException>(() => log.Append([Entry(3, 1, seed: 2)])); // a gap
        Assert.Throws<ArgumentException>(() => log.Append([Entry(2, 1, seed: 2), Entry(2, 1, seed: 3)])); // a repeat
        Assert.Throws<ArgumentException>(() => log.Append([new MemoryLogEntry(2, [C], new float[D])])); // label out of range
        Assert.Throws<ArgumentException>(() => log.Append([new MemoryLogEntry(2, [0], new float[D - 1])])); // key width
        Assert.Throws<ArgumentException>(() => log.Append([new MemoryLogEntry(2, [0], [1, 0, 0, 0, float.NaN])]));
        Assert.Equal(bytes, log.Bytes);
        Assert.Equal(bytes, new FileInfo(MemoryLog.SegmentPath(log.Path, 1)).Length);
    }

    [Theory]
    [InlineData(1, 2)] // the last checksum byte is missing
    [InlineData(40, 2)] // inside the last record's keys
    [InlineData(200, 1)] // inside the record before it: both are gone
    public void ATornTailIsDroppedAndAppendingContinuesAfterTheLastSoundRecord(int cut, int sound)
    {
        // Records of 2, 3 and 4 rows take 4 + (12 + 4n + 4nD) + 32 bytes: 96, 120 and 144, after the 48-byte header.
        MemoryLogEntry[] entries = [Entry(0, 2, seed: 1), Entry(2, 3, seed: 2), Entry(5, 4, seed: 3)];
        long[] ends = [MemoryLog.HeaderBytes + 96, MemoryLog.HeaderBytes + 96 + 120, MemoryLog.HeaderBytes + 96 + 120 + 144];
        using (var log = MemoryLog.Open(LogFile, D, C))
        {
            log.Append(entries[..2]);
            log.Append(entries[2..]);
        }

        var segment = MemoryLog.SegmentPath(LogFile, 1);
        Assert.Equal(ends[2], new FileInfo(segment).Length);
        using (var stream = new FileStream(segment, FileMode.Open))
        {
            stream.SetLength(ends[2] - cut);
        }

        var replayed = new List<MemoryLogEntry>();
        var next = entries[sound - 1].End;
        using (var log = MemoryLog.Open(LogFile, D, C, replayed.Add))
        {
            Assert.Equal(sound, log.Recovery.Records);
            Assert.Equal(ends[2] - cut - ends[sound - 1], log.Recovery.DroppedBytes);
            Assert.NotNull(log.Recovery.DropReason);
            Assert.Equal(ends[sound - 1], new FileInfo(segment).Length);
            Assert.Equal(next, log.NextOffset);
            log.Append([Entry(next, 1, seed: 4)]);
        }

        AssertSame(entries[..sound], replayed);
        replayed.Clear();
        using (var log = MemoryLog.Open(LogFile, D, C, replayed.Add))
        {
            Assert.Equal(0, log.Recovery.DroppedBytes);
        }

        AssertSame([.. entries[..sound], Entry(next, 1, seed: 4)], replayed);
    }

    [Fact]
    public void AFlippedByteInTheLastRecordDropsItButInAnEarlierSegmentFailsTheOpen()
    {
        using (var log = MemoryLog.Open(LogFile, D, C))
        {
            log.Append([Entry(0, 2, seed: 1), Entry(2, 3, seed: 2)]);
        }

        var first = MemoryLog.SegmentPath(LogFile, 1);
        FlipByte(first, new FileInfo(first).Length - 50);
        var replayed = new List<MemoryLogEntry>();
        using (var log = MemoryLog.Open(LogFile, D, C, replayed.Add))
        {
            Assert.Equal(1, log.Recovery.Records);
            Assert.Contains("checksum", log.Recovery.DropReason, StringComparison.Ordinal);
            log.Append([Entry(2, 1, seed: 3)]);
            Assert.Equal(2, log.Rotate());
            log.Append([Entry(3, 1, seed: 4)]);
        }

        FlipByte(first, MemoryLog.HeaderBytes + 20);
        var e = Assert.Throws<MemoryLogException>(() => MemoryLog.Open(LogFile, D, C));
        Assert.Equal(first, e.FilePath);
        Assert.Contains("not the last one", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void RotationStartsANewSegmentAndOldOnesCanBeDeleted()
    {
        using (var log = MemoryLog.Open(LogFile, D, C))
        {
            log.Append([Entry(0, 2, seed: 1)]);
            Assert.Equal(2, log.Rotate());
            log.Append([Entry(2, 1, seed: 2)]);
            Assert.Equal(3, log.Rotate());
            Assert.Equal([1, 2, 3], log.Segments);
            log.DeleteSegmentsBefore(3);
            Assert.Equal([3], log.Segments);
            Assert.Equal(MemoryLog.HeaderBytes, log.Bytes);
            Assert.Equal(3, log.NextOffset);
            log.Append([Entry(3, 2, seed: 3)]);
        }

        Assert.Equal([3], MemoryLog.FindSegments(LogFile).Select(s => s.Number));
        var replayed = new List<MemoryLogEntry>();
        using var reopened = MemoryLog.Open(LogFile, D, C, replayed.Add);
        AssertSame([Entry(3, 2, seed: 3)], replayed);
    }

    [Fact]
    public void AMissingMiddleSegmentIsDetected()
    {
        using (var log = MemoryLog.Open(LogFile, D, C))
        {
            log.Append([Entry(0, 2, seed: 1)]);
            log.Rotate();
            log.Append([Entry(2, 1, seed: 2)]);
            log.Rotate();
            log.Append([Entry(3, 1, seed: 3)]);
        }

        File.Delete(MemoryLog.SegmentPath(LogFile, 2));
        var e = Assert.Throws<MemoryLogException>(() => MemoryLog.Open(LogFile, D, C));
        Assert.Contains("missing or repeated", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void ALogOfAnotherShapeOrAnotherIdIsRefused()
    {
        Guid id;
        using (var log = MemoryLog.Open(LogFile, D, C))
        {
            id = log.Id;
            log.Append([Entry(0, 1, seed: 1)]);
        }

        Assert.Contains("dimension 5 for 4 classes", Assert.Throws<MemoryLogException>(() => MemoryLog.Open(LogFile, D + 1, C)).Message, StringComparison.Ordinal);
        Assert.Contains("belongs to log", Assert.Throws<MemoryLogException>(() => MemoryLog.Open(LogFile, D, C, id: Guid.NewGuid())).Message, StringComparison.Ordinal);
        using var same = MemoryLog.Open(LogFile, D, C, id: id);
        Assert.Equal(id, same.Id);
        Assert.Equal(1, same.Recovery.Records);
    }

    [Fact]
    public void ASegmentWhoseHeaderWasTornIsStartedAgain()
    {
        using (var log = MemoryLog.Open(LogFile, D, C))
        {
            log.Append([Entry(0, 1, seed: 1)]);
        }

        File.WriteAllBytes(MemoryLog.SegmentPath(LogFile, 2), File.ReadAllBytes(MemoryLog.SegmentPath(LogFile, 1))[..20]);
        using (var log = MemoryLog.Open(LogFile, D, C))
        {
            Assert.Equal(20, log.Recovery.DroppedBytes);
            Assert.Equal(2, log.CurrentSegment);
            log.Append([Entry(1, 1, seed: 2)]);
        }

        var replayed = new List<MemoryLogEntry>();
        using var reopened = MemoryLog.Open(LogFile, D, C, replayed.Add);
        AssertSame([Entry(0, 1, seed: 1), Entry(1, 1, seed: 2)], replayed);
    }

    private static MemoryLogEntry Entry(long offset, int rows, int seed)
    {
        var random = new Random(seed);
        var labels = Enumerable.Range(0, rows).Select(_ => random.Next(C)).ToArray();
        var keys = Enumerable.Range(0, rows * D).Select(_ => (float)random.NextDouble()).ToArray();
        return new MemoryLogEntry(offset, labels, keys);
    }

    private static void AssertSame(IReadOnlyList<MemoryLogEntry> expected, IReadOnlyList<MemoryLogEntry> actual)
    {
        Assert.Equal(expected.Count, actual.Count);
        for (var i = 0; i < expected.Count; i++)
        {
            Assert.Equal(expected[i].Offset, actual[i].Offset);
            Assert.Equal(expected[i].Labels, actual[i].Labels);
            Assert.Equal(expected[i].Keys, actual[i].Keys);
        }
    }

    private static void FlipByte(string file, long position)
    {
        using var stream = new FileStream(file, FileMode.Open, FileAccess.ReadWrite);
        stream.Position = position;
        var b = stream.ReadByte();
        stream.Position = position;
        stream.WriteByte((byte)(b ^ 0x40));
    }
}
