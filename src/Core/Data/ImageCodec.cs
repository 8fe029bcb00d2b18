using SkiaSharp;

namespace ScalableCache.Core.Data;

/// <summary>A decoded image: 8-bit RGB pixels in planar (CHW) order, <c>3 × Height × Width</c> bytes.</summary>
/// <param name="Pixels">Red plane, then green, then blue; each row-major.</param>
/// <param name="Width">Width in pixels.</param>
/// <param name="Height">Height in pixels.</param>
public sealed record DecodedImage(byte[] Pixels, int Width, int Height);

/// <summary>Decodes PNG and JPEG (and the other formats SkiaSharp reads) into planar RGB, as the data sets and the server use them.</summary>
public static class ImageCodec
{
    /// <summary>Decodes <paramref name="encoded"/> (alpha is dropped, grey becomes three equal planes).</summary>
    /// <exception cref="InvalidDataException">The bytes are not a decodable image; the message says why.</exception>
    public static DecodedImage Decode(ReadOnlySpan<byte> encoded)
    {
        using var data = SKData.CreateCopy(encoded);
        using var codec = SKCodec.Create(data)
            ?? throw new InvalidDataException("not a PNG, JPEG or other decodable image.");
        using var bitmap = Decode(codec, out var why) ?? throw new InvalidDataException($"the image could not be decoded ({why}).");
        return ToPlanar(bitmap);
    }

    /// <summary>
    /// Decodes the file at <paramref name="path"/> into an RGBA8888 bitmap (the caller disposes it), without colour-space conversion
    /// (grey becomes R = G = B, alpha is kept for the caller to drop, EXIF orientation is not applied).
    /// </summary>
    /// <exception cref="DatasetFormatException">The file is not a decodable image.</exception>
    internal static SKBitmap DecodeRgba(string path)
    {
        using var codec = SKCodec.Create(path, out var result)
            ?? throw new DatasetFormatException(path, null, $"is not a decodable image ({result}).");
        return Decode(codec, out var decoded) ?? throw new DatasetFormatException(path, null, $"could not be decoded ({decoded}).");
    }

    /// <summary>Decodes the codec's image as unpremultiplied RGBA, or returns <see langword="null"/> with the codec's reason.</summary>
    internal static SKBitmap? Decode(SKCodec codec, out SKCodecResult result)
    {
        var info = new SKImageInfo(codec.Info.Width, codec.Info.Height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        var bitmap = new SKBitmap(info);
        result = codec.GetPixels(info, bitmap.GetPixels());
        if (result == SKCodecResult.Success)
        {
            return bitmap;
        }

        bitmap.Dispose();
        return null;
    }

    /// <summary>RGBA8888 interleaved → RGB planar (CHW), a new array.</summary>
    internal static DecodedImage ToPlanar(SKBitmap bitmap)
    {
        var pixels = new byte[3 * bitmap.Width * bitmap.Height];
        CopyPlanar(bitmap, pixels);
        return new DecodedImage(pixels, bitmap.Width, bitmap.Height);
    }

    /// <summary>RGBA8888 interleaved → RGB planar (CHW) into <paramref name="target"/> (<c>3 × width × height</c> bytes).</summary>
    internal static void CopyPlanar(SKBitmap bitmap, Span<byte> target)
    {
        var source = bitmap.GetPixelSpan();
        var rowBytes = bitmap.RowBytes;
        var plane = bitmap.Width * bitmap.Height;
        for (var y = 0; y < bitmap.Height; y++)
        {
            var row = source.Slice(y * rowBytes, bitmap.Width * 4);
            for (var x = 0; x < bitmap.Width; x++)
            {
                var p = (y * bitmap.Width) + x;
                target[p] = row[4 * x];
                target[plane + p] = row[(4 * x) + 1];
                target[(2 * plane) + p] = row[(4 * x) + 2];
            }
        }
    }
}
