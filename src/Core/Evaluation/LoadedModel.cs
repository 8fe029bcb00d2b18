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
        Normalization = spec.Normalization;
    }

    /// <summary>The architecture's registry entry (normalisation, input shape).</summary>
    public ModelSpec Spec { get; }

    /// <summary>The network.</summary>
    public ImageClassifier Model { get; }

    /// <summary>What was loaded from the checkpoint.</summary>
    public CheckpointLoadResult Checkpoint { get; }

    /// <summary>Where the parameters live.</summary>
    public Device Device { get; }

    /// <summary>
    /// The input normalisation the weights expect: the spec's, or the data set's per-pixel statistics given with
    /// <see cref="UseNormalization"/> (required before use when <see cref="ModelSpec.NeedsPixelStatistics"/>).
    /// </summary>
    public InputNormalization Normalization { get; private set; }

    /// <summary>Whether <see cref="Normalization"/> is still the spec's stand-in although the weights need per-pixel statistics.</summary>
    public bool NeedsStatistics => Spec.NeedsPixelStatistics && !Normalization.IsPerPixel;

    /// <summary>The shape of one input image: the network's own (a Keras model's input layer), else the spec's.</summary>
    public InputShape Input => Model is Models.Keras.KerasModel keras ? keras.Input : Spec.Input;

    /// <summary>Replaces the input normalisation (e.g. with <see cref="PixelStatistics"/> of the data set the weights were trained on).</summary>
    /// <exception cref="ArgumentException">Its channel count or per-pixel shape does not fit the network's input.</exception>
    public void UseNormalization(InputNormalization normalization)
    {
        ArgumentNullException.ThrowIfNull(normalization);
        if (normalization.Channels != Input.Channels || (normalization.PixelShape is { } shape && shape != Input))
        {
            throw new ArgumentException($"The normalisation ({normalization.Describe()}) does not fit {Input} input images.", nameof(normalization));
        }

        Normalization = normalization;
    }

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
