using ScalableCache.Core.Data;
using SkiaSharp;
using Xunit;

namespace ScalableCache.Tests;

public sealed class ImageFolderTests
{
    [Fact]
    public void PngRoundTripsExactlyWithSortedClassLabels()
    {
        using var temp = new DataTempFolder();
        var expected = new Dictionary<string, (int Seed, string Class)>
        {
            ["dog/b.png"] = (1, "dog"),
            ["dog/a.PNG"] = (2, "dog"),
            ["cat/x.png"] = (3, "cat"),
            ["bird/z.png"] = (4, "bird"),
        };
        foreach (var (name, (seed, _)) in expected)
        {
            Save(temp.Combine(name.Split('/')), Pattern(5, 4, seed), SKEncodedImageFormat.Png, 5, 4);
        }

        File.WriteAllText(temp.Combine("cat", "notes.txt"), "ignored");
        File.WriteAllBytes(temp.Combine("cat", "._x.png"), [0, 1, 2]);
        Directory.CreateDirectory(temp.Combine(".hidden"));

        var data = ImageFolder.Load(temp.Path);
        Assert.Equal(["bird", "cat", "dog"], data.ClassNames);
        Assert.Equal((4, 3, 4, 5), (data.Count, data.Channels, data.Height, data.Width));
        Assert.Equal([0, 1, 2, 2], data.Labels.ToArray());

        // Order within a class is ordinal by file name: "a.PNG" < "b.png".
        string[] order = ["bird/z.png", "cat/x.png", "dog/a.PNG", "dog/b.png"];
        for (var i = 0; i < order.Length; i++)
        {
            var colours = Pattern(5, 4, expected[order[i]].Seed);
            for (var y = 0; y < 4; y++)
            {
                for (var x = 0; x < 5; x++)
                {
                    var c = colours[(y * 5) + x];
                    Assert.Equal((c.Red, c.Green, c.Blue), (data.GetPixel(i, 0, y, x), data.GetPixel(i, 1, y, x), data.GetPixel(i, 2, y, x)));
                }
            }
        }
    }

    [Fact]
    public void JpegDecodesCloseToItsColour()
    {
        using var temp = new DataTempFolder();
        var flat = Enumerable.Repeat(new SKColor(200, 100, 50), 8 * 8).ToArray();
        Save(temp.Combine("a", "one.jpg"), flat, SKEncodedImageFormat.Jpeg, 8, 8);
        Save(temp.Combine("b", "two.jpeg"), flat, SKEncodedImageFormat.Jpeg, 8, 8);
        var data = ImageFolder.Load(temp.Path);
        Assert.Equal([0, 1], data.Labels.ToArray());
        Assert.InRange(data.GetPixel(1, 0, 3, 3), 195, 205);
        Assert.InRange(data.GetPixel(1, 1, 3, 3), 95, 105);
        Assert.InRange(data.GetPixel(1, 2, 3, 3), 45, 55);
    }

    [Fact]
    public void DifferentSizesFailUnlessATargetSizeIsSet()
    {
        using var temp = new DataTempFolder();
        var colour = new SKColor(10, 20, 30);
        Save(temp.Combine("a", "big.png"), Enumerable.Repeat(colour, 8 * 6).ToArray(), SKEncodedImageFormat.Png, 8, 6);
        Save(temp.Combine("b", "small.png"), Enumerable.Repeat(colour, 4 * 4).ToArray(), SKEncodedImageFormat.Png, 4, 4);

        var e = Assert.Throws<DatasetFormatException>(() => ImageFolder.Load(temp.Path));
        Assert.Equal(temp.Combine("b", "small.png"), e.FilePath);
        Assert.Contains("TargetWidth", e.Message, StringComparison.Ordinal);

        var data = ImageFolder.Load(temp.Path, new ImageFolderOptions { TargetWidth = 4, TargetHeight = 3 });
        Assert.Equal((2, 3, 4), (data.Count, data.Height, data.Width));
        Assert.All(Enumerable.Range(0, 2), i => Assert.Equal((byte)30, data.GetPixel(i, 2, 2, 3)));
        Assert.Throws<ArgumentException>(() => ImageFolder.Load(temp.Path, new ImageFolderOptions { TargetWidth = 4 }));
    }

    [Fact]
    public void CorruptImageAndEmptyClassAreNamed()
    {
        using var temp = new DataTempFolder();
        Save(temp.Combine("a", "ok.png"), Pattern(2, 2, 1), SKEncodedImageFormat.Png, 2, 2);
        Directory.CreateDirectory(temp.Combine("b"));
        var corrupt = temp.Combine("b", "broken.png");
        File.WriteAllBytes(corrupt, [1, 2, 3, 4, 5]);
        var e = Assert.Throws<DatasetFormatException>(() => ImageFolder.Load(temp.Path));
        Assert.Equal(corrupt, e.FilePath);

        File.Delete(corrupt);
        var empty = Assert.Throws<DatasetFormatException>(() => ImageFolder.Load(temp.Path));
        Assert.Equal(temp.Combine("b"), empty.FilePath);

        Assert.Throws<DirectoryNotFoundException>(() => ImageFolder.Load(temp.Combine("absent")));
    }

    private static SKColor[] Pattern(int width, int height, int seed) =>
        [.. Enumerable.Range(0, width * height).Select(i =>
            new SKColor((byte)((i * 37) + (seed * 11)), (byte)((i * 101) + (seed * 53) + 7), (byte)((i * 13) ^ (seed * 71))))];

    private static void Save(string path, SKColor[] colours, SKEncodedImageFormat format, int width, int height)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        using var bitmap = new SKBitmap(new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Opaque));
        for (var y = 0; y < height; y++)
        {
            for (var x = 0; x < width; x++)
            {
                bitmap.SetPixel(x, y, colours[(y * width) + x]);
            }
        }

        using var data = bitmap.Encode(format, 90);
        File.WriteAllBytes(path, data.ToArray());
    }
}
