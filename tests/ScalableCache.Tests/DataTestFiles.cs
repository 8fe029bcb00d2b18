using ScalableCache.Core.Data;

namespace ScalableCache.Tests;

/// <summary>A fresh temporary folder, deleted on dispose.</summary>
internal sealed class DataTempFolder : IDisposable
{
    public DataTempFolder()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "scache-data-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string Combine(params string[] parts) => System.IO.Path.Combine([Path, .. parts]);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>Synthetic data for the data-set tests.</summary>
internal static class DataTestFiles
{
    /// <summary>A deterministic pixel value for image i, byte j.</summary>
    public static byte PixelValue(int image, int offset) => (byte)((image * 31) + (offset * 7) + (offset / 97));

    /// <summary>CIFAR binary rows: the label bytes of each row, then 3,072 pixel bytes from <see cref="PixelValue"/>.</summary>
    public static byte[] CifarRows(params byte[][] labelBytesPerRow)
    {
        var labelBytes = labelBytesPerRow[0].Length;
        var rowSize = labelBytes + 3072;
        var data = new byte[labelBytesPerRow.Length * rowSize];
        for (var r = 0; r < labelBytesPerRow.Length; r++)
        {
            labelBytesPerRow[r].CopyTo(data, r * rowSize);
            for (var j = 0; j < 3072; j++)
            {
                data[(r * rowSize) + labelBytes + j] = PixelValue(r, j);
            }
        }

        return data;
    }

    /// <summary>CIFAR-10 rows with the given labels.</summary>
    public static byte[] Cifar10Rows(params byte[] labels) => CifarRows([.. labels.Select(l => new[] { l })]);

    /// <summary>A small data set: n images of c×h×w with labels i mod classes.</summary>
    public static ImageDataset Synthetic(int n, int classes, int channels = 3, int height = 4, int width = 5, Func<int, int>? label = null)
    {
        var size = channels * height * width;
        var pixels = new byte[n * size];
        for (var i = 0; i < n; i++)
        {
            for (var j = 0; j < size; j++)
            {
                pixels[(i * size) + j] = PixelValue(i, j);
            }
        }

        var labels = Enumerable.Range(0, n).Select(label ?? (i => i % classes)).ToArray();
        var names = Enumerable.Range(0, classes).Select(c => $"class{c}").ToArray();
        return new ImageDataset(pixels, labels, channels, height, width, names);
    }
}
