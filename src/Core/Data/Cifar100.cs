namespace ScalableCache.Core.Data;

/// <summary>Which CIFAR-100 label becomes the data set's label.</summary>
public enum Cifar100Labels
{
    /// <summary>The 100 fine classes (the usual CIFAR-100 task).</summary>
    Fine,

    /// <summary>The 20 coarse superclasses.</summary>
    Coarse,
}

/// <summary>
/// Reader for the CIFAR-100 binary version: <c>train.bin</c> (50,000 rows) and <c>test.bin</c> (10,000 rows) of 3,074 bytes
/// (coarse label byte 0–19, fine label byte 0–99, then 3,072 pixel bytes as in CIFAR-10), with <c>fine_label_names.txt</c> and
/// <c>coarse_label_names.txt</c> naming the classes when present (otherwise the names are <c>"0"</c>, <c>"1"</c>, …).
/// Both labels of every row are validated whichever one is used.
/// </summary>
public static class Cifar100
{
    /// <summary>Name of the official binary folder.</summary>
    public const string FolderName = "cifar-100-binary";

    /// <summary>Bytes per row: coarse and fine label bytes and 3,072 pixel bytes.</summary>
    public const int RowSize = 2 + CifarBinaryReader.PixelBytes;

    /// <summary>Number of fine classes.</summary>
    public const int FineClassCount = 100;

    /// <summary>Number of coarse classes.</summary>
    public const int CoarseClassCount = 20;

    /// <summary>Rows in the official training file.</summary>
    public const int TrainRows = 50_000;

    /// <summary>Rows in the official test file.</summary>
    public const int TestRows = 10_000;

    /// <summary>The training file name.</summary>
    public const string TrainFile = "train.bin";

    /// <summary>The test file name.</summary>
    public const string TestFile = "test.bin";

    /// <summary>Fine class names, one per line.</summary>
    public const string FineNamesFile = "fine_label_names.txt";

    /// <summary>Coarse class names, one per line.</summary>
    public const string CoarseNamesFile = "coarse_label_names.txt";

    internal static IReadOnlyList<string> KnownFiles { get; } = [TrainFile, TestFile, FineNamesFile, CoarseNamesFile];

    /// <summary>The 50,000 training images. <paramref name="path"/>: see <see cref="DatasetLocator.ResolveCifar100"/>.</summary>
    public static ImageDataset LoadTrain(string? path, Cifar100Labels labels = Cifar100Labels.Fine) =>
        LoadFile(Path.Combine(DatasetLocator.ResolveCifar100(path, DatasetParts.Train), TrainFile), labels, TrainRows);

    /// <summary>The 10,000 test images. <paramref name="path"/>: see <see cref="DatasetLocator.ResolveCifar100"/>.</summary>
    public static ImageDataset LoadTest(string? path, Cifar100Labels labels = Cifar100Labels.Fine) =>
        LoadFile(Path.Combine(DatasetLocator.ResolveCifar100(path, DatasetParts.Test), TestFile), labels, TestRows);

    /// <summary>
    /// Reads one CIFAR-100 binary file. Class names come from the names file beside it when present.
    /// <paramref name="expectedRows"/> (<see langword="null"/>: any positive count) makes a short file a truncation error.
    /// </summary>
    public static ImageDataset LoadFile(string file, Cifar100Labels labels = Cifar100Labels.Fine, int? expectedRows = null)
    {
        ArgumentNullException.ThrowIfNull(file);
        if (!Enum.IsDefined(labels))
        {
            throw new ArgumentOutOfRangeException(nameof(labels), labels, "Use Fine or Coarse.");
        }

        var fine = labels == Cifar100Labels.Fine;
        var classCount = fine ? FineClassCount : CoarseClassCount;
        var namesFile = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(file)) ?? ".", fine ? FineNamesFile : CoarseNamesFile);
        var names = File.Exists(namesFile) ? CifarBinaryReader.ReadNames(namesFile, classCount) : CifarBinaryReader.NumberedNames(classCount);
        CifarBinaryReader.LabelField[] fields = [new(0, CoarseClassCount, "coarse"), new(1, FineClassCount, "fine")];
        return CifarBinaryReader.Read([file], 2, fields, fine ? 1 : 0, expectedRows, names);
    }

    internal static IReadOnlyList<string> RequiredFiles(DatasetParts parts) =>
        [.. (parts & DatasetParts.Train) != 0 ? [TrainFile] : Array.Empty<string>(), .. (parts & DatasetParts.Test) != 0 ? [TestFile] : Array.Empty<string>()];
}
