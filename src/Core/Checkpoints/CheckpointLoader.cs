using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Checkpoints;

/// <summary>What <see cref="CheckpointLoader"/> loaded.</summary>
/// <param name="FilePath">The checkpoint file (or its description when loaded from memory).</param>
/// <param name="Format">Its format.</param>
/// <param name="TensorCount">Parameters and buffers copied into the model.</param>
/// <param name="DefaultedBuffers">
/// BatchNorm <c>num_batches_tracked</c> counters the checkpoint lacks (checkpoints from PyTorch &lt; 0.4.1 have none); they keep
/// their initial value, which inference never reads.
/// </param>
/// <param name="Metadata">The checkpoint's scalar metadata.</param>
public sealed record CheckpointLoadResult(
    string FilePath,
    CheckpointFormat Format,
    int TensorCount,
    IReadOnlyList<string> DefaultedBuffers,
    IReadOnlyDictionary<string, string> Metadata);

/// <summary>Copies checkpoint tensors into a model after checking that names and shapes match exactly.</summary>
public static class CheckpointLoader
{
    private const string OptionalBufferSuffix = ".num_batches_tracked";

    /// <summary>Reads <paramref name="filePath"/> (any supported format) and loads it into <paramref name="model"/>.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="CheckpointException">The file cannot be read.</exception>
    /// <exception cref="CheckpointMismatchException">Names or shapes differ; lists every problem, loads nothing.</exception>
    public static CheckpointLoadResult Load(nn.Module model, string filePath)
    {
        ArgumentNullException.ThrowIfNull(model);
        using var checkpoint = Checkpoint.Read(filePath);
        return Load(model, checkpoint);
    }

    /// <summary>
    /// Loads <paramref name="checkpoint"/> into <paramref name="model"/>: every parameter and buffer of the model must be present
    /// with the same shape (BatchNorm <c>num_batches_tracked</c> may be absent), and the checkpoint may hold nothing else.
    /// All problems are reported together in one <see cref="CheckpointMismatchException"/> and then nothing is copied; a
    /// floating-point tensor holding a NaN or ±∞ fails with a <see cref="CheckpointException"/> naming it, and nothing is copied.
    /// Values are copied (converted to the model's dtype and device); the checkpoint keeps its tensors.
    /// </summary>
    /// <param name="model">The model to fill.</param>
    /// <param name="checkpoint">The tensors to copy.</param>
    /// <param name="rename">
    /// Maps each checkpoint name to the model's name first (see <see cref="Models.ModelSpec.CheckpointName"/>); names are used as they
    /// are when <see langword="null"/>. Two checkpoint names that map to one name fail as a <see cref="CheckpointException"/>.
    /// </param>
    public static CheckpointLoadResult Load(nn.Module model, Checkpoint checkpoint, Func<string, string>? rename = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(checkpoint);
        var target = model.state_dict();
        var source = Renamed(checkpoint, rename);

        var missing = new List<TensorShapeEntry>();
        var defaulted = new List<string>();
        var mismatched = new List<TensorShapeMismatch>();
        foreach (var (name, tensor) in target)
        {
            if (!source.TryGetValue(name, out var value))
            {
                if (name.EndsWith(OptionalBufferSuffix, StringComparison.Ordinal))
                {
                    defaulted.Add(name);
                }
                else
                {
                    missing.Add(new TensorShapeEntry(name, tensor.shape));
                }
            }
            else if (!tensor.shape.SequenceEqual(value.shape))
            {
                mismatched.Add(new TensorShapeMismatch(name, tensor.shape, value.shape));
            }
        }

        var moduleProblems = ModuleProblems(model, checkpoint.Modules);
        var unexpected = source
            .Where(kv => !target.ContainsKey(kv.Key))
            .Select(kv => new TensorShapeEntry(kv.Key, kv.Value.shape))
            .OrderBy(e => e.Name, StringComparer.Ordinal)
            .ToList();

        if (missing.Count > 0 || unexpected.Count > 0 || mismatched.Count > 0 || moduleProblems.Count > 0)
        {
            throw new CheckpointMismatchException(checkpoint.FilePath, model.GetName(), missing, unexpected, mismatched, moduleProblems);
        }

        var nonFinite = NonFinite(source, target.Keys);
        if (nonFinite.Count > 0)
        {
            throw new CheckpointException(
                checkpoint.FilePath,
                $"{(nonFinite.Count == 1 ? "tensor" : "tensors")} {string.Join(", ", nonFinite.Select(n => $"'{n}'"))} " +
                $"{(nonFinite.Count == 1 ? "holds" : "hold")} a non-finite value (NaN or ±∞); the file is corrupt or was saved from a diverged run. " +
                "Nothing was loaded.");
        }

        using (no_grad())
        {
            foreach (var (name, tensor) in target)
            {
                if (source.TryGetValue(name, out var value))
                {
                    tensor.copy_(value);
                }
            }
        }

        return new CheckpointLoadResult(checkpoint.FilePath, checkpoint.Format, target.Count - defaulted.Count, defaulted, checkpoint.Metadata);
    }

    private static IReadOnlyDictionary<string, Tensor> Renamed(Checkpoint checkpoint, Func<string, string>? rename)
    {
        if (rename is null)
        {
            return checkpoint.Tensors;
        }

        var result = new Dictionary<string, Tensor>(checkpoint.Tensors.Count, StringComparer.Ordinal);
        foreach (var (name, tensor) in checkpoint.Tensors)
        {
            var mapped = rename(name);
            if (!result.TryAdd(mapped, tensor))
            {
                throw new CheckpointException(checkpoint.FilePath, $"holds two tensors that both map to '{mapped}' (one is '{name}').");
            }
        }

        return result;
    }

    /// <summary>
    /// What of a pickled module tree does not fit <paramref name="model"/>: a pickled module the model lacks (with its class), and a
    /// <c>torch.nn</c> module whose class differs from the model's module at that path (e.g. a <c>Conv1d</c> where the model has a
    /// <c>Conv2d</c>). Classes of the file's own code (<c>densenet.BottleneckBlock</c>, …) are containers and are matched by their
    /// contents. Empty for a state dict.
    /// </summary>
    public static IReadOnlyList<string> ModuleProblems(nn.Module model, IReadOnlyList<PickledModule> modules)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(modules);
        if (modules.Count == 0)
        {
            return [];
        }

        const string TorchModules = "torch.nn.modules.";
        var ours = model.named_modules().ToDictionary(m => m.name, m => m.module, StringComparer.Ordinal);
        var problems = new List<string>();
        foreach (var (path, className) in modules.Where(m => m.Path.Length > 0).Select(m => (m.Path, m.ClassName)))
        {
            var shortName = className[(className.LastIndexOf('.') + 1)..];
            if (!ours.TryGetValue(path, out var module))
            {
                problems.Add($"module '{path}' ({className}) is in the file but not in the model");
            }
            else if (className.StartsWith(TorchModules, StringComparison.Ordinal) && shortName != module.GetType().Name)
            {
                problems.Add($"module '{path}' is a {className} in the file but a {module.GetType().Name} in the model");
            }
        }

        return problems;
    }

    /// <summary>The names among <paramref name="names"/> whose floating-point tensor in <paramref name="source"/> holds a NaN or ±∞.</summary>
    private static List<string> NonFinite(IReadOnlyDictionary<string, Tensor> source, IEnumerable<string> names)
    {
        using var scope = NewDisposeScope();
        return [.. names.Where(name => source.TryGetValue(name, out var value) && value.is_floating_point() && !isfinite(value).all().item<bool>())];
    }
}
