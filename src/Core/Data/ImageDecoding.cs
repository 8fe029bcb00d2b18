using SkiaSharp;

namespace ScalableCache.Core.Data;

/// <summary>
/// Image decoding shared by the image readers: SkiaSharp into 8-bit RGBA without colour-space conversion (grey becomes R = G = B,
/// alpha is kept for the caller to drop, EXIF orientation is not applied).
/// </summary>
internal static class ImageDecoding
{
    /// <summary>Decodes <paramref name="path"/> into an RGBA8888 bitmap (the caller disposes it).</summary>
    /// <exception cref="DatasetFormatException">The file is not a decodable image.</exception>
    public static SKBitmap DecodeRgba(string path)
    {
        using var codec = SKCodec.Create(path, out var result)
            ?? throw new DatasetFormatException(path, null, $"is not a decodable image ({result}).");
        var info = new SKImageInfo(codec.Info.Width, codec.Info.Height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        var bitmap = new SKBitmap(info);
        var decoded = codec.GetPixels(info, bitmap.GetPixels());
        if (decoded != SKCodecResult.Success)
        {
            bitmap.Dispose();
            throw new DatasetFormatException(path, null, $"could not be decoded ({decoded}).");
        }

        return bitmap;
    }

    /// <summary>RGBA8888 interleaved → RGB planar (CHW).</summary>
    public static void CopyPlanar(SKBitmap bitmap, Span<byte> target)
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
