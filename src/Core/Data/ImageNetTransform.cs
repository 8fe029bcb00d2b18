using System.Globalization;
using ScalableCache.Core.Models;
using SkiaSharp;

namespace ScalableCache.Core.Data;

/// <summary>
/// torchvision's ImageNet evaluation transform up to the pixels: the image decoded to RGB (PIL's <c>.convert("RGB")</c>), its shorter
/// side resized to <see cref="ResizeTo"/> with PIL's antialiased bilinear filter (<c>transforms.Resize(256)</c>), then the centre
/// <see cref="CropTo"/>×<see cref="CropTo"/> crop (<c>CenterCrop(224)</c>), as uint8 CHW. <c>ToTensor</c> + <c>Normalize</c> are
/// <see cref="InputNormalization.Normalize"/> with <see cref="InputNormalization.ImageNet"/>.
/// </summary>
/// <remarks>
/// <para>The resampling is Pillow's (<c>Resample.c</c>, 8 bits per channel): a triangle filter whose support widens by the
/// reduction factor, weights normalised per output pixel and rounded to 22-bit fixed point, a horizontal pass rounded to uint8, then
/// a vertical pass. Only the output pixels inside the crop are computed (each output pixel depends on its own coefficients only, so
/// the result is the same as resizing the whole image and cropping). The longer side becomes <c>⌊256 · long / short⌋</c> and the crop
/// offsets <c>round((size − 224) / 2)</c> with round-half-to-even, as torchvision computes them.</para>
/// <para>JPEGs decode with SkiaSharp (libjpeg-turbo) without colour management, as PIL does: greyscale becomes R = G = B; CMYK
/// (Adobe, inverted) is converted to RGB by the codec. Thread-safe: instances are immutable, so batches decode in parallel.</para>
/// </remarks>
public sealed class ImageNetTransform
{
    private const int PrecisionBits = 32 - 8 - 2;

    /// <summary>Creates the transform.</summary>
    /// <param name="resizeTo">Length the shorter side is resized to (256).</param>
    /// <param name="cropTo">Side of the centre crop (224); at most <paramref name="resizeTo"/>.</param>
    public ImageNetTransform(int resizeTo = 256, int cropTo = 224)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(resizeTo);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(cropTo);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(cropTo, resizeTo);
        ResizeTo = resizeTo;
        CropTo = cropTo;
    }

    /// <summary>Length of the shorter side after resizing, in pixels.</summary>
    public int ResizeTo { get; }

    /// <summary>Side of the square centre crop, in pixels.</summary>
    public int CropTo { get; }

    /// <summary>Shape of the images this transform makes: 3 × <see cref="CropTo"/> × <see cref="CropTo"/>.</summary>
    public InputShape Output => new(3, CropTo, CropTo);

    /// <summary>Decodes <paramref name="path"/> and writes its transformed pixels (uint8 CHW, <see cref="Output"/>.Size bytes) to <paramref name="destination"/>.</summary>
    /// <exception cref="DatasetFormatException">The file is not a decodable image.</exception>
    public void Apply(string path, Span<byte> destination)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (destination.Length < Output.Size)
        {
            throw new ArgumentException($"The destination holds {destination.Length} bytes; an image needs {Output.Size}.", nameof(destination));
        }

        using var bitmap = ImageCodec.DecodeRgba(path);
        Apply(bitmap.GetPixelSpan(), bitmap.RowBytes, bitmap.Width, bitmap.Height, destination);
    }

    /// <summary>Decodes and transforms <paramref name="path"/> into a new array (uint8 CHW).</summary>
    public byte[] Apply(string path)
    {
        var result = new byte[Output.Size];
        Apply(path, result);
        return result;
    }

    /// <summary>The resized size torchvision computes: shorter side <see cref="ResizeTo"/>, longer side <c>⌊ResizeTo · long / short⌋</c>.</summary>
    public (int Width, int Height) ResizedSize(int width, int height)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(width);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(height);
        var (shorter, longer) = width <= height ? (width, height) : (height, width);
        var newLong = (int)((double)ResizeTo * longer / shorter);
        return width <= height ? (ResizeTo, newLong) : (newLong, ResizeTo);
    }

    /// <summary>Transforms RGBA8888 pixels (rows of <paramref name="rowBytes"/> bytes) into uint8 CHW.</summary>
    internal void Apply(ReadOnlySpan<byte> rgba, int rowBytes, int width, int height, Span<byte> destination)
    {
        var (outWidth, outHeight) = ResizedSize(width, height);
        var left = (int)Math.Round((outWidth - CropTo) / 2.0, MidpointRounding.ToEven);
        var top = (int)Math.Round((outHeight - CropTo) / 2.0, MidpointRounding.ToEven);
        var horizontal = Coefficients.For(width, outWidth, left, CropTo);
        var vertical = Coefficients.For(height, outHeight, top, CropTo);

        // Horizontal pass over the input rows the vertical pass reads: [rowFirst, rowLast), three channels planar.
        var rowFirst = vertical.Bounds[0];
        var rowLast = vertical.Bounds[(2 * (CropTo - 1))] + vertical.Bounds[(2 * (CropTo - 1)) + 1];
        var rows = rowLast - rowFirst;
        var temp = new byte[3 * rows * CropTo];
        for (var y = 0; y < rows; y++)
        {
            var row = rgba.Slice((rowFirst + y) * rowBytes, width * 4);
            for (var x = 0; x < CropTo; x++)
            {
                var xmin = horizontal.Bounds[2 * x];
                var count = horizontal.Bounds[(2 * x) + 1];
                var k = horizontal.Weights.AsSpan(x * horizontal.Size, count);
                int r = 1 << (PrecisionBits - 1), g = r, b = r;
                for (var i = 0; i < count; i++)
                {
                    var p = 4 * (xmin + i);
                    r += row[p] * k[i];
                    g += row[p + 1] * k[i];
                    b += row[p + 2] * k[i];
                }

                temp[(y * CropTo) + x] = Clip8(r);
                temp[((rows + y) * CropTo) + x] = Clip8(g);
                temp[(((2 * rows) + y) * CropTo) + x] = Clip8(b);
            }
        }

        for (var c = 0; c < 3; c++)
        {
            var plane = temp.AsSpan(c * rows * CropTo, rows * CropTo);
            var target = destination.Slice(c * CropTo * CropTo, CropTo * CropTo);
            for (var y = 0; y < CropTo; y++)
            {
                var ymin = vertical.Bounds[2 * y] - rowFirst;
                var count = vertical.Bounds[(2 * y) + 1];
                var k = vertical.Weights.AsSpan(y * vertical.Size, count);
                for (var x = 0; x < CropTo; x++)
                {
                    var s = 1 << (PrecisionBits - 1);
                    for (var i = 0; i < count; i++)
                    {
                        s += plane[((ymin + i) * CropTo) + x] * k[i];
                    }

                    target[(y * CropTo) + x] = Clip8(s);
                }
            }
        }
    }

    /// <inheritdoc />
    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"resize shorter side to {ResizeTo} (antialiased bilinear), centre crop {CropTo}");

    private static byte Clip8(int value)
    {
        var v = value >> PrecisionBits;
        return (byte)(v < 0 ? 0 : v > 255 ? 255 : v);
    }

    /// <summary>Pillow's <c>precompute_coeffs</c> + <c>normalize_coeffs_8bpc</c> for the output pixels <c>[first, first + count)</c>.</summary>
    private sealed record Coefficients(int Size, int[] Bounds, int[] Weights)
    {
        public static Coefficients For(int inSize, int outSize, int first, int count)
        {
            var scale = (double)inSize / outSize;
            var filterScale = Math.Max(scale, 1.0);
            var support = 1.0 * filterScale;
            var size = ((int)Math.Ceiling(support) * 2) + 1;
            var bounds = new int[2 * count];
            var weights = new int[size * count];
            var k = new double[size];
            for (var j = 0; j < count; j++)
            {
                var xx = first + j;
                var center = (xx + 0.5) * scale;
                var ss = 1.0 / filterScale;
                var xmin = Math.Max((int)(center - support + 0.5), 0);
                var xmax = Math.Min((int)(center + support + 0.5), inSize) - xmin;
                var total = 0.0;
                for (var x = 0; x < xmax; x++)
                {
                    var w = Math.Max(0, 1 - Math.Abs((x + xmin - center + 0.5) * ss));
                    k[x] = w;
                    total += w;
                }

                for (var x = 0; x < xmax; x++)
                {
                    var w = total != 0 ? k[x] / total : k[x];
                    weights[(j * size) + x] = (int)(w < 0 ? -0.5 + (w * (1 << PrecisionBits)) : 0.5 + (w * (1 << PrecisionBits)));
                }

                bounds[2 * j] = xmin;
                bounds[(2 * j) + 1] = xmax;
            }

            return new Coefficients(size, bounds, weights);
        }
    }
}
