using Microsoft.Extensions.Configuration;
using System.Text.Json;
using ScalableCache.Host;
using ScalableCache.Host.Cli;
using Xunit;
using static ScalableCache.Tests.CliTestSupport;

namespace ScalableCache.Tests;

public sealed class CliTests
{
    [Fact]
    public async Task ProvidersListsEveryBackendAndTheConfiguredOne()
    {
        var (code, stdout, _) = await Run(null, "providers", "--json");
        Assert.Equal(ExitCodes.Success, code);
        var json = SingleJsonObject(stdout);
        var registered = json.GetProperty("registered").EnumerateArray().Select(e => e.GetString()).ToList();
        Assert.Equal(["Exact", "Hnsw", "Orleans", "RandomProjection"], registered.Order());
        Assert.Equal("Exact", json.GetProperty("selected").GetString());

        // Configuration picks the provider; a flag overrides configuration.
        var (_, fromConfig, _) = await Run(new Dictionary<string, string?> { ["Cache:Provider"] = "hnsw" }, "providers", "--json");
        Assert.Equal("Hnsw", SingleJsonObject(fromConfig).GetProperty("selected").GetString());
        var (_, fromFlag, _) = await Run(new Dictionary<string, string?> { ["Cache:Provider"] = "Hnsw" }, "providers", "--json", "--provider", "RandomProjection");
        Assert.Equal("RandomProjection", SingleJsonObject(fromFlag).GetProperty("selected").GetString());
    }

    [Fact]
    public async Task UnknownProviderFailsAtStartUpListingTheRegisteredOnes()
    {
        var (code, stdout, stderr) = await Run(null, "providers", "--json", "--provider", "Bogus");
        Assert.Equal(ExitCodes.Configuration, code);
        var json = SingleJsonObject(stdout);
        Assert.Equal("Configuration", json.GetProperty("exitName").GetString());
        Assert.Contains("Bogus", json.GetProperty("error").GetString());
        Assert.Contains("Exact, Hnsw, RandomProjection", stderr);
    }

    [Fact]
    public async Task InvalidProviderOptionsFailAtStartUp()
    {
        var (code, stdout, _) = await Run(new Dictionary<string, string?> { ["Cache:Exact:KeyBlockSize"] = "0" }, "providers", "--json");
        Assert.Equal(ExitCodes.Configuration, code);
        Assert.Contains("KeyBlockSize", SingleJsonObject(stdout).GetProperty("error").GetString());
    }

    [Fact]
    public async Task UnknownCommandOrOptionIsAUsageError()
    {
        Assert.Equal(ExitCodes.Usage, (await Run(null, "no-such-command")).Code);
        var (code, stdout, _) = await Run(null, "providers", "--json", "--no-such-flag");
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Equal("Usage", SingleJsonObject(stdout).GetProperty("exitName").GetString());
        Assert.Equal(ExitCodes.Usage, (await Run(null, "providers", "--set", "NoEquals")).Code);
    }

    [Fact]
    public async Task CudaInTheCpuBuildIsAClearError()
    {
        if (TorchSharp.torch.cuda.is_available())
        {
            Assert.Skip("CUDA is available here: this test covers the CPU-only build.");
        }

        var (code, stdout, _) = await Run(null, "info", "--json", "--device", "cuda");
        Assert.Equal(ExitCodes.DeviceUnavailable, code);
        var error = SingleJsonObject(stdout).GetProperty("error").GetString();
        Assert.Contains("libtorch-cpu-linux-x64", error);
        Assert.Contains("CUDA", error);
    }

    [Fact]
    public async Task LayersListsModulesWithShapesInForwardOrder()
    {
        var (code, stdout, _) = await Run(null, "layers", "--model", "resnet20", "--json");
        Assert.Equal(ExitCodes.Success, code);
        var layers = SingleJsonObject(stdout).GetProperty("layers").EnumerateArray()
            .ToDictionary(l => l.GetProperty("name").GetString()!, l => l.GetProperty("shape").EnumerateArray().Select(d => d.GetInt64()).ToArray());
        Assert.Equal([16L, 32, 32], layers["conv1"]);
        Assert.Equal([64L, 8, 8], layers["layer3.2"]);
        Assert.Equal([64L, 1, 1], layers["avgpool"]);
        Assert.Equal([10L], layers["linear"]);
        var names = layers.Keys.ToList();
        Assert.True(names.IndexOf("layer1.0") < names.IndexOf("layer2.0") && names.IndexOf("layer3.2") < names.IndexOf("avgpool"));
    }

    [Fact]
    public async Task MissingDataAndWeightsAreNotFoundWithAHint()
    {
        var (code, stdout, _) = await Run(null, "baseline", "--json", "--data", "/nonexistent/cifar", "--weights", Path.Combine(SharedData.Models, "resnet20.safetensors"));
        Assert.Equal(ExitCodes.NotFound, code);
        Assert.Contains("SCACHE_DATA", SingleJsonObject(stdout).GetProperty("error").GetString());

        var (code2, stdout2, _) = await Run(null, "baseline", "--json", "--weights", "/nonexistent/resnet20.th");
        Assert.Equal(ExitCodes.NotFound, code2);
        Assert.Contains("--weights", SingleJsonObject(stdout2).GetProperty("error").GetString());
    }

    [Fact]
    public async Task CorruptCheckpointIsAnInvalidCheckpointError()
    {
        var file = Path.Combine(Path.GetTempPath(), $"scache-corrupt-{Guid.NewGuid():N}.th");
        await File.WriteAllBytesAsync(file, [0x80, 0x02, 0x8a, 0x0a, 1, 2, 3], TestContext.Current.CancellationToken);
        try
        {
            var (code, stdout, _) = await Run(null, "baseline", "--json", "--weights", file, "--data", SharedData.Cifar10);
            Assert.Equal(ExitCodes.InvalidCheckpoint, code);
            Assert.Contains(Path.GetFileName(file), SingleJsonObject(stdout).GetProperty("error").GetString());
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public async Task EvaluateRunsEndToEndOnASmallSliceAndWritesItsReport()
    {
        var output = Path.Combine(Path.GetTempPath(), $"scache-evaluate-{Guid.NewGuid():N}");
        try
        {
            var (code, stdout, stderr) = await Run(null,
                "evaluate", "--model", "resnet20", "--layers", "layer3.2,avgpool", "--max-train", "1000", "--max-test", "400",
                "--data", SharedData.Cifar10, "--weights", Path.Combine(SharedData.Models, "resnet20.safetensors"), "--out", output, "--json");
            Assert.True(code == ExitCodes.Success, stderr);
            var json = SingleJsonObject(stdout);
            foreach (var key in new[] { "baselineError", "cacheError", "cacheOnlyError", "theta", "lambda", "cacheOnlyTheta" })
            {
                Assert.InRange(json.GetProperty(key).GetDouble(), 0, 100);
            }

            Assert.Equal(["layer3.2", "avgpool"], json.GetProperty("layers").EnumerateArray().Select(e => e.GetString()));
            Assert.Equal(64 * 8 * 8 + 64, json.GetProperty("keyDimension").GetInt64());
            Assert.Equal(1000, json.GetProperty("cacheSize").GetInt64());
            Assert.Equal(0, json.GetProperty("seed").GetInt32());
            Assert.InRange(json.GetProperty("baselineError").GetDouble(), 0.02, 0.2); // ResNet-20 is ~8 % wrong
            Assert.True(File.Exists(Path.Combine(output, "report.md")));
            Assert.True(File.Exists(Path.Combine(output, "result.json")));
            Assert.True(new FileInfo(Path.Combine(output, "resnet20-theta-lambda.png")).Length > 1000);
        }
        finally
        {
            if (Directory.Exists(output))
            {
                Directory.Delete(output, recursive: true);
            }
        }
    }

    [Fact]
    public async Task CompareRetunesOneHnswGraphAndReportsResidentMemory()
    {
        var folder = Path.Combine(Path.GetTempPath(), $"scache-compare-{Guid.NewGuid():N}");
        try
        {
            var (code, stdout, stderr) = await Run(null,
            [
                "compare", "--model", "resnet20", "--layers", "layer3.2", "--max-train", "1000", "--max-test", "200", "--hnsw-search", "5:16,1000:1000",
                "--thetas", "30,60", "--lambdas", "0.5", "--data", SharedData.Cifar10, "--weights", Path.Combine(SharedData.Models, "resnet20.safetensors"),
                "--out", folder, "--json",
            ]);
            Assert.True(code == ExitCodes.Success, stderr);
            var result = SingleJsonObject(stdout).GetProperty("result");
            // Resident growth is reported (its measurement is tested alone in ProcessMemoryTests; here other tests run beside it).
            Assert.Equal(JsonValueKind.Number, result.GetProperty("exactResidentBytes").ValueKind);
            var rows = result.GetProperty("rows").EnumerateArray().ToList();
            Assert.Equal(["RandomProjection", "Hnsw", "Hnsw", "Hnsw"], rows.Select(r => r.GetProperty("provider").GetString()));
            Assert.Equal([false, false, true, true], rows.Select(r => r.GetProperty("graphReused").GetBoolean()));
            Assert.Equal([100, 5, 1000], rows.Skip(1).Select(r => r.GetProperty("topK").GetInt32()));

            // Top-k over every key with efSearch = N is exact search: the mixed model agrees with Exact everywhere.
            Assert.Equal(1.0, rows[3].GetProperty("top1Agreement").GetDouble());
            Assert.Equal(0.0, rows[3].GetProperty("errorDifferencePoints").GetDouble(), tolerance: 1e-9); // one image of 200 would be 0.5
            Assert.True(rows[2].GetProperty("meanTotalVariation").GetDouble() > rows[3].GetProperty("meanTotalVariation").GetDouble());
            Assert.Contains("same graph", File.ReadAllText(Path.Combine(folder, "report.md")));

            var (bad, badOut, _) = await Run(null, ["compare", "--hnsw-search", "50:10", "--json"]);
            Assert.Equal(ExitCodes.Usage, bad);
            Assert.Contains("50:10", SingleJsonObject(badOut).GetProperty("error").GetString());
        }
        finally
        {
            if (Directory.Exists(folder))
            {
                Directory.Delete(folder, recursive: true);
            }
        }
    }

    [Fact]
    public async Task EvaluateFromABuiltCacheFileMatchesEvaluatingFromImagesAndCorruptOrForgedFilesFailNamed()
    {
        var folder = Path.Combine(Path.GetTempPath(), $"scache-cachefile-{Guid.NewGuid():N}");
        Directory.CreateDirectory(folder);
        var file = Path.Combine(folder, "r20.scache");
        string[] common = ["--data", SharedData.Cifar10, "--weights", Path.Combine(SharedData.Models, "resnet20.safetensors"), "--json"];
        try
        {
            var (built, _, buildErr) = await Run(null, ["build", "--model", "resnet20", "--layers", "layer3.2", "--max-train", "300", "--output", file, .. common]);
            Assert.True(built == ExitCodes.Success, buildErr);

            string[] evaluate = ["evaluate", "--model", "resnet20", "--max-test", "200", "--theta", "50", "--lambda", "0.5", "--out", Path.Combine(folder, "report"), .. common];
            var (fromFile, fileOut, fileErr) = await Run(null, [.. evaluate, "--cache", file]);
            Assert.True(fromFile == ExitCodes.Success, fileErr);
            var (fromImages, imagesOut, imagesErr) = await Run(null, [.. evaluate, "--layers", "layer3.2", "--max-train", "300"]);
            Assert.True(fromImages == ExitCodes.Success, imagesErr);
            var a = SingleJsonObject(fileOut);
            var b = SingleJsonObject(imagesOut);
            Assert.Equal(300, a.GetProperty("cacheSize").GetInt64());
            Assert.Equal(b.GetProperty("cacheError").GetDouble(), a.GetProperty("cacheError").GetDouble());
            Assert.Equal(b.GetProperty("cacheOnlyError").GetDouble(), a.GetProperty("cacheOnlyError").GetDouble());

            // A flipped byte in the payload: exit code InvalidCacheFile, and the message names the file.
            var original = await File.ReadAllBytesAsync(file, TestContext.Current.CancellationToken);
            var bytes = (byte[])original.Clone();
            bytes[^40] ^= 0xFF;
            var corrupt = Path.Combine(folder, "corrupt.scache");
            await File.WriteAllBytesAsync(corrupt, bytes, TestContext.Current.CancellationToken);
            var (code, stdout, _) = await Run(null, [.. evaluate, "--cache", corrupt]);
            Assert.Equal(ExitCodes.InvalidCacheFile, code);
            Assert.Contains("corrupt.scache", SingleJsonObject(stdout).GetProperty("error").GetString());

            // Resealed forgeries (digests and checksum recomputed, see CacheFileFrames): refused before use, exit code
            // InvalidCacheFile, one JSON object naming the file and the field, no stack trace.
            (string Name, Action<CacheFileFrames> Forge, string Phrase)[] forgeries =
            [
                ("theta", f => f.ChangeHeader(h => h[13] = double.NaN), "θ must be finite and positive (got NaN)"),
                ("classes", f => f.ChangeHeader(h => h[6] = int.MaxValue), "class count 2147483647"),
                ("label", f => f.ChangeBlob(0, 0, 4, b => System.Buffers.Binary.BinaryPrimitives.WriteInt32LittleEndian(b, 10)), "Label 10 of key 0"),
                ("key", f => f.ChangeBlob(1, 0, 4, b => System.Buffers.Binary.BinaryPrimitives.WriteSingleLittleEndian(b, float.NaN)), "Key 0 has a non-finite value"),
            ];
            foreach (var (name, forge, phrase) in forgeries)
            {
                var forged = Path.Combine(folder, $"forged-{name}.scache");
                await File.WriteAllBytesAsync(forged, CacheFileFrames.Forge(original, forge), TestContext.Current.CancellationToken);
                var (forgedCode, forgedOut, forgedErr) = await Run(null, [.. evaluate, "--cache", forged]);
                Assert.True(forgedCode == ExitCodes.InvalidCacheFile, $"{name}: exit {forgedCode}; {forgedErr}");
                var json = SingleJsonObject(forgedOut);
                Assert.Equal(nameof(ExitCodes.InvalidCacheFile), json.GetProperty("exitName").GetString());
                Assert.Contains(forged, json.GetProperty("error").GetString(), StringComparison.Ordinal);
                Assert.Contains(phrase, json.GetProperty("error").GetString(), StringComparison.Ordinal);
                Assert.DoesNotContain("   at ", forgedErr, StringComparison.Ordinal);
            }

            // Another ResNet-20 checkpoint file than the one the cache was built with: rejected before any query, naming both digests.
            string[] otherWeights = [.. evaluate.Select(a => a == Path.Combine(SharedData.Models, "resnet20.safetensors") ? ModelTestSupport.ResNet20Legacy : a)];
            var (mismatch, mismatchOut, mismatchErr) = await Run(null, [.. otherWeights, "--cache", file]);
            Assert.Equal(ExitCodes.InvalidCacheFile, mismatch);
            var error = SingleJsonObject(mismatchOut).GetProperty("error").GetString();
            Assert.Contains("76ec453ddbe1e52e8866a41683890c7743e0fde6250db8df0669f4b2778e4cfc", error, StringComparison.Ordinal); // resnet20.safetensors
            Assert.Contains("12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8", error, StringComparison.Ordinal); // resnet20-12fca82f.th
            Assert.DoesNotContain("   at ", mismatchErr, StringComparison.Ordinal);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public void ConfiguredGridReplacesTheDefaultGrid()
    {
        var configuration = new Microsoft.Extensions.Configuration.ConfigurationBuilder()
            .AddInMemoryCollection(new Dictionary<string, string?> { ["GridSearch:Thetas:0"] = "100", ["GridSearch:Thetas:1"] = "150" })
            .Build();
        var services = new Microsoft.Extensions.DependencyInjection.ServiceCollection();
        services.AddScache(configuration);
        using var provider = Microsoft.Extensions.DependencyInjection.ServiceCollectionContainerBuilderExtensions.BuildServiceProvider(services);
        var grid = Microsoft.Extensions.DependencyInjection.ServiceProviderServiceExtensions
            .GetRequiredService<Microsoft.Extensions.Options.IOptions<ScalableCache.Core.GridSearchOptions>>(provider).Value;
        Assert.Equal([100.0, 150.0], grid.Thetas);
        Assert.Equal(9, grid.Lambdas.Count);
    }

    [Fact]
    public async Task SizeSweepReportsGainPerSizeIncludingTheEmptyCache()
    {
        var output = Path.Combine(Path.GetTempPath(), $"scache-size-{Guid.NewGuid():N}");
        try
        {
            var (code, stdout, stderr) = await Run(null,
                "size-sweep", "--model", "resnet20", "--layers", "layer3.2", "--max-train", "500", "--max-test", "200", "--fractions", "0,0.2,1",
                "--subset-seeds", "2", "--data", SharedData.Cifar10, "--weights", Path.Combine(SharedData.Models, "resnet20.safetensors"), "--out", output, "--json");
            Assert.True(code == ExitCodes.Success, stderr);
            var json = SingleJsonObject(stdout);
            var points = json.GetProperty("points").EnumerateArray().ToList();
            Assert.Equal(6, points.Count); // 3 sizes × 2 subset seeds
            var empty = points.Where(p => p.GetProperty("fraction").GetDouble() == 0).ToList();
            Assert.All(empty, p => Assert.Equal(0, p.GetProperty("gain").GetDouble()));
            Assert.All(points.Where(p => p.GetProperty("fraction").GetDouble() == 1), p => Assert.Equal(500, p.GetProperty("cacheSize").GetInt64()));
            Assert.All(points.Where(p => p.GetProperty("fraction").GetDouble() == 0.2), p => Assert.Equal(100, p.GetProperty("cacheSize").GetInt64()));
            Assert.Equal(3, json.GetProperty("summary").GetArrayLength());
            Assert.True(File.Exists(Path.Combine(output, "size-sweep.png")));
        }
        finally
        {
            if (Directory.Exists(output))
            {
                Directory.Delete(output, recursive: true);
            }
        }
    }
}
