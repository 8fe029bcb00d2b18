namespace ScalableCache.Core.Persistence;

/// <summary>
/// Saves a memory with its <see cref="CacheFileHeader"/> to one file and loads it back, for any provider whose memories
/// implement <see cref="IPersistentCacheMemory"/> and whose factory implements <see cref="IPersistentCacheMemoryFactory"/>.
/// The format (versioned MessagePack, LZ4-compressed chunks, SHA-256 checks) is described in <c>CacheFileSerializer.cs</c>.
/// </summary>
/// <remarks>
/// <para><b>Saving</b> writes a temporary file next to the target and renames it over the target once complete, so a
/// failed, cancelled or interrupted save leaves a previous file untouched.</para>
/// <para><b>Loading</b> uses the provider recorded in the file (whatever <c>Cache:Provider</c> says); that provider must be
/// registered. Every problem with the file is a <see cref="CacheFileException"/> naming the file and the problem: not a
/// cache file, truncated, checksum mismatch, a version newer than this reader, an unregistered provider, or a header
/// and payload that contradict each other or exceed the format's limits. A file is untrusted input: its digests only
/// catch accidental damage, so every field is checked before it is used (see the format description).</para>
/// <para><b>Temporary files</b> of saves that were killed (<c>.NAME.RANDOM.tmp</c>) are deleted by the next save of the
/// same NAME once they are 10 minutes old and no writer holds them.</para>
/// </remarks>
public static class CacheFile
{
    /// <summary>The format version this build writes and reads.</summary>
    public const int FormatVersion = 1;

    /// <summary>The file extension <c>scache build</c> suggests.</summary>
    public const string Extension = ".scache";

    /// <summary>
    /// Writes <paramref name="memory"/> and <paramref name="header"/> to <paramref name="path"/> (replacing any file there,
    /// atomically). The header's provider, dimension, count and class count are taken from the memory (when given, they
    /// must agree with it); its creation time defaults to now. Returns the header as written.
    /// </summary>
    /// <exception cref="ArgumentException">The header is invalid or disagrees with the memory (nothing is written).</exception>
    /// <exception cref="NotSupportedException">The memory's provider cannot save its state, or the memory exceeds the format's
    /// limits (dimension 2^20, class count 2^16, a recipe's input image 2^24 values).</exception>
    public static CacheFileHeader Save(string path, CacheFileHeader header, ICacheMemory memory, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentNullException.ThrowIfNull(header);
        ArgumentNullException.ThrowIfNull(memory);
        var errors = header.Validate().ToList();
        if (header.Provider.Length > 0 && !string.Equals(header.Provider, memory.Provider, StringComparison.OrdinalIgnoreCase))
        {
            errors.Add($"The header names provider '{header.Provider}' but the memory is '{memory.Provider}'.");
        }

        if (header.Dimension != 0 && header.Dimension != memory.Dimension)
        {
            errors.Add($"The header gives dimension {header.Dimension} but the memory has {memory.Dimension}.");
        }

        if (header.ClassCount != 0 && header.ClassCount != memory.ClassCount)
        {
            errors.Add($"The header gives {header.ClassCount} classes but the memory has {memory.ClassCount}.");
        }

        if (errors.Count > 0)
        {
            throw new ArgumentException("Invalid cache file header: " + string.Join(" ", errors), nameof(header));
        }

        if (CacheFileSerializer.ClassCountProblem(memory.ClassCount) is { } classProblem)
        {
            throw new NotSupportedException($"A cache file cannot hold this '{memory.Provider}' memory: its {classProblem}.");
        }

        if (header.Recipe is { } recipe && CacheFileSerializer.InputShapeProblem(recipe.InputShape) is { } inputProblem)
        {
            throw new NotSupportedException($"A cache file cannot hold this key recipe: its {inputProblem}.");
        }

        if (memory is not IPersistentCacheMemory persistent)
        {
            throw new NotSupportedException($"The '{memory.Provider}' cache provider cannot save its memories to a file.");
        }

        var state = persistent.ExportState();
        if (!string.Equals(state.Provider, memory.Provider, StringComparison.Ordinal) || state.Dimension != memory.Dimension)
        {
            throw new InvalidOperationException(
                $"The '{memory.Provider}' memory exported a state of provider '{state.Provider}' and dimension {state.Dimension}.");
        }

        if (header.Count != 0 && header.Count != state.Count)
        {
            throw new ArgumentException($"Invalid cache file header: it gives {header.Count} keys but the memory holds {state.Count}.", nameof(header));
        }

        var written = header with
        {
            FormatVersion = FormatVersion,
            MinimumReaderVersion = FormatVersion,
            Provider = state.Provider,
            Dimension = state.Dimension,
            Count = state.Count,
            ClassCount = memory.ClassCount,
            CreatedUtc = header.CreatedUtc == default ? TruncateToMicroseconds(DateTime.UtcNow) : DateTime.SpecifyKind(header.CreatedUtc, DateTimeKind.Utc),
            Layers = [.. header.Recipe?.Layers ?? header.Layers],
            Metadata = new Dictionary<string, string>(header.Metadata, StringComparer.Ordinal),
        };
        var record = new HeaderRecord
        {
            FormatVersion = written.FormatVersion,
            MinimumReaderVersion = written.MinimumReaderVersion,
            Provider = written.Provider,
            Dimension = written.Dimension,
            Count = written.Count,
            ClassCount = written.ClassCount,
            ModelName = written.Model.Name,
            CheckpointSha256 = written.Model.CheckpointSha256?.ToLowerInvariant(),
            CheckpointFile = written.Model.CheckpointFile,
            Layers = [.. written.Layers],
            Flip = written.Flip,
            Normalization = written.Normalization,
            Theta = written.Theta,
            Lambda = written.Lambda,
            CreatedUtc = written.CreatedUtc,
            Metadata = new Dictionary<string, string>(written.Metadata, StringComparer.Ordinal),
            PayloadBytes = CacheFileSerializer.Flatten(state).Sum(b => b.Length),
            Recipe = written.Recipe is null ? null : KeyRecipeRecord.From(written.Recipe),
            State = CacheFileSerializer.ToRecord(state),
        };
        CacheFileSerializer.Write(path, record, state, cancellationToken);
        return written with { Model = written.Model with { CheckpointSha256 = record.CheckpointSha256 } };
    }

    /// <summary>
    /// Loads <paramref name="path"/>, restoring its memory with the factory <paramref name="providers"/> finds for the
    /// file's provider (nested providers too). The caller owns (and disposes) the returned memory.
    /// </summary>
    /// <exception cref="CacheFileException">The file is not a readable cache file; the message says why.</exception>
    /// <exception cref="FileNotFoundException">There is no such file.</exception>
    public static LoadedCacheFile Load(string path, CacheProviderSelector providers, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentNullException.ThrowIfNull(providers);
        return CacheFileReader.Load(path, classCount => new CacheRestoreContext(classCount, providers) { CacheFilePath = Path.GetFullPath(path) }, cancellationToken);
    }

    /// <summary>As <see cref="Load(string, CacheProviderSelector, CancellationToken)"/>, finding providers among <paramref name="factories"/>.</summary>
    public static LoadedCacheFile Load(string path, IEnumerable<ICacheMemoryFactory> factories, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentNullException.ThrowIfNull(factories);
        var list = factories.ToList();
        return CacheFileReader.Load(path, classCount => new CacheRestoreContext(classCount, list) { CacheFilePath = Path.GetFullPath(path) }, cancellationToken);
    }

    /// <summary>
    /// Reads only the header (fast: the payload is neither read nor verified, so a damaged payload shows only on
    /// <see cref="Load(string, CacheProviderSelector, CancellationToken)"/>).
    /// </summary>
    /// <exception cref="CacheFileException">The file is not a cache file, is truncated in its header, or is of a newer version.</exception>
    public static CacheFileHeader ReadHeader(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        return CacheFileReader.ReadHeader(path);
    }

    /// <summary>MessagePack timestamps keep nanoseconds; .NET ticks are 100 ns. Whole microseconds round-trip everywhere.</summary>
    private static DateTime TruncateToMicroseconds(DateTime utc) => new(utc.Ticks - (utc.Ticks % 10), DateTimeKind.Utc);
}
