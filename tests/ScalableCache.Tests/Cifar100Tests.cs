using ScalableCache.Core.Data;
using Xunit;

namespace ScalableCache.Tests;

public sealed class Cifar100Tests
{
    [Fact]
    public void FineAndCoarseLabelsAndNamesAreRead()
    {
        using var temp = new DataTempFolder();
        var file = temp.Combine("train.bin");
        File.WriteAllBytes(file, DataTestFiles.CifarRows([19, 99], [0, 0], [7, 42]));
        var fineNames = Enumerable.Range(0, 100).Select(i => $"fine{i}").ToArray();
        File.WriteAllLines(temp.Combine(Cifar100.FineNamesFile), fineNames);

        var fine = Cifar100.LoadFile(file);
        Assert.Equal([99, 0, 42], fine.Labels.ToArray());
        Assert.Equal(100, fine.ClassCount);
        Assert.Equal("fine42", fine.ClassNames[42]);
        Assert.Equal(DataTestFiles.PixelValue(2, 0), fine.GetPixel(2, 0, 0, 0));
        Assert.Equal(DataTestFiles.PixelValue(1, 3071), fine.GetPixel(1, 2, 31, 31));

        var coarse = Cifar100.LoadFile(file, Cifar100Labels.Coarse);
        Assert.Equal([19, 0, 7], coarse.Labels.ToArray());
        Assert.Equal(20, coarse.ClassCount);
        Assert.Equal("7", coarse.ClassNames[7]);
        Assert.Equal(fine.Pixels.ToArray(), coarse.Pixels.ToArray());
    }

    [Theory]
    [InlineData(20, 5)]
    [InlineData(3, 100)]
    public void OutOfRangeLabelNamesTheRow(byte coarse, byte fineLabel)
    {
        using var temp = new DataTempFolder();
        var file = temp.Combine("test.bin");
        File.WriteAllBytes(file, DataTestFiles.CifarRows([1, 1], [coarse, fineLabel], [2, 2]));
        var e = Assert.Throws<DatasetFormatException>(() => Cifar100.LoadFile(file));
        Assert.Equal(file, e.FilePath);
        Assert.Equal(1, e.Row);
        Assert.Contains(coarse >= 20 ? "coarse label 20" : "fine label 100", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void LocatorFindsTheBinaryFolderBelowItsParentAndChecksTheRowCount()
    {
        using var temp = new DataTempFolder();
        Directory.CreateDirectory(temp.Combine(Cifar100.FolderName));
        var file = temp.Combine(Cifar100.FolderName, Cifar100.TestFile);
        File.WriteAllBytes(file, DataTestFiles.CifarRows([1, 1], [2, 2]));
        Assert.Equal(temp.Combine(Cifar100.FolderName), DatasetLocator.ResolveCifar100(temp.Path, DatasetParts.Test));

        var e = Assert.Throws<DatasetFormatException>(() => Cifar100.LoadTest(temp.Path));
        Assert.Equal(file, e.FilePath);
        Assert.Equal(2, e.Row);

        var missing = Assert.Throws<FileNotFoundException>(() => Cifar100.LoadTrain(temp.Path));
        Assert.Contains("train.bin", missing.Message, StringComparison.Ordinal);
        Assert.Contains("--data", missing.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void WrongLengthNamesTheRow()
    {
        using var temp = new DataTempFolder();
        var file = temp.Combine("test.bin");
        File.WriteAllBytes(file, DataTestFiles.CifarRows([1, 1], [2, 2])[..(Cifar100.RowSize + 1)]);
        var e = Assert.Throws<DatasetFormatException>(() => Cifar100.LoadFile(file));
        Assert.Equal(1, e.Row);
    }
}
