using System.Text.Json;
using ScalableCache.Core.Persistence;
using ScalableCache.Exact;
using ScalableCache.Host;
using ScalableCache.Host.Cli;
using Xunit;
using static ScalableCache.Tests.PersistenceTestSupport;

namespace ScalableCache.Tests;

/// <summary><c>scache build</c>: required options, and a real (small) build that loads back.</summary>
public sealed class PersistenceBuildCommandTests
{
    private static async Task<(int Code, JsonElement Json, string Stderr)> Run(params string[] args)
    {
        using var stdout = new StringWriter();
        using var stderr = new StringWriter();
        var code = await ScacheApplication.RunAsync(args, stdout, stderr, null);
        using var doc = JsonDocument.Parse(stdout.ToString());
        return (code, doc.RootElement.Clone(), stderr.ToString());
    }

    [Fact]
    public async Task LayersAndOutputAreRequired()
    {
        using var folder = new PersistenceTempFolder();
        var (code, json, _) = await Run("build", "--json", "--output", folder.File("x.scache"));
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains("--layers is required", json.GetProperty("error").GetString(), StringComparison.Ordinal);

        (code, json, _) = await Run("build", "--json", "--layers", "avgpool");
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains("--output is required", json.GetProperty("error").GetString(), StringComparison.Ordinal);

        (code, json, _) = await Run("build", "--json", "--layers", "avgpool", "--output", folder.File("x.scache"), "--theta", "30");
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Empty(Directory.GetFiles(folder.Path));
    }

    [Fact]
    public async Task BuildWritesACacheFileThatLoadsBack()
    {
        using var folder = new PersistenceTempFolder();
        var file = folder.File(Path.Combine("out", "resnet20.scache"));
        var (code, json, stderr) = await Run(
            "build", "--model", "resnet20", "--layers", "avgpool", "--max-train", "200", "--data", SharedData.Cifar10,
            "--weights", Path.Combine(SharedData.Models, "resnet20.safetensors"), "--output", file, "--theta", "30", "--lambda", "0.4", "--json");
        Assert.True(code == ExitCodes.Success, stderr);
        Assert.Equal(Path.GetFullPath(file), json.GetProperty("path").GetString());
        Assert.Equal(new FileInfo(file).Length, json.GetProperty("sizeBytes").GetInt64());
        Assert.Equal(200, json.GetProperty("count").GetInt64());
        Assert.Equal(64, json.GetProperty("dimension").GetInt32());
        Assert.Equal("Exact", json.GetProperty("provider").GetString());
        Assert.True(json.GetProperty("seconds").GetDouble() > 0);

        var (header, memory) = Load(file, [new ExactCacheMemoryFactory(new ExactCacheOptions())]);
        using (memory)
        {
            Assert.Equal((200L, 64, 10), (memory.Count, memory.Dimension, memory.ClassCount));
        }

        Assert.Equal("resnet20", header.Model.Name);
        Assert.Equal("resnet20.safetensors", header.Model.CheckpointFile);
        Assert.Matches("^[0-9a-f]{64}$", header.Model.CheckpointSha256);
        Assert.Equal(["avgpool"], header.Layers);
        Assert.False(header.Flip);
        Assert.Equal((30.0, 0.4), (header.Theta, header.Lambda));
        Assert.Contains("mean [0.485, 0.456, 0.406]", header.Normalization, StringComparison.Ordinal);
        Assert.Equal("200", header.Metadata["maxTrain"]);
        Assert.InRange(header.CreatedUtc, DateTime.UtcNow.AddMinutes(-10), DateTime.UtcNow.AddMinutes(1));
    }
}
