using System.Globalization;

namespace ScalableCache.Core.Data;

/// <summary>
/// Reads the CIFAR binary row format shared by CIFAR-10 and CIFAR-100: each row is <c>labelBytes</c> label bytes followed by
/// 3,072 pixel bytes (1,024 red, 1,024 green, 1,024 blue, each plane row-major 32×32), which is already CHW planar.
/// </summary>
internal static class CifarBinaryReader
{
    public const int Side = 32;
    public const int Channels = 3;
    public const int PixelBytes = Channels * Side * Side;

    /// <summary>One label byte of the row: which one, and how many classes it may name.</summary>
    public readonly record struct LabelField(int Offset, int ClassCount, string Name);

    /// <summary>
    /// Reads every file in order into one data set. <paramref name="labelBytes"/> is the number of leading label bytes per row;
    /// <paramref name="fields"/> are validated (all of them); <paramref name="use"/> is the field whose value becomes the label.
    /// </summary>
    public static ImageDataset Read(
        IReadOnlyList<string> files, int labelBytes, IReadOnlyList<LabelField> fields, int use, int? expectedRowsPerFile, string[] classNames)
    {
        var rowSize = labelBytes + PixelBytes;
        var rowsPerFile = new int[files.Count];
        long total = 0;
        for (var f = 0; f < files.Count; f++)
        {
            var file = files[f];

            // The length of the file a symbolic link leads to, not of the link.
            var length = InputFile.Resolve(file, "Data file", DatasetLocator.Hint).Length;
            rowsPerFile[f] = CheckLength(file, length, rowSize, expectedRowsPerFile);
            total += rowsPerFile[f];
        }

        if (total * PixelBytes > Array.MaxLength)
        {
            throw new DatasetFormatException(files[^1], null, $"{total} images do not fit in one in-memory data set.");
        }

        var pixels = new byte[total * PixelBytes];
        var labels = new int[total];
        var row = new byte[rowSize];
        var image = 0;
        for (var f = 0; f < files.Count; f++)
        {
            var file = files[f];
            using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.SequentialScan);
            for (var r = 0; r < rowsPerFile[f]; r++, image++)
            {
                var read = stream.ReadAtLeast(row, rowSize, throwOnEndOfStream: false);
                if (read < rowSize)
                {
                    throw new DatasetFormatException(
                        file, r, $"truncated: the file ended {read} bytes into this {rowSize}-byte row (it shrank while being read).");
                }

                foreach (var field in fields)
                {
                    var value = row[field.Offset];
                    if (value >= field.ClassCount)
                    {
                        throw new DatasetFormatException(
                            file, r,
                            $"{field.Name} label {value} at byte offset {((long)r * rowSize) + field.Offset} lies outside [0, {field.ClassCount}).");
                    }
                }

                labels[image] = row[fields[use].Offset];
                row.AsSpan(labelBytes, PixelBytes).CopyTo(pixels.AsSpan(image * PixelBytes, PixelBytes));
            }
        }

        return new ImageDataset(pixels, labels, Channels, Side, Side, classNames, validateLabels: false);
    }

    /// <summary>Class names from a text file, one per non-blank line (trimmed); exactly <paramref name="classCount"/> are required.</summary>
    public static string[] ReadNames(string file, int classCount)
    {
        InputFile.Resolve(file, "Class-name file", DatasetLocator.Hint);
        var names = File.ReadAllLines(file).Select(l => l.Trim()).Where(l => l.Length > 0).ToArray();
        if (names.Length != classCount)
        {
            throw new DatasetFormatException(file, null, $"names {names.Length} classes, expected {classCount} (one name per line).");
        }

        return names;
    }

    /// <summary>Class names <c>0 … n−1</c> for files without a names list.</summary>
    public static string[] NumberedNames(int classCount) =>
        [.. Enumerable.Range(0, classCount).Select(i => i.ToString(CultureInfo.InvariantCulture))];

    private static int CheckLength(string file, long length, int rowSize, int? expectedRows)
    {
        if (length % rowSize != 0)
        {
            var whole = length / rowSize;
            throw new DatasetFormatException(
                file, whole,
                $"wrong length: {length} bytes is not a multiple of the {rowSize}-byte row; this row holds only {length % rowSize} bytes " +
                "(truncated or not a CIFAR binary file).");
        }

        var rows = length / rowSize;
        if (rows == 0)
        {
            throw new DatasetFormatException(file, 0, "truncated: the file is empty.");
        }

        if (expectedRows is { } expected && rows != expected)
        {
            throw rows < expected
                ? new DatasetFormatException(file, rows, $"truncated: the file holds {rows} rows of {rowSize} bytes, expected {expected}; this row is missing.")
                : new DatasetFormatException(file, expected, $"the file holds {rows} rows of {rowSize} bytes, expected {expected}; this row is extra.");
        }

        if (rows > int.MaxValue)
        {
            throw new DatasetFormatException(file, null, $"{rows} rows are too many for one in-memory data set.");
        }

        return (int)rows;
    }
}
