using TorchSharp;
using TorchSharp.PyBridge;

namespace ScalableCache.Core.Checkpoints;

/// <summary>Writes a model's parameters and buffers in a format PyTorch (and <see cref="Checkpoint.Read"/>) can load.</summary>
public static class CheckpointWriter
{
    /// <summary>
    /// Saves <paramref name="model"/>'s state dict to <paramref name="filePath"/> as <see cref="CheckpointFormat.Safetensors"/> or
    /// <see cref="CheckpointFormat.TorchZip"/> (via TorchSharp.PyBridge; loadable with <c>torch.load</c> / <c>safetensors</c>).
    /// The file is written to a temporary name beside the target and then renamed.
    /// </summary>
    /// <exception cref="NotSupportedException"><see cref="CheckpointFormat.TorchLegacy"/>: the legacy format is read-only here.</exception>
    public static void Save(torch.nn.Module model, string filePath, CheckpointFormat format)
    {
        ArgumentNullException.ThrowIfNull(model);
        using var scope = torch.NewDisposeScope();
        Save(model.state_dict(), filePath, format);
    }

    /// <summary>
    /// Saves named tensors (a state dict, in its order) to <paramref name="filePath"/> as <see cref="CheckpointFormat.Safetensors"/> or
    /// <see cref="CheckpointFormat.TorchZip"/> (what <c>torch.save(state_dict)</c> writes), through a temporary name and a rename.
    /// The tensors are read, not disposed.
    /// </summary>
    /// <exception cref="NotSupportedException"><see cref="CheckpointFormat.TorchLegacy"/>: the legacy format is read-only here.</exception>
    public static void Save(IReadOnlyDictionary<string, torch.Tensor> tensors, string filePath, CheckpointFormat format)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        ArgumentException.ThrowIfNullOrEmpty(filePath);
        if (format == CheckpointFormat.TorchLegacy)
        {
            throw new NotSupportedException("The legacy (pre-zip) PyTorch format is read-only; save as Safetensors or TorchZip.");
        }

        var full = Path.GetFullPath(filePath);
        var temp = full + ".tmp-" + Guid.NewGuid().ToString("N");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write))
            {
                var dict = tensors.ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
                if (format == CheckpointFormat.Safetensors)
                {
                    Safetensors.SaveStateDict(stream, dict, leaveOpen: true);
                }
                else
                {
                    PyTorchPickler.PickleStateDict(stream, dict, leaveOpen: true);
                }
            }

            File.Move(temp, full, overwrite: true);
        }
        finally
        {
            if (File.Exists(temp))
            {
                File.Delete(temp);
            }
        }
    }
}
