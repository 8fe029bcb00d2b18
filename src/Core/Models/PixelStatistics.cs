using ScalableCache.Core.Checkpoints;
using ScalableCache.Core.Data;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Models;

/// <summary>
/// Per-pixel input statistics (Orhan's <c>cifar_utils.py</c>): the mean and population standard deviation of <c>x / 255</c> at
/// every channel, row and column over a whole data set (his scripts use all training and test images), computed from images or
/// read from a statistics file.
/// </summary>
public static class PixelStatistics
{
    /// <summary>The statistics file's conventional name (e.g. <c>data/cifar100/pixel-stats.safetensors</c>).</summary>
    public const string FileName = "pixel-stats.safetensors";

    /// <summary>
    /// The per-pixel mean and population std (numpy's <c>np.mean(x, 0)</c>, <c>np.std(x, 0)</c>) of <c>x / 255</c> over every image of
    /// <paramref name="sets"/>, accumulated in double precision, as a <see cref="InputNormalization.PerPixel"/> normalisation.
    /// </summary>
    /// <exception cref="ArgumentException">No images, images of different shapes, or a pixel constant over all images (std 0).</exception>
    public static InputNormalization FromImages(params IReadOnlyList<ImageDataset> sets)
    {
        ArgumentNullException.ThrowIfNull(sets);
        if (sets.Count == 0 || sets.All(s => s.Count == 0))
        {
            throw new ArgumentException("Per-pixel statistics need at least one image.", nameof(sets));
        }

        var first = sets[0];
        var shape = new InputShape(first.Channels, first.Height, first.Width);
        if (sets.Any(s => s.Channels != shape.Channels || s.Height != shape.Height || s.Width != shape.Width))
        {
            throw new ArgumentException("Per-pixel statistics need images of one shape.", nameof(sets));
        }

        var sum = new double[shape.Size];
        var squares = new double[shape.Size];
        long count = 0;
        foreach (var set in sets)
        {
            var pixels = set.Pixels;
            for (var i = 0; i < set.Count; i++)
            {
                var image = pixels.Slice(i * shape.Size, shape.Size);
                for (var j = 0; j < image.Length; j++)
                {
                    var x = image[j] / 255.0;
                    sum[j] += x;
                    squares[j] += x * x;
                }
            }

            count += set.Count;
        }

        var mean = new float[shape.Size];
        var std = new float[shape.Size];
        for (var j = 0; j < shape.Size; j++)
        {
            var m = sum[j] / count;
            mean[j] = (float)m;
            std[j] = (float)Math.Sqrt(Math.Max(0, (squares[j] / count) - (m * m)));
        }

        return InputNormalization.PerPixel(mean, std, shape);
    }

    /// <summary>
    /// Reads a statistics file: safetensors with float tensors <c>mean</c> and <c>std</c> of shape <c>[H, W, C]</c> (height × width ×
    /// channel, as numpy computes them on channels-last images), returned in channel-major order.
    /// </summary>
    /// <exception cref="FileNotFoundException">No file is there.</exception>
    /// <exception cref="CheckpointException">The file is not safetensors, lacks a tensor, or the shapes disagree.</exception>
    public static InputNormalization Read(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        InputFile.Resolve(path, "Pixel statistics file");
        var (tensors, _) = SafetensorsReader.Read(path);
        try
        {
            using var scope = NewDisposeScope();
            Tensor Get(string name) => tensors.TryGetValue(name, out var t) && t.dim() == 3 && t.is_floating_point()
                ? t
                : throw new CheckpointException(path, $"needs a float tensor '{name}' of shape [H, W, C]; it has {string.Join(", ", tensors.Keys)}.");
            var mean = Get("mean");
            var std = Get("std");
            if (!mean.shape.SequenceEqual(std.shape))
            {
                throw new CheckpointException(path, $"has mean {TensorShapeEntry.Format(mean.shape)} but std {TensorShapeEntry.Format(std.shape)}.");
            }

            var shape = new InputShape((int)mean.shape[2], (int)mean.shape[0], (int)mean.shape[1]);
            float[] ChannelMajor(Tensor t) => t.to_type(ScalarType.Float32).permute(2, 0, 1).contiguous().data<float>().ToArray();
            try
            {
                return InputNormalization.PerPixel(ChannelMajor(mean), ChannelMajor(std), shape);
            }
            catch (ArgumentException e)
            {
                throw new CheckpointException(path, $"holds invalid statistics: {e.Message}", e);
            }
        }
        finally
        {
            foreach (var t in tensors.Values)
            {
                t.Dispose();
            }
        }
    }
}
