namespace ScalableCache.Tests;

/// <summary>Locates the read-only <c>shared/</c> folder (data sets, checkpoints) that sits beside the repository.</summary>
internal static class SharedData
{
    /// <summary>The shared folder: <c>SCACHE_SHARED</c> if set, else <c>../shared</c> relative to the repository root.</summary>
    public static string Root { get; } = FindRoot();

    public static string Cifar10 => Path.Combine(Root, "data", "cifar10", "cifar-10-batches-bin");

    public static string Models => Path.Combine(Root, "models", "cifar10");

    /// <summary>Golden outputs of torchvision models with closed-form weights (<c>fixtures/torchvision</c>).</summary>
    public static string TorchVisionFixtures => Path.Combine(Root, "fixtures", "torchvision");

    /// <summary>Real ImageNet JPEGs, torchvision's preprocessing of them and the ImageNet label files (<c>fixtures/imagenet</c>).</summary>
    public static string ImageNetFixtures => Path.Combine(Root, "fixtures", "imagenet");

    /// <summary>The paper author's own Keras models (<c>models/orhan-keras</c>).</summary>
    public static string KerasModels => Path.Combine(Root, "models", "orhan-keras");

    /// <summary>CIFAR-100: the test set and a training subset (<c>data/cifar100</c>).</summary>
    public static string Cifar100 => Path.Combine(Root, "data", "cifar100");

    private static string FindRoot()
    {
        var env = Environment.GetEnvironmentVariable("SCACHE_SHARED");
        if (!string.IsNullOrEmpty(env))
        {
            return env;
        }

        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "ScalableCache.sln")))
            {
                return Path.Combine(dir.Parent?.FullName ?? dir.FullName, "shared");
            }
        }

        throw new DirectoryNotFoundException("Cannot find the repository root (ScalableCache.sln) above " + AppContext.BaseDirectory);
    }
}
