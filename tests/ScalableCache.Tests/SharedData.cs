namespace ScalableCache.Tests;

/// <summary>Locates the read-only <c>shared/</c> folder (data sets, checkpoints) that sits beside the repository.</summary>
internal static class SharedData
{
    /// <summary>The shared folder: <c>SCACHE_SHARED</c> if set, else <c>../shared</c> relative to the repository root.</summary>
    public static string Root { get; } = FindRoot();

    public static string Cifar10 => Path.Combine(Root, "data", "cifar10", "cifar-10-batches-bin");

    public static string Models => Path.Combine(Root, "models", "cifar10");

    public static string KerasModels => Path.Combine(Root, "models", "orhan-keras");

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
