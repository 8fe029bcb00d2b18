using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Checkpoints;

/// <summary>One module of a pickled module tree: its dotted path (empty for the root) and its Python class (<c>module.Class</c>).</summary>
/// <param name="Path">Dotted module path, e.g. <c>block1.layer.0.conv1</c>.</param>
/// <param name="ClassName">The pickled class, e.g. <c>torch.nn.modules.conv.Conv2d</c> or <c>densenet.BottleneckBlock</c>.</param>
public sealed record PickledModule(string Path, string ClassName);

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

    internal Checkpoint(
        string filePath, CheckpointFormat format, Dictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string> metadata,
        IReadOnlyList<PickledModule>? modules = null)
    {
        FilePath = filePath;
        Format = format;
        _tensors = tensors;
        Metadata = metadata;
        Modules = modules ?? [];
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

    /// <summary>
    /// For a whole pickled module (<c>torch.save(model)</c>): every module of the pickled tree with its class, the root first (path
    /// empty), names with a leading <c>module.</c> stripped; empty for a state dict. <see cref="CheckpointLoader"/> checks them
    /// against the model.
    /// </summary>
    public IReadOnlyList<PickledModule> Modules { get; }

    /// <summary>Reads a checkpoint of any supported format, detected from its content.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="CheckpointException">Unknown format, truncated or corrupt file; the message names the file.</exception>
    public static Checkpoint Read(string filePath)
    {
        ArgumentException.ThrowIfNullOrEmpty(filePath);
        var format = CheckpointFormats.Detect(filePath);
        IReadOnlyList<PickledModule> modules = [];
        Dictionary<string, Tensor> tensors;
        IReadOnlyDictionary<string, string> metadata;
        switch (format)
        {
            case CheckpointFormat.Safetensors:
                (tensors, metadata) = SafetensorsReader.Read(filePath);
                break;
            case CheckpointFormat.TorchZip:
                (tensors, metadata, modules) = TorchCheckpointReader.ReadZip(filePath);
                break;
            case CheckpointFormat.TorchLegacy:
                (tensors, metadata, modules) = TorchCheckpointReader.ReadLegacy(filePath);
                break;
            case CheckpointFormat.KerasHdf5:
                (tensors, metadata) = KerasHdf5Reader.Read(filePath);
                break;
            default:
                throw new CheckpointException(filePath, $"format {format} is not readable.");
        }

        var stripped = modules.Select(m => m with { Path = Strip(m.Path.Length == 0 ? m.Path : m.Path + ".").TrimEnd('.') }).ToList();
        return new Checkpoint(filePath, format, StripPrefix(filePath, tensors), metadata, stripped);
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

    private static string Strip(string name) => name.StartsWith(DataParallelPrefix, StringComparison.Ordinal) ? name[DataParallelPrefix.Length..] : name;

    private static Dictionary<string, Tensor> StripPrefix(string filePath, Dictionary<string, Tensor> tensors)
    {
        var result = new Dictionary<string, Tensor>(tensors.Count, StringComparer.Ordinal);
        foreach (var (name, t) in tensors)
        {
            var key = Strip(name);
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
