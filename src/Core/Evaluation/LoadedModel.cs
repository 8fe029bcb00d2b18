using ScalableCache.Core.Checkpoints;
using ScalableCache.Core.Models;
using ScalableCache.Core.Persistence;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Evaluation;

/// <summary>A registry model with its checkpoint loaded, in eval mode, on its device. Owns the module.</summary>
public sealed class LoadedModel : IDisposable
{
    private CacheModelId? _id;

    private LoadedModel(ModelSpec spec, ImageClassifier model, CheckpointLoadResult checkpoint, Device device)
    {
        Spec = spec;
        Model = model;
        Checkpoint = checkpoint;
        Device = device;
    }

    /// <summary>The architecture's registry entry (normalisation, input shape).</summary>
    public ModelSpec Spec { get; }

    /// <summary>The network.</summary>
    public ImageClassifier Model { get; }

    /// <summary>What was loaded from the checkpoint.</summary>
    public CheckpointLoadResult Checkpoint { get; }

    /// <summary>Where the parameters live.</summary>
    public Device Device { get; }

    /// <summary>The model's name with its checkpoint's SHA-256 and file name, as cache files record it (hashed on first use).</summary>
    public CacheModelId Id => _id ??= new CacheModelId(Spec.Name, CheckpointDigest.Sha256(Checkpoint.FilePath), Path.GetFileName(Checkpoint.FilePath));

    /// <summary>
    /// Builds <paramref name="name"/> from <paramref name="registry"/> and loads <paramref name="weightsPath"/> into it
    /// (<see cref="PretrainedModels.Load"/>: the class count comes from the checkpoint when not given).
    /// </summary>
    public static LoadedModel Load(IModelRegistry registry, string name, string weightsPath, Device device, int? classCount = null)
    {
        ArgumentNullException.ThrowIfNull(device);
        var pretrained = registry.Load(name, weightsPath, classCount, device);
        return new LoadedModel(pretrained.Spec, pretrained.Model, pretrained.Checkpoint, device);
    }

    /// <inheritdoc />
    public void Dispose() => Model.Dispose();
}
