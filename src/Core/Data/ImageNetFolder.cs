namespace ScalableCache.Core.Data;

/// <summary>
/// ImageNet (ILSVRC-2012) as users keep it: <c>ROOT/train/&lt;wnid&gt;/*.JPEG</c>, and <c>ROOT/val/</c> either in the same wnid folders or
/// flat (<c>ILSVRC2012_val_00000001.JPEG</c> …) with <see cref="GroundTruthFile"/> in <c>val/</c> or <c>ROOT</c>, whose lines are
/// <c>file label</c> with the label an index into the sorted wnids. Class i is the i-th wnid in ordinal order, as torchvision's
/// <c>ImageFolder</c> numbers them. Images stream through <see cref="ImageFileSource"/> with the evaluation transform.
/// </summary>
/// <remarks>
/// The wnids (the classes) are the first word of each line of <see cref="WnidsFile"/> in <c>ROOT</c> when it exists — then every
/// class folder under <c>train/</c> and <c>val/</c> must be one of them, and a folder holding only some classes keeps the full
/// numbering (a 1,000-class model's labels); else the sub-folders of <c>train/</c>; without <c>train/</c>, those of <c>val/</c>.
/// Files and folders whose name starts with '.' are ignored; image files are <see cref="ImageFolder.Extensions"/> (any case), in
/// ordinal name order per class.
/// </remarks>
public static class ImageNetFolder
{
    /// <summary>The flat validation folder's labels: <c>ILSVRC2012_val_NNNNNNNN.JPEG label</c> per line.</summary>
    public const string GroundTruthFile = "ILSVRC2012_validation_ground_truth.txt";

    /// <summary>The class list used when no class folders exist: <c>wnid [name…]</c> per line.</summary>
    public const string WnidsFile = "wnids.txt";

    /// <summary>The training images, <c>ROOT/train/&lt;wnid&gt;/*</c>.</summary>
    /// <exception cref="DirectoryNotFoundException">There is no <c>train/</c> folder.</exception>
    /// <exception cref="DatasetFormatException">No class folders, or a class without images.</exception>
    public static ImageFileSource Train(string root, ImageNetTransform? transform = null)
    {
        var full = Root(root);
        var train = Path.Combine(full, "train");
        if (!Directory.Exists(train))
        {
            throw new DirectoryNotFoundException($"ImageNet folder '{full}' has no train/ folder (expected train/<wnid>/*.JPEG). {DatasetLocator.Hint}");
        }

        var wnids = Wnids(full);
        var (files, labels) = ClassFolders(train, wnids);
        return new ImageFileSource(files, labels, wnids, transform);
    }

    /// <summary>The validation images: <c>ROOT/val/&lt;wnid&gt;/*</c>, or a flat <c>ROOT/val/</c> labelled by <see cref="GroundTruthFile"/>.</summary>
    /// <exception cref="DirectoryNotFoundException">There is no <c>val/</c> folder.</exception>
    /// <exception cref="DatasetFormatException">A flat folder without ground truth, a label out of range, or an image the ground truth lacks.</exception>
    public static ImageFileSource Validation(string root, ImageNetTransform? transform = null)
    {
        var full = Root(root);
        var val = Path.Combine(full, "val");
        if (!Directory.Exists(val))
        {
            throw new DirectoryNotFoundException($"ImageNet folder '{full}' has no val/ folder. {DatasetLocator.Hint}");
        }

        var wnids = Wnids(full);
        if (Visible(Directory.GetDirectories(val)).Any())
        {
            var (files, labels) = ClassFolders(val, wnids);
            return new ImageFileSource(files, labels, wnids, transform);
        }

        var truthPath = new[] { Path.Combine(val, GroundTruthFile), Path.Combine(full, GroundTruthFile) }.FirstOrDefault(File.Exists)
            ?? throw new DatasetFormatException(val, null, $"holds images but no class folders, and neither it nor '{full}' holds {GroundTruthFile}.");
        var truth = ReadGroundTruth(truthPath, wnids.Count);
        var images = Images(val);
        var missing = images.Where(f => !truth.ContainsKey(Path.GetFileName(f))).Take(3).ToList();
        if (missing.Count > 0)
        {
            throw new DatasetFormatException(truthPath, null, $"has no label for {string.Join(", ", missing.Select(Path.GetFileName))}.");
        }

        return new ImageFileSource(images, [.. images.Select(f => truth[Path.GetFileName(f)])], wnids, transform);
    }

    /// <summary>
    /// The paper's ImageNet protocol over <paramref name="root"/>: the cache images are the training set, or a seeded class-balanced
    /// subset of <paramref name="perClass"/> images per class (Orhan used 275; <see cref="ImageSourceSelection.ClassBalancedIndices"/>);
    /// the validation images are split at random into <see cref="ImageNetProtocol.Split"/>.First (a <paramref name="validationFraction"/>
    /// share: chooses θ, λ and the layers) and .Second (errors are reported on it). Nothing is decoded here.
    /// </summary>
    /// <param name="root">The folder holding <c>train/</c> and <c>val/</c>.</param>
    /// <param name="perClass">Training images per class in the cache; <see langword="null"/> for all.</param>
    /// <param name="seed">Seed of the subset and the split.</param>
    /// <param name="maxValidation">A seeded class-balanced subset of at most this many validation images (quick runs); <see langword="null"/> for all.</param>
    /// <param name="validationFraction">Share of the validation images that selects θ, λ and the layers.</param>
    /// <param name="transform">The image transform; torchvision's evaluation transform when <see langword="null"/>.</param>
    public static ImageNetProtocol Protocol(
        string root, int? perClass = null, int seed = 0, int? maxValidation = null, double validationFraction = 0.5, ImageNetTransform? transform = null)
    {
        var validation = Validation(root, transform);
        if (maxValidation is { } max && max < validation.Count)
        {
            validation = validation.Subset(validation.ClassBalancedIndicesAtMost(max, seed));
        }

        var train = Train(root, validation.Transform);
        var cache = perClass is { } k ? train.Subset(train.ClassBalancedIndices(k, seed)) : train;
        return new ImageNetProtocol(cache, validation, validation.SeededSplit(seed, validationFraction), train.Count);
    }

    /// <summary>Reads a ground-truth file: file name → label, every label in <c>[0, classCount)</c>.</summary>
    /// <exception cref="DatasetFormatException">A malformed line or a label out of range; the message names the line.</exception>
    public static IReadOnlyDictionary<string, int> ReadGroundTruth(string path, int classCount)
    {
        var result = new Dictionary<string, int>(StringComparer.Ordinal);
        var number = 0;
        foreach (var line in File.ReadLines(path))
        {
            number++;
            if (string.IsNullOrWhiteSpace(line))
            {
                continue;
            }

            var parts = line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            if (parts.Length != 2 || !int.TryParse(parts[1], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var label))
            {
                throw new DatasetFormatException(path, null, $"line {number} is not 'file label': '{line}'.");
            }

            if (label >= classCount)
            {
                throw new DatasetFormatException(path, null, $"line {number} gives label {label}, outside [0, {classCount}).");
            }

            result[parts[0]] = label;
        }

        return result;
    }

    private static string Root(string root)
    {
        ArgumentNullException.ThrowIfNull(root);
        var full = Path.GetFullPath(root);
        if (!Directory.Exists(full))
        {
            throw new DirectoryNotFoundException($"ImageNet folder '{full}' does not exist. {DatasetLocator.Hint}");
        }

        return full;
    }

    private static List<string> Wnids(string root)
    {
        var wnids = Path.Combine(root, WnidsFile);
        if (File.Exists(wnids))
        {
            var listed = File.ReadLines(wnids).Select(l => l.Trim()).Where(l => l.Length > 0).Select(l => l.Split(' ', 2)[0]).Order(StringComparer.Ordinal).ToList();
            var repeated = listed.GroupBy(w => w, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1);
            return listed.Count == 0 ? throw new DatasetFormatException(wnids, null, "lists no wnids.")
                : repeated is not null ? throw new DatasetFormatException(wnids, null, $"lists wnid {repeated.Key} {repeated.Count()} times.")
                : listed;
        }

        foreach (var split in new[] { "train", "val" })
        {
            var folder = Path.Combine(root, split);
            if (Directory.Exists(folder))
            {
                var names = Visible(Directory.GetDirectories(folder)).Select(d => Path.GetFileName(d)!).Order(StringComparer.Ordinal).ToList();
                if (names.Count > 0)
                {
                    return names;
                }
            }
        }

        throw new DatasetFormatException(root, null, $"has no class folders under train/ or val/ and no {WnidsFile}.");
    }

    private static (List<string> Files, List<int> Labels) ClassFolders(string folder, List<string> wnids)
    {
        var files = new List<string>();
        var labels = new List<int>();
        var folders = Visible(Directory.GetDirectories(folder)).ToDictionary(d => Path.GetFileName(d)!, StringComparer.Ordinal);
        var unknown = folders.Keys.Except(wnids, StringComparer.Ordinal).Order(StringComparer.Ordinal).Take(3).ToList();
        if (unknown.Count > 0)
        {
            var source = File.Exists(Path.Combine(Path.GetDirectoryName(folder)!, WnidsFile)) ? WnidsFile : "train/";
            throw new DatasetFormatException(folder, null, $"holds class folders {string.Join(", ", unknown)} that are not among the {wnids.Count} classes (from {source}).");
        }

        for (var label = 0; label < wnids.Count; label++)
        {
            if (!folders.TryGetValue(wnids[label], out var classFolder))
            {
                continue;
            }

            var images = Images(classFolder);
            if (images.Count == 0)
            {
                throw new DatasetFormatException(classFolder, null, $"class folder holds no images ({string.Join(", ", ImageFolder.Extensions)}).");
            }

            files.AddRange(images);
            labels.AddRange(Enumerable.Repeat(label, images.Count));
        }

        return (files, labels);
    }

    private static List<string> Images(string folder) =>
        [.. Visible(Directory.GetFiles(folder))
            .Where(f => ImageFolder.Extensions.Contains(Path.GetExtension(f), StringComparer.OrdinalIgnoreCase))
            .Order(StringComparer.Ordinal)];

    private static IEnumerable<string> Visible(IEnumerable<string> paths) => paths.Where(p => !Path.GetFileName(p).StartsWith('.'));
}

/// <summary>The images of one ImageNet Table 1 row (<see cref="ImageNetFolder.Protocol"/>).</summary>
/// <param name="Cache">The training images whose keys form the cache (all, or the per-class subset).</param>
/// <param name="Validation">The validation images.</param>
/// <param name="Split">Indices into <paramref name="Validation"/>: First selects θ, λ and the layers, Second is reported on.</param>
/// <param name="TrainCount">Training images in the folder, before any subset.</param>
public sealed record ImageNetProtocol(ImageFileSource Cache, ImageFileSource Validation, DatasetSplit Split, int TrainCount);
