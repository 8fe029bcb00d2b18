using SkiaSharp;

namespace ScalableCache.Core.Data;

/// <summary>Options for <see cref="ImageFolder.Load"/>.</summary>
public sealed class ImageFolderOptions
{
    /// <summary>
    /// Width every image is resized to, in pixels; 0 (the default) keeps the decoded size, and then every image must have the
    /// size of the first. Set together with <see cref="TargetHeight"/>.
    /// </summary>
    public int TargetWidth { get; set; }

    /// <summary>Height every image is resized to, in pixels; 0 (the default) keeps the decoded size. Set together with <see cref="TargetWidth"/>.</summary>
    public int TargetHeight { get; set; }
}

/// <summary>
/// Reads a folder with one sub-folder per class (the torchvision <c>ImageFolder</c> layout): class names are the sub-folder names
/// sorted ordinally, label i is the i-th name; each class's <c>.png</c>, <c>.jpg</c> and <c>.jpeg</c> files (any case, not recursive)
/// are read in ordinal name order; other files, and files and sub-folders whose name starts with '.', are ignored.
/// </summary>
/// <remarks>
/// Images are decoded with SkiaSharp into 8-bit RGB without colour-space conversion (alpha is dropped, grey becomes R = G = B,
/// EXIF orientation is not applied), so a PNG's stored values come back exactly. With a target size every image is stretched to it
/// (aspect ratio not kept) with linear filtering and linear mipmaps. An undecodable image, an image of another size when no target is
/// set, or a class folder without images fails with a <see cref="DatasetFormatException"/> naming the file or folder.
/// </remarks>
public static class ImageFolder
{
    /// <summary>File extensions read as images (compared case-insensitively).</summary>
    public static IReadOnlyList<string> Extensions { get; } = [".png", ".jpg", ".jpeg"];

    /// <summary>Loads every image under <paramref name="root"/> as a 3-channel data set.</summary>
    /// <exception cref="DirectoryNotFoundException"><paramref name="root"/> does not exist.</exception>
    /// <exception cref="DatasetFormatException">No class folders, an empty class, an undecodable image or a size mismatch.</exception>
    public static ImageDataset Load(string root, ImageFolderOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(root);
        options ??= new ImageFolderOptions();
        if (options.TargetWidth < 0 || options.TargetHeight < 0 || (options.TargetWidth == 0) != (options.TargetHeight == 0))
        {
            throw new ArgumentException(
                $"Set both TargetWidth and TargetHeight (pixels) or neither; got {options.TargetWidth}×{options.TargetHeight}.", nameof(options));
        }

        var full = Path.GetFullPath(root);
        if (!Directory.Exists(full))
        {
            throw new DirectoryNotFoundException($"Image folder '{full}' does not exist. {DatasetLocator.Hint}");
        }

        var classFolders = Directory.GetDirectories(full)
            .Where(d => !Path.GetFileName(d).StartsWith('.'))
            .Order(StringComparer.Ordinal)
            .ToArray();
        if (classFolders.Length == 0)
        {
            throw new DatasetFormatException(full, null, "holds no class sub-folders (expected one sub-folder of images per class).");
        }

        var files = new List<(string Path, int Label)>();
        for (var label = 0; label < classFolders.Length; label++)
        {
            var images = Directory.GetFiles(classFolders[label])
                .Where(f => !Path.GetFileName(f).StartsWith('.') &&
                            Extensions.Contains(Path.GetExtension(f), StringComparer.OrdinalIgnoreCase))
                .Order(StringComparer.Ordinal)
                .ToArray();
            if (images.Length == 0)
            {
                throw new DatasetFormatException(
                    classFolders[label], null, $"class folder holds no images ({string.Join(", ", Extensions)}).");
            }

            files.AddRange(images.Select(f => (f, label)));
        }

        var width = options.TargetWidth;
        var height = options.TargetHeight;
        string? sizeSource = null;
        byte[] pixels = [];
        var labels = new int[files.Count];
        for (var i = 0; i < files.Count; i++)
        {
            var (path, label) = files[i];
            using var bitmap = ImageCodec.DecodeRgba(path);
            if (width == 0)
            {
                width = bitmap.Width;
                height = bitmap.Height;
                sizeSource = path;
            }

            if (pixels.Length == 0)
            {
                var total = 3L * width * height * files.Count;
                if (total > Array.MaxLength)
                {
                    throw new DatasetFormatException(full, null, $"{files.Count} images of {width}×{height} do not fit in one in-memory data set.");
                }

                pixels = new byte[total];
            }

            if (bitmap.Width != width || bitmap.Height != height)
            {
                if (sizeSource is not null)
                {
                    throw new DatasetFormatException(
                        path, null,
                        $"is {bitmap.Width}×{bitmap.Height} but '{sizeSource}' is {width}×{height}; set ImageFolderOptions.TargetWidth/TargetHeight to resize.");
                }

                using var resized = bitmap.Resize(
                    new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Unpremul),
                    new SKSamplingOptions(SKFilterMode.Linear, SKMipmapMode.Linear))
                    ?? throw new DatasetFormatException(path, null, $"could not be resized to {width}×{height}.");
                ImageCodec.CopyPlanar(resized, pixels.AsSpan(i * 3 * width * height, 3 * width * height));
            }
            else
            {
                ImageCodec.CopyPlanar(bitmap, pixels.AsSpan(i * 3 * width * height, 3 * width * height));
            }

            labels[i] = label;
        }

        var names = classFolders.Select(Path.GetFileName).Select(n => n ?? string.Empty).ToArray();
        return new ImageDataset(pixels, labels, 3, height, width, names, validateLabels: false);
    }
}
