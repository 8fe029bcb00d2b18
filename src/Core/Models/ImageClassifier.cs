using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Models;

/// <summary>
/// An image classifier whose named submodules can be tapped for cache keys. Subclasses are TorchSharp modules
/// (<c>Module&lt;Tensor, Tensor&gt;</c>) whose state-dict names match the checkpoints they load.
/// </summary>
/// <remarks>
/// Callers use <see cref="Logits"/>; the module override that computes it is TorchSharp plumbing. Forward hooks registered on
/// submodules fire during <see cref="Logits"/> because every submodule is invoked through TorchSharp's <c>call</c>.
/// Instances are not thread-safe: one forward pass at a time.
/// </remarks>
public abstract class ImageClassifier : nn.Module<Tensor, Tensor>
{
    /// <summary>Creates the module with its TorchSharp display name.</summary>
    protected ImageClassifier(string name)
        : base(name)
    {
    }

    /// <summary>Number of classes C (the width of <see cref="Logits"/>).</summary>
    public abstract int ClassCount { get; }

    /// <summary>Name of the parameter-free module whose output is the pooled penultimate representation (e.g. <c>avgpool</c>).</summary>
    public abstract string PooledFeaturesLayer { get; }

    /// <summary>
    /// The outputs of the network's residual blocks (or other repeated units) in forward order, the candidate layers a cache
    /// searches near the output; <see langword="null"/> when the names follow the ResNet convention <c>layerS.i</c>.
    /// </summary>
    public virtual IReadOnlyList<string>? BlockOutputs => null;

    /// <summary>
    /// The module name a caller's layer reference stands for: the name itself here; architectures with another way of addressing
    /// layers (a Keras model's <c>model.layers</c> index) override it.
    /// </summary>
    /// <exception cref="ArgumentException">The reference is of the architecture's other kind but invalid (e.g. an index out of range).</exception>
    public virtual string ResolveLayer(string layer)
    {
        ArgumentNullException.ThrowIfNull(layer);
        return layer.Trim();
    }

    /// <summary>
    /// Class logits <c>[b, ClassCount]</c> for normalised images <c>[b, C, H, W]</c> (float32, on the model's device).
    /// The input is not disposed; the result joins the caller's dispose scope.
    /// </summary>
    public Tensor Logits(Tensor images)
    {
        ArgumentNullException.ThrowIfNull(images);
        return call(images);
    }

    /// <summary>The device the parameters live on (CPU for a parameterless model).</summary>
    public Device ParameterDevice => TorchDevices.ParameterDevice(this);
}
