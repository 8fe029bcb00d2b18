namespace ScalableCache.Core.Data;

/// <summary>
/// Reader for the CIFAR-10 binary version (Krizhevsky 2009): <c>data_batch_1.bin</c> … <c>data_batch_5.bin</c> (training) and
/// <c>test_batch.bin</c>, each 10,000 rows of 3,073 bytes (1 label byte 0–9, then 1,024 red, 1,024 green and 1,024 blue bytes,
/// each plane row-major 32×32), and <c>batches.meta.txt</c> naming the classes in label order.
/// </summary>
/// <remarks>
/// Malformed files fail with a <see cref="DatasetFormatException"/> naming the file and the zero-based row (length not a multiple
/// of 3,073 bytes, fewer or more than 10,000 rows, a label above 9); a missing file fails with a <see cref="FileNotFoundException"/>.
/// </remarks>
public static class Cifar10
{
    /// <summary>Name of the official binary folder.</summary>
    public const string FolderName = "cifar-10-batches-bin";

    /// <summary>Bytes per row: 1 label byte and 3,072 pixel bytes.</summary>
    public const int RowSize = 1 + CifarBinaryReader.PixelBytes;

    /// <summary>Rows in every official batch file.</summary>
    public const int RowsPerBatch = 10_000;

    /// <summary>Number of classes.</summary>
    public const int ClassCount = 10;

    /// <summary>Image side in pixels (images are 3×32×32).</summary>
    public const int ImageSide = CifarBinaryReader.Side;

    /// <summary>The test batch file name.</summary>
    public const string TestFile = "test_batch.bin";

    /// <summary>The class-name file (one name per line, label order).</summary>
    public const string MetaFile = "batches.meta.txt";

    /// <summary>The training batch file names, in order.</summary>
    public static IReadOnlyList<string> TrainFiles { get; } =
        ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];

    /// <summary>The official class names, used when <see cref="MetaFile"/> is absent.</summary>
    public static IReadOnlyList<string> DefaultClassNames { get; } =
        ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

    internal static IReadOnlyList<string> KnownFiles { get; } = [.. TrainFiles, TestFile, MetaFile];

    /// <summary>The 50,000 training images (batches 1–5 in order). <paramref name="path"/>: see <see cref="DatasetLocator.ResolveCifar10"/>.</summary>
    public static ImageDataset LoadTrain(string? path)
    {
        var folder = DatasetLocator.ResolveCifar10(path, DatasetParts.Train);
        return LoadBatches([.. TrainFiles.Select(f => Path.Combine(folder, f))], ReadClassNames(folder));
    }

    /// <summary>The 10,000 test images. <paramref name="path"/>: see <see cref="DatasetLocator.ResolveCifar10"/>.</summary>
    public static ImageDataset LoadTest(string? path)
    {
        var folder = DatasetLocator.ResolveCifar10(path, DatasetParts.Test);
        return LoadBatches([Path.Combine(folder, TestFile)], ReadClassNames(folder));
    }

    /// <summary>
    /// Reads batch files in order into one data set. <paramref name="classNames"/> defaults to <see cref="DefaultClassNames"/>;
    /// <paramref name="expectedRowsPerBatch"/> (10,000 for official files; <see langword="null"/> accepts any positive count) makes a
    /// short file a truncation error.
    /// </summary>
    public static ImageDataset LoadBatches(
        IReadOnlyList<string> files, IReadOnlyList<string>? classNames = null, int? expectedRowsPerBatch = RowsPerBatch)
    {
        ArgumentNullException.ThrowIfNull(files);
        if (files.Count == 0)
        {
            throw new ArgumentException("No batch files given.", nameof(files));
        }

        var names = (classNames ?? DefaultClassNames).ToArray();
        if (names.Length != ClassCount)
        {
            throw new ArgumentException($"CIFAR-10 has {ClassCount} classes; {names.Length} names were given.", nameof(classNames));
        }

        return CifarBinaryReader.Read(files, 1, [new(0, ClassCount, "class")], 0, expectedRowsPerBatch, names);
    }

    /// <summary>The class names from <c>folder/batches.meta.txt</c> (ten non-blank lines), or <see cref="DefaultClassNames"/> when it is absent.</summary>
    public static IReadOnlyList<string> ReadClassNames(string folder)
    {
        ArgumentNullException.ThrowIfNull(folder);
        var meta = Path.Combine(folder, MetaFile);
        return File.Exists(meta) ? CifarBinaryReader.ReadNames(meta, ClassCount) : DefaultClassNames;
    }

    internal static IReadOnlyList<string> RequiredFiles(DatasetParts parts) =>
        [.. (parts & DatasetParts.Train) != 0 ? TrainFiles : [], .. (parts & DatasetParts.Test) != 0 ? [TestFile] : Array.Empty<string>()];
}
