using ScalableCache.Core.Data;
using Xunit;

namespace ScalableCache.Tests;

public sealed class Cifar10Tests
{
    [Fact]
    public void RealTestBatchLoadsInOfficialOrder()
    {
        var test = Cifar10.LoadTest(SharedData.Cifar10);
        Assert.Equal(10_000, test.Count);
        Assert.Equal((3, 32, 32, 10), (test.Channels, test.Height, test.Width, test.ClassCount));
        Assert.Equal([3, 8, 8, 0, 6], test.Labels[..5].ToArray());
        Assert.All(test.CountPerClass(), c => Assert.Equal(1_000, c));
        Assert.Equal(Cifar10.DefaultClassNames, test.ClassNames);

        // Pixels are the file's bytes in place: first red byte of row 0 and last blue byte of the last row.
        var file = Path.Combine(SharedData.Cifar10, Cifar10.TestFile);
        using var stream = File.OpenRead(file);
        var first = new byte[2];
        stream.ReadExactly(first);
        stream.Seek(-1, SeekOrigin.End);
        var last = stream.ReadByte();
        Assert.Equal(first[1], test.GetPixel(0, 0, 0, 0));
        Assert.Equal(last, test.GetPixel(9_999, 2, 31, 31));
    }

    [Fact]
    public void RealTrainingSetLoadsInOfficialOrder()
    {
        var train = Cifar10.LoadTrain(SharedData.Cifar10);
        Assert.Equal(50_000, train.Count);
        Assert.Equal([6, 9, 9, 4, 1], train.Labels[..5].ToArray());
        Assert.All(train.CountPerClass(), c => Assert.Equal(5_000, c));
    }

    [Fact]
    public void LocatorAcceptsTheFolderItsParentAndTheDataRoot()
    {
        var folder = Path.GetFullPath(SharedData.Cifar10);
        var parent = Path.GetDirectoryName(folder)!;
        Assert.Equal(folder, DatasetLocator.ResolveCifar10(folder));
        Assert.Equal(folder, DatasetLocator.ResolveCifar10(parent));
        Assert.Equal(folder, DatasetLocator.ResolveCifar10(Path.GetDirectoryName(parent)));
    }

    [Fact]
    public void SyntheticBatchesReadLabelsAndPlanarPixels()
    {
        using var temp = new DataTempFolder();
        File.WriteAllBytes(temp.Combine("a.bin"), DataTestFiles.Cifar10Rows(1, 9, 0));
        File.WriteAllBytes(temp.Combine("b.bin"), DataTestFiles.Cifar10Rows(4));
        var data = Cifar10.LoadBatches([temp.Combine("a.bin"), temp.Combine("b.bin")], expectedRowsPerBatch: null);
        Assert.Equal([1, 9, 0, 4], data.Labels.ToArray());
        Assert.Equal(DataTestFiles.PixelValue(1, 0), data.GetPixel(1, 0, 0, 0));
        Assert.Equal(DataTestFiles.PixelValue(2, 1024 + 33), data.GetPixel(2, 1, 1, 1));
        Assert.Equal(DataTestFiles.PixelValue(0, 3071), data.GetPixel(3, 2, 31, 31));
    }

    [Fact]
    public void WrongLengthNamesFileAndRow()
    {
        using var temp = new DataTempFolder();
        var file = temp.Combine("test_batch.bin");
        File.WriteAllBytes(file, DataTestFiles.Cifar10Rows(1, 2, 3)[..((2 * Cifar10.RowSize) + 100)]);
        var e = Assert.Throws<DatasetFormatException>(() => Cifar10.LoadTest(temp.Path));
        Assert.Equal(file, e.FilePath);
        Assert.Equal(2, e.Row);
        Assert.Contains(file, e.Message, StringComparison.Ordinal);
        Assert.Contains("row 2", e.Message, StringComparison.Ordinal);
        Assert.Contains("not a multiple", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void TruncatedBatchNamesTheFirstMissingRow()
    {
        using var temp = new DataTempFolder();
        var file = temp.Combine("test_batch.bin");
        File.WriteAllBytes(file, DataTestFiles.Cifar10Rows(1, 2, 3, 4, 5));
        var e = Assert.Throws<DatasetFormatException>(() => Cifar10.LoadTest(temp.Path));
        Assert.Equal(file, e.FilePath);
        Assert.Equal(5, e.Row);
        Assert.Contains("truncated", e.Message, StringComparison.Ordinal);

        File.WriteAllBytes(file, []);
        Assert.Equal(0, Assert.Throws<DatasetFormatException>(() => Cifar10.LoadTest(temp.Path)).Row);
    }

    [Fact]
    public void LabelOutOfRangeNamesTheRow()
    {
        using var temp = new DataTempFolder();
        var file = temp.Combine("bad.bin");
        File.WriteAllBytes(file, DataTestFiles.Cifar10Rows(0, 1, 2, 10, 4));
        var e = Assert.Throws<DatasetFormatException>(() => Cifar10.LoadBatches([file], expectedRowsPerBatch: null));
        Assert.Equal(file, e.FilePath);
        Assert.Equal(3, e.Row);
        Assert.Contains("label 10", e.Message, StringComparison.Ordinal);
        Assert.Contains("row 3", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void MissingFilesAreNamedWithTheWayToPointAtACopy()
    {
        using var temp = new DataTempFolder();
        File.WriteAllBytes(temp.Combine("data_batch_1.bin"), DataTestFiles.Cifar10Rows(1));
        var e = Assert.Throws<FileNotFoundException>(() => Cifar10.LoadTest(temp.Path));
        Assert.Equal(temp.Combine("test_batch.bin"), e.FileName);
        Assert.Contains("test_batch.bin", e.Message, StringComparison.Ordinal);
        Assert.Contains("--data", e.Message, StringComparison.Ordinal);
        Assert.Contains(DatasetLocator.EnvironmentVariable, e.Message, StringComparison.Ordinal);

        var train = Assert.Throws<FileNotFoundException>(() => Cifar10.LoadTrain(temp.Path));
        Assert.Contains("data_batch_2.bin, data_batch_3.bin, data_batch_4.bin, data_batch_5.bin", train.Message, StringComparison.Ordinal);

        var direct = temp.Combine("nowhere.bin");
        var missing = Assert.Throws<FileNotFoundException>(() => Cifar10.LoadBatches([direct]));
        Assert.Equal(direct, missing.FileName);
        Assert.Contains("SCACHE_DATA", missing.Message, StringComparison.Ordinal);

        var folder = Assert.Throws<DirectoryNotFoundException>(() => Cifar10.LoadTest(temp.Combine("absent")));
        Assert.Contains("--data", folder.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void MetaFileNamesTheClassesAndIsValidated()
    {
        using var temp = new DataTempFolder();
        var names = Enumerable.Range(0, 10).Select(i => $"c{i}").ToArray();
        File.WriteAllLines(temp.Combine(Cifar10.MetaFile), [.. names, "", ""]);
        Assert.Equal(names, Cifar10.ReadClassNames(temp.Path));

        File.WriteAllLines(temp.Combine(Cifar10.MetaFile), names[..9]);
        var e = Assert.Throws<DatasetFormatException>(() => Cifar10.ReadClassNames(temp.Path));
        Assert.Equal(temp.Combine(Cifar10.MetaFile), e.FilePath);
        Assert.Null(e.Row);
    }
}
