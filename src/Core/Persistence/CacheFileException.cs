namespace ScalableCache.Core.Persistence;

/// <summary>What is wrong with a cache file.</summary>
public enum CacheFileProblem
{
    /// <summary>The file does not start with the cache-file signature, or its header's magic is wrong.</summary>
    NotACacheFile,

    /// <summary>The file ends before its trailer.</summary>
    Truncated,

    /// <summary>A record's SHA-256, or the checksum over the whole payload, does not match: the bytes were changed.</summary>
    ChecksumMismatch,

    /// <summary>The file needs a newer reader than this build (its minimum reader version is above <see cref="CacheFile.FormatVersion"/>).</summary>
    UnsupportedVersion,

    /// <summary>The file's provider (or a nested one) is not registered, or cannot restore saved states.</summary>
    UnknownProvider,

    /// <summary>The header and payload contradict each other (count, dimension, lengths, labels), or the structure is malformed.</summary>
    Inconsistent,

    /// <summary>
    /// The file is sound but does not fit what it is loaded with: another model or checkpoint, another class count, or a key width
    /// the backbone's layers do not produce.
    /// </summary>
    Mismatch,
}

/// <summary>A cache file cannot be read: names the file and what is wrong with it.</summary>
public sealed class CacheFileException : IOException
{
    /// <summary>Creates the exception; the message is "<c>Cache file 'PATH': DETAIL</c>".</summary>
    public CacheFileException(string path, CacheFileProblem problem, string detail, Exception? innerException = null)
        : base($"Cache file '{path}': {detail}", innerException)
    {
        FilePath = path;
        Problem = problem;
        Detail = detail;
    }

    /// <summary>The file.</summary>
    public string FilePath { get; }

    /// <summary>The kind of problem.</summary>
    public CacheFileProblem Problem { get; }

    /// <summary>The problem in words, without the path.</summary>
    public string Detail { get; }
}
