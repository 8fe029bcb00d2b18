namespace ScalableCache.Core.Models;

/// <summary>
/// Architectures by name. Built-ins: <c>resnet20</c>, <c>resnet32</c>, <c>resnet44</c>, <c>resnet56</c>, <c>resnet110</c> and the
/// family <c>cifar-resnet:N</c> (N blocks per stage, depth 6N+2); the torchvision ImageNet models <c>torchvision:resnet18/34/50/101/152</c>
/// and <c>torchvision:densenet121/161/169/201</c>. New architectures plug in with <see cref="Register"/> or
/// <see cref="RegisterFamily"/>.
/// </summary>
/// <remarks>Thread-safe: registration and lookup may happen concurrently.</remarks>
public interface IModelRegistry
{
    /// <summary>Registered fixed-name architectures, in registration order.</summary>
    IReadOnlyList<ModelSpec> Models { get; }

    /// <summary>Registered families, in registration order.</summary>
    IReadOnlyList<ModelFamily> Families { get; }

    /// <summary>Adds (or replaces, by case-insensitive name) an architecture.</summary>
    void Register(ModelSpec spec);

    /// <summary>Adds (or replaces, by case-insensitive prefix) a family of architectures.</summary>
    void RegisterFamily(ModelFamily family);

    /// <summary>The spec for <paramref name="name"/>: a fixed name first, then a family prefix.</summary>
    /// <exception cref="UnknownModelException">No architecture or family matches; the message lists the known names.</exception>
    /// <exception cref="ArgumentException">A family matched but rejected its parameter.</exception>
    ModelSpec Resolve(string name);

    /// <summary>Creates an untrained model in evaluation mode on the CPU.</summary>
    /// <param name="name">Registry name.</param>
    /// <param name="classCount">Number of classes; the spec's <see cref="ModelSpec.DefaultClassCount"/> when <see langword="null"/>.</param>
    ImageClassifier Create(string name, int? classCount = null);
}

/// <summary>A model name that is not registered.</summary>
public sealed class UnknownModelException(string name, IReadOnlyList<string> known)
    : ArgumentException($"Unknown model '{name}'. Known models: {(known.Count == 0 ? "(none)" : string.Join(", ", known))}.")
{
    /// <summary>The name that was asked for.</summary>
    public string Name { get; } = name;

    /// <summary>Registered names and family patterns.</summary>
    public IReadOnlyList<string> Known { get; } = known;
}
