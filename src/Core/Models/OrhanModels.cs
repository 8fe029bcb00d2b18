using ScalableCache.Core.Models.Keras;

namespace ScalableCache.Core.Models;

/// <summary>
/// The paper author's own settings for one of his trained Keras models (<c>eminorhan/simple-cache</c>: <c>resnet_evaluate.py</c>,
/// <c>resnet_evaluate_justmem.py</c>): the <c>model.layers</c> indices keyed on, θ and λ of the cache model and θ of the
/// cache-only model, with the paper's (seed's) Table 1 errors for comparison.
/// </summary>
/// <param name="Model">Registry name, e.g. <c>orhan-c10-resnet20</c>.</param>
/// <param name="File">The author's file name (<c>saved_models/</c>).</param>
/// <param name="DataSet"><c>cifar10</c> or <c>cifar100</c>.</param>
/// <param name="MemoryLayers">The author's <c>mem_layers</c>: indices into <c>model.layers</c>.</param>
/// <param name="Theta">θ of the cache model.</param>
/// <param name="Lambda">λ of the cache model.</param>
/// <param name="CacheOnlyTheta">θ of the cache-only model (λ = 1).</param>
/// <param name="PaperErrors">The seed's Table 1 test errors (fractions): network, cache, cache-only.</param>
public sealed record OrhanModel(
    string Model,
    string File,
    string DataSet,
    IReadOnlyList<int> MemoryLayers,
    double Theta,
    double Lambda,
    double CacheOnlyTheta,
    (double Network, double Cache, double CacheOnly) PaperErrors);

/// <summary>The author's four published Keras models and the registry entries that load any Keras <c>.h5</c> model.</summary>
public static class OrhanModels
{
    /// <summary>Registry name of a Keras <c>.h5</c> model of any architecture the file describes.</summary>
    public const string Keras = "keras";

    /// <summary>The author's models with his settings (<c>models/orhan-keras/README.md</c> of the shared assets).</summary>
    public static IReadOnlyList<OrhanModel> All { get; } =
    [
        new("orhan-c10-resnet20", "cifar10_ResNet20v1_model.178.h5", "cifar10", [49, 57, 64], 80.0, 0.5111, 74.4444, (0.0833, 0.0758, 0.1187)),
        new("orhan-c10-resnet32", "cifar10_ResNet32v1_model.150.h5", "cifar10", [82, 92, 103], 85.5556, 0.5111, 72.2222, (0.0774, 0.0701, 0.1113)),
        new("orhan-c100-resnet20", "cifar100_ResNet20v1_model.158.h5", "cifar100", [49, 57, 64], 85.5556, 0.4889, 52.2222, (0.3266, 0.2918, 0.3918)),
        new("orhan-c100-resnet32", "cifar100_ResNet32v1_model.143.h5", "cifar100", [82, 92, 103], 81.1111, 0.5111, 52.2222, (0.3294, 0.2936, 0.3840)),
    ];

    /// <summary>The author's settings for <paramref name="model"/>, or <see langword="null"/>.</summary>
    public static OrhanModel? Find(string model) => All.FirstOrDefault(m => string.Equals(m.Model, model, StringComparison.OrdinalIgnoreCase));

    /// <summary>
    /// A spec whose architecture comes from the <c>.h5</c> file (<see cref="KerasModel.FromCheckpoint"/>) and whose inputs are
    /// normalised with per-pixel statistics of the data set (<see cref="ModelSpec.NeedsPixelStatistics"/>).
    /// </summary>
    public static ModelSpec KerasSpec(string name, string description) =>
        new(name, description, new InputNormalization([0f, 0f, 0f], [1f, 1f, 1f]), InputShape.Cifar,
            _ => throw new NotSupportedException($"'{name}' is built from its .h5 file: load it with its weights (--weights FILE.h5)."))
        {
            Architecture = KerasModel.FromCheckpoint,
            NeedsPixelStatistics = true,
        };

    /// <summary>The specs this class registers: <see cref="Keras"/> and the author's four models.</summary>
    public static IEnumerable<ModelSpec> Specs()
    {
        yield return KerasSpec(Keras, "A Keras .h5 model (architecture from its model_config), per-pixel input statistics of its data set");
        foreach (var m in All)
        {
            yield return KerasSpec(m.Model, $"Orhan's Keras {m.File} ({m.DataSet}), per-pixel input statistics of {m.DataSet}");
        }
    }
}
