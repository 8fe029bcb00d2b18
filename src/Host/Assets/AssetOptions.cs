namespace ScalableCache.Host.Assets;

/// <summary>Where data sets and checkpoints are looked for (configuration section <c>Assets</c>).</summary>
public sealed class AssetOptions
{
    /// <summary>Configuration section name.</summary>
    public const string SectionName = "Assets";

    /// <summary>CIFAR-10: the <c>cifar-10-batches-bin</c> folder or a folder above it. Relative paths are from the working directory.
    /// <c>--data</c> and the <c>SCACHE_DATA</c> environment variable take precedence.</summary>
    public string Cifar10 { get; set; } = "../shared/data/cifar10";

    /// <summary>CIFAR-100: the <c>cifar-100-binary</c> folder or a folder above it (<c>--data</c> and <c>SCACHE_CIFAR100</c> take precedence).
    /// A <c>pixel-stats.safetensors</c> beside <c>cifar-100-binary</c> gives the per-pixel statistics when the training set is a subset.</summary>
    public string Cifar100 { get; set; } = "../shared/data/cifar100";

    /// <summary>Folder holding the paper author's Keras models under their published file names (<c>cifar10_ResNet20v1_model.178.h5</c>, …).</summary>
    public string KerasModels { get; set; } = "../shared/models/orhan-keras";

    /// <summary>Folder searched for checkpoints named after the model (<c>resnet20.safetensors</c>, <c>resnet20-*.th</c>, …).
    /// <c>--weights</c> and the <c>SCACHE_MODELS</c> environment variable take precedence.</summary>
    public string Models { get; set; } = "../shared/models/cifar10";

    /// <summary>Where downloaded checkpoints are kept; empty = <c>~/.cache/scalablecache</c>.</summary>
    public string DownloadCache { get; set; } = string.Empty;

    /// <summary>Whether a checkpoint missing on disk may be downloaded from its canonical URL (and SHA-256 checked).</summary>
    public bool AllowDownload { get; set; } = true;
}
