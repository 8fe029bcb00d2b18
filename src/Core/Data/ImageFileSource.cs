namespace ScalableCache.Core.Data;

/// <summary>
/// Image files with labels, decoded and transformed on demand (<see cref="ImageNetTransform"/>): the streaming source for data sets
/// too large to hold in memory. Each <see cref="Read"/> decodes its batch in parallel on every core.
/// </summary>
/// <remarks>Thread-safe: the file list is immutable and every read decodes into its own buffers.</remarks>
public sealed class ImageFileSource : IImageSource
{
    private readonly string[] _files;
    private readonly int[] _labels;
    private readonly string[] _classNames;

    /// <summary>Creates a source over <paramref name="files"/> with one label each.</summary>
    /// <exception cref="ArgumentException">Counts differ or a label lies outside <c>[0, classNames.Count)</c>.</exception>
    public ImageFileSource(IReadOnlyList<string> files, IReadOnlyList<int> labels, IReadOnlyList<string> classNames, ImageNetTransform? transform = null)
    {
        ArgumentNullException.ThrowIfNull(files);
        ArgumentNullException.ThrowIfNull(labels);
        ArgumentNullException.ThrowIfNull(classNames);
        if (files.Count != labels.Count)
        {
            throw new ArgumentException($"{files.Count} files but {labels.Count} labels.", nameof(labels));
        }

        if (classNames.Count == 0)
        {
            throw new ArgumentException("A source needs at least one class name.", nameof(classNames));
        }

        for (var i = 0; i < labels.Count; i++)
        {
            if ((uint)labels[i] >= (uint)classNames.Count)
            {
                throw new ArgumentException($"Label {labels[i]} of '{files[i]}' lies outside [0, {classNames.Count}).", nameof(labels));
            }
        }

        _files = [.. files];
        _labels = [.. labels];
        _classNames = [.. classNames];
        Transform = transform ?? new ImageNetTransform();
    }

    /// <summary>The transform applied to every file.</summary>
    public ImageNetTransform Transform { get; }

    /// <summary>The files, in image order.</summary>
    public IReadOnlyList<string> Files => _files;

    /// <inheritdoc />
    public int Count => _files.Length;

    /// <inheritdoc />
    public Models.InputShape Shape => Transform.Output;

    /// <inheritdoc />
    public IReadOnlyList<string> ClassNames => _classNames;

    /// <inheritdoc />
    public IReadOnlyList<int> Labels => _labels;

    /// <summary>The images <paramref name="indices"/> refers to, as a new source (e.g. one half of a seeded split).</summary>
    public ImageFileSource Subset(IReadOnlyList<int> indices)
    {
        ArgumentNullException.ThrowIfNull(indices);
        return new ImageFileSource([.. indices.Select(i => _files[i])], [.. indices.Select(i => _labels[i])], _classNames, Transform);
    }

    /// <inheritdoc />
    /// <exception cref="DatasetFormatException">A file is not a decodable image; the message names it.</exception>
    public void Read(int start, int count, Span<byte> destination)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(start);
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(start + (long)count, Count, nameof(count));
        var size = Shape.Size;
        if (destination.Length < (long)count * size)
        {
            throw new ArgumentException($"The destination holds {destination.Length} bytes; {count} images need {(long)count * size}.", nameof(destination));
        }

        var images = new byte[count][];
        try
        {
            Parallel.For(0, count, i => images[i] = Transform.Apply(_files[start + i]));
        }
        catch (AggregateException e) when (e.InnerExceptions.OfType<DatasetFormatException>().FirstOrDefault() is { } bad)
        {
            // The file's own error (naming it), not the parallel loop's wrapper.
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(bad);
        }

        for (var i = 0; i < count; i++)
        {
            images[i].CopyTo(destination.Slice(i * size, size));
        }
    }
}
