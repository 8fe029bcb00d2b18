using ScalableCache.Core.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Models;

/// <summary>A model with trained weights, ready for inference, and what it was built from.</summary>
/// <param name="Model">The model, in evaluation mode, on the requested device; owned by the caller (dispose it).</param>
/// <param name="Spec">Its architecture (name, normalisation, input shape).</param>
/// <param name="Checkpoint">What was loaded.</param>
public sealed record PretrainedModel(ImageClassifier Model, ModelSpec Spec, CheckpointLoadResult Checkpoint) : IDisposable
{
    /// <summary>Disposes the model.</summary>
    public void Dispose() => Model.Dispose();
}

/// <summary>Builds registry models and loads their weights.</summary>
public static class PretrainedModels
{
    /// <summary>
    /// Creates <paramref name="modelName"/> from the registry, loads <paramref name="checkpointPath"/> (any supported format), moves
    /// it to <paramref name="device"/> (CPU when <see langword="null"/>) and puts it in evaluation mode.
    /// </summary>
    /// <param name="registry">The model registry.</param>
    /// <param name="modelName">Registry name, e.g. <c>resnet20</c> or <c>cifar-resnet:3</c>.</param>
    /// <param name="checkpointPath">Checkpoint file.</param>
    /// <param name="classCount">
    /// Number of classes; when <see langword="null"/>, read from the checkpoint's <see cref="ModelSpec.ClassifierWeight"/> (dimension 0),
    /// else the spec's default.
    /// </param>
    /// <param name="device">Target device.</param>
    /// <exception cref="UnknownModelException">The name is not registered.</exception>
    /// <exception cref="CheckpointException">The checkpoint cannot be read or does not match (see <see cref="CheckpointMismatchException"/>).</exception>
    public static PretrainedModel Load(this IModelRegistry registry, string modelName, string checkpointPath, int? classCount = null, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(registry);
        var spec = registry.Resolve(modelName);
        using var checkpoint = Checkpoint.Read(checkpointPath);
        var classes = classCount
            ?? (spec.ClassifierWeight is { } w && checkpoint.Tensors.TryGetValue(w, out var weight) && weight.dim() == 2 ? (int)weight.shape[0] : (int?)null)
            ?? spec.DefaultClassCount;

        var model = spec.Architecture is { } build ? build(checkpoint) : spec.Factory(classes);
        if (classCount is { } wanted && model.ClassCount != wanted)
        {
            model.Dispose();
            throw new CheckpointException(checkpointPath, $"describes a network with {model.ClassCount} classes, not {wanted}.");
        }

        try
        {
            var result = CheckpointLoader.Load(model, checkpoint, spec.CheckpointName);
            if (device is not null && device.type != DeviceType.CPU)
            {
                model.to(device);
            }

            model.eval();
            return new PretrainedModel(model, spec, result);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }
}
