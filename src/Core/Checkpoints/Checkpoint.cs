using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Checkpoints;

/// <summary>
/// The tensors of one checkpoint file, read into CPU memory: names with a leading <c>module.</c> (from
/// <c>nn.DataParallel</c>) stripped, plus scalar metadata (safetensors <c>__metadata__</c>; the non-tensor entries of a
/// pickled checkpoint dict such as <c>best_prec1</c>, formatted invariantly).
/// </summary>
/// <remarks>
/// Owns its tensors: they are detached from any dispose scope and freed by <see cref="Dispose"/>. Not thread-safe for
/// concurrent <see cref="Dispose"/>; reads are safe.
/// </remarks>
public sealed class Checkpoint : IDisposable
{
    /// <summary>The prefix <c>nn.DataParallel</c> adds to every name; stripped on read.</summary>
    public const string DataParallelPrefix = "module.";

    private readonly Dictionary<string, Tensor> _tensors;
    private bool _disposed;

    internal Checkpoint(string filePath, CheckpointFormat format, Dictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string> metadata)
    {
        FilePath = filePath;
        Format = format;
        _tensors = tensors;
        Metadata = metadata;
    }

    /// <summary>The file read.</summary>
    public string FilePath { get; }

    /// <summary>The format detected from the file's content.</summary>
    public CheckpointFormat Format { get; }

    /// <summary>Tensors by state-dict name, on the CPU, owned by this object.</summary>
    public IReadOnlyDictionary<string, Tensor> Tensors
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _tensors;
        }
    }

    /// <summary>Scalar metadata stored beside the tensors.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Reads a checkpoint of any supported format, detected from its content.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="CheckpointException">Unknown format, truncated or corrupt file; the message names the file.</exception>
    public static Checkpoint Read(string filePath)
    {
        ArgumentException.ThrowIfNullOrEmpty(filePath);
        var format = CheckpointFormats.Detect(filePath);
        var (tensors, metadata) = format switch
        {
            CheckpointFormat.Safetensors => SafetensorsReader.Read(filePath),
            CheckpointFormat.TorchZip => TorchCheckpointReader.ReadZip(filePath),
            CheckpointFormat.TorchLegacy => TorchCheckpointReader.ReadLegacy(filePath),
            CheckpointFormat.KerasHdf5 => KerasHdf5Reader.Read(filePath),
            _ => throw new CheckpointException(filePath, $"format {format} is not readable."),
        };

        return new Checkpoint(filePath, format, StripPrefix(filePath, tensors), metadata);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        foreach (var t in _tensors.Values)
        {
            t.Dispose();
        }

        _tensors.Clear();
    }

    private static Dictionary<string, Tensor> StripPrefix(string filePath, Dictionary<string, Tensor> tensors)
    {
        var result = new Dictionary<string, Tensor>(tensors.Count, StringComparer.Ordinal);
        foreach (var (name, t) in tensors)
        {
            var key = name.StartsWith(DataParallelPrefix, StringComparison.Ordinal) ? name[DataParallelPrefix.Length..] : name;
            if (!result.TryAdd(key, t))
            {
                foreach (var owned in tensors.Values)
                {
                    owned.Dispose();
                }

                throw new CheckpointException(filePath, $"holds both '{key}' and '{DataParallelPrefix}{key}'; cannot strip the '{DataParallelPrefix}' prefix.");
            }
        }

        return result;
    }
}
