using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using ScalableCache.Host.Assets;
using ScalableCache.Host;
using Xunit;
using static ScalableCache.Tests.CliTestSupport;

namespace ScalableCache.Tests;

/// <summary><c>scache layers</c> for the torchvision families, and where their checkpoints are found or fetched from.</summary>
public sealed class TorchVisionCliTests
{
    [Fact]
    public async Task LayersListsDenseNetModulesAtImageNetSize()
    {
        var (code, stdout, _) = await Run(null, "layers", "--model", "torchvision:densenet121", "--json");
        Assert.Equal(ExitCodes.Success, code);
        var root = SingleJsonObject(stdout);
        Assert.Equal("avgpool", root.GetProperty("pooledFeatures").GetString());
        var layers = root.GetProperty("layers").EnumerateArray()
            .ToDictionary(l => l.GetProperty("name").GetString()!, l => l.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ToArray());
        Assert.Equal([256L, 56, 56], layers["features.denseblock1"]);
        Assert.Equal([1024L, 7, 7], layers["features.norm5"]);
        Assert.Equal([1024L, 1, 1], layers["avgpool"]);
        Assert.Equal([1000L], layers["classifier"]);
    }

    [Fact]
    public async Task TorchVisionCheckpointIsFoundByItsPublishedFileName()
    {
        using var folder = new CheckpointTempFolder();
        var published = folder.Combine("resnet50-19c8e357.pth");
        await File.WriteAllBytesAsync(published, [1, 2, 3], TestContext.Current.CancellationToken);
        var found = await Locator(folder.Path, folder.Combine("cache")).CheckpointAsync("torchvision:resnet50", null, TestContext.Current.CancellationToken);
        Assert.Equal(published, found);
    }

    [Fact]
    public async Task MissingTorchVisionCheckpointOfflineNamesTheCanonicalFile()
    {
        using var folder = new CheckpointTempFolder();
        var error = await Assert.ThrowsAsync<FileNotFoundException>(() =>
            Locator(folder.Path, folder.Combine("cache")).CheckpointAsync("torchvision:densenet121", null, TestContext.Current.CancellationToken));
        Assert.Contains("densenet121-a639ec97.pth", error.Message);
        Assert.Contains("downloads are off", error.Message);
    }

    private static AssetLocator Locator(string models, string cache) =>
        new(Options.Create(new AssetOptions { Models = models, DownloadCache = cache, AllowDownload = false }), NullLogger<AssetLocator>.Instance);
}
