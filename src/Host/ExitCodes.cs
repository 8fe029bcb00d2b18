namespace ScalableCache.Host;

/// <summary>Process exit codes of <c>scache</c>. Values are stable; scripts may rely on them.</summary>
public static class ExitCodes
{
    /// <summary>The command completed.</summary>
    public const int Success = 0;

    /// <summary>An unexpected failure (a bug, or an error not classified below).</summary>
    public const int Failure = 1;

    /// <summary>
    /// The command line could not be parsed (unknown command or option, missing or malformed value), or a value is out of range:
    /// NaN, ±∞ or a number outside the option's range, an empty list or an empty list entry. Checked before any work.
    /// </summary>
    public const int Usage = 2;

    /// <summary>
    /// Configuration is invalid: unknown cache provider, failed options validation, bad device name, a <c>--config</c> file that is
    /// not JSON, or a value (file, environment, <c>--set</c>) that does not convert to its key's type.
    /// </summary>
    public const int Configuration = 3;

    /// <summary>
    /// A data set, checkpoint, configuration or cache file was not found (and could not be downloaded): the path leads to no
    /// regular file — it is missing, a dangling symbolic link, a link loop, a directory or a special file such as a named pipe.
    /// </summary>
    public const int NotFound = 4;

    /// <summary>A data set file is malformed (wrong length, truncated, label out of range).</summary>
    public const int InvalidData = 5;

    /// <summary>A checkpoint does not fit the model (missing, unexpected or mis-shaped tensors) or cannot be read.</summary>
    public const int InvalidCheckpoint = 6;

    /// <summary>
    /// A cache file is truncated, corrupt, of an unsupported version or of another provider, or its memory log (<c>scache serve</c>) is
    /// damaged other than by a torn tail, belongs to another cache or does not continue it.
    /// </summary>
    public const int InvalidCacheFile = 7;

    /// <summary>The requested device (e.g. CUDA) is not available in this build or on this machine.</summary>
    public const int DeviceUnavailable = 8;

    /// <summary>
    /// Writing an output failed, or an output (<c>--out</c>, <c>--output</c>) cannot be written, which is checked before any work;
    /// the previous file, if any, is left intact.
    /// </summary>
    public const int OutputFailed = 9;

    /// <summary>The run was cancelled (Ctrl+C).</summary>
    public const int Cancelled = 130;

    /// <summary>The constant's name for a code, e.g. <c>NotFound</c>.</summary>
    public static string NameOf(int code) => code switch
    {
        Success => nameof(Success),
        Failure => nameof(Failure),
        Usage => nameof(Usage),
        Configuration => nameof(Configuration),
        NotFound => nameof(NotFound),
        InvalidData => nameof(InvalidData),
        InvalidCheckpoint => nameof(InvalidCheckpoint),
        InvalidCacheFile => nameof(InvalidCacheFile),
        DeviceUnavailable => nameof(DeviceUnavailable),
        OutputFailed => nameof(OutputFailed),
        Cancelled => nameof(Cancelled),
        _ => "Unknown",
    };
}
