namespace ScalableCache.Core.Data;

/// <summary>
/// A data set file (or image folder) is malformed: wrong length, truncated, a label out of range, an undecodable image,
/// a size mismatch. The message names the file and, where the problem belongs to one record, its zero-based row.
/// </summary>
public sealed class DatasetFormatException : Exception
{
    /// <summary>Creates the exception; the message is built from the file, the row and the problem.</summary>
    /// <param name="filePath">The offending file or folder.</param>
    /// <param name="row">Zero-based row (record or image index) within that file, or <see langword="null"/> when the problem is not one row's.</param>
    /// <param name="problem">What is wrong, as a sentence.</param>
    /// <param name="innerException">The underlying error, if any.</param>
    public DatasetFormatException(string filePath, long? row, string problem, Exception? innerException = null)
        : base(Compose(filePath, row, problem), innerException)
    {
        FilePath = filePath;
        Row = row;
    }

    /// <summary>The offending file or folder.</summary>
    public string FilePath { get; }

    /// <summary>Zero-based row (record) within <see cref="FilePath"/>, or <see langword="null"/> when the problem is not one row's.</summary>
    public long? Row { get; }

    private static string Compose(string filePath, long? row, string problem) =>
        row is { } r ? $"{filePath}: row {r} (zero-based): {problem}" : $"{filePath}: {problem}";
}
