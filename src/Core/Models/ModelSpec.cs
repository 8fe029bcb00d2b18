namespace ScalableCache.Core.Models;

/// <summary>Shape of one input image: channels, height, width.</summary>
public readonly record struct InputShape(int Channels, int Height, int Width)
{
    /// <summary>A 32×32 RGB image (CIFAR).</summary>
    public static InputShape Cifar { get; } = new(3, 32, 32);

    /// <summary>A 224×224 RGB image (ImageNet, torchvision's evaluation crop).</summary>
    public static InputShape ImageNet { get; } = new(3, 224, 224);

    /// <summary>Elements per image: <c>Channels · Height · Width</c>.</summary>
    public int Size => Channels * Height * Width;

    /// <inheritdoc />
    public override string ToString() => $"{Channels}×{Height}×{Width}";
}

/// <summary>
/// One architecture the registry can build: its name, the input normalisation its checkpoints were trained with, the input
/// shape it expects, and a factory that builds an untrained instance for a given class count.
/// </summary>
/// <param name="Name">Registry name, matched case-insensitively (e.g. <c>resnet20</c>).</param>
/// <param name="Description">One line for listings (<c>scache models</c>).</param>
/// <param name="Normalization">Input normalisation the published weights expect.</param>
/// <param name="Input">Input image shape.</param>
/// <param name="Factory">Builds a fresh model with randomly initialised weights for the given class count.</param>
public sealed record ModelSpec(
    string Name,
    string Description,
    InputNormalization Normalization,
    InputShape Input,
    Func<int, ImageClassifier> Factory)
{
    /// <summary>Class count used when the caller gives none and the checkpoint cannot tell.</summary>
    public int DefaultClassCount { get; init; } = 10;

    /// <summary>
    /// State-dict name of the classifier weight <c>[classes, features]</c>, used to infer the class count from a checkpoint
    /// (e.g. <c>linear.weight</c>); <see langword="null"/> when the architecture has none.
    /// </summary>
    public string? ClassifierWeight { get; init; }

    /// <summary>
    /// Maps a checkpoint tensor's name to the model's state-dict name before loading (e.g. DenseNet's pre-0.3 torchvision names
    /// <c>norm.1</c> → <c>norm1</c>); <see langword="null"/> when names are used as they are.
    /// </summary>
    public Func<string, string>? CheckpointName { get; init; }

    /// <summary>
    /// Builds the network from the checkpoint itself, for files that describe their architecture (a Keras <c>.h5</c> model's
    /// <c>model_config</c>); <see cref="PretrainedModels.Load"/> then uses it instead of <see cref="Factory"/>, and the class count
    /// is the network's. It throws a <see cref="Checkpoints.CheckpointException"/> when the file describes nothing it can build.
    /// </summary>
    public Func<Checkpoints.Checkpoint, ImageClassifier>? Architecture { get; init; }

    /// <summary>
    /// Whether the weights expect per-pixel statistics of the data set they were trained on (Orhan's Keras models:
    /// <see cref="PixelStatistics"/>); <see cref="Normalization"/> is then only <c>x / 255</c> and callers supply the statistics.
    /// </summary>
    public bool NeedsPixelStatistics { get; init; }
}

/// <summary>
/// A parameterised family of architectures resolved by name prefix, e.g. <c>cifar-resnet:N</c> for any blocks-per-stage N.
/// </summary>
/// <param name="Prefix">Name prefix including its separator (e.g. <c>cifar-resnet:</c>), matched case-insensitively.</param>
/// <param name="Description">One line for listings, naming the parameter (e.g. <c>cifar-resnet:N — CIFAR ResNet with N blocks per stage</c>).</param>
/// <param name="Resolve">Builds the spec for the text after the prefix, or throws <see cref="ArgumentException"/> saying what is wrong with it.</param>
public sealed record ModelFamily(string Prefix, string Description, Func<string, ModelSpec> Resolve);
