using System.Text.Json;
using ScalableCache.Core;
using ScalableCache.Core.Evaluation;
using ScalableCache.Core.Persistence;
using ScalableCache.Exact;
using ScalableCache.Hnsw;
using ScalableCache.RandomProjection;
using ScalableCache.Host;
using ScalableCache.Host.Cli;
using Xunit;
using static ScalableCache.Tests.PersistenceTestSupport;

namespace ScalableCache.Tests;

/// <summary><c>scache build</c>: required options, and a real (small) build that loads back.</summary>
public sealed class PersistenceBuildCommandTests
{
    /// <summary>Runs <c>scache</c> in process: exit code, the JSON on stdout, stderr.</summary>
    internal static async Task<(int Code, JsonElement Json, string Stderr)> Run(params string[] args)
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

/// <summary><c>scache build --keys-file</c>: keys streamed chunk by chunk, a stopped build resumed, the cache file written from them.</summary>
public sealed class StreamingBuildCommandTests
{
    private static Task<(int Code, JsonElement Json, string Stderr)> Run(params string[] args) => PersistenceBuildCommandTests.Run(args);

    private static string[] Build(string keys, params string[] more) =>
    [
        "build", "--model", "resnet20", "--layers", "avgpool", "--max-train", "200", "--data", SharedData.Cifar10,
        "--weights", Path.Combine(SharedData.Models, "resnet20.safetensors"), "--keys-file", keys,
        "--set", "Cache:Exact:KeyFileRowsPerChunk=64", "--set", "Cache:Exact:StorageType=Float16", "--json", .. more,
    ];

    [Fact]
    public async Task StoppedBuildResumesFromTheLastCompleteChunkAndGivesTheSameFile()
    {
        using var folder = new PersistenceTempFolder();
        var keys = folder.File("train.skeys");
        var (code, json, stderr) = await Run(Build(keys));
        Assert.True(code == ExitCodes.Success, stderr);
        Assert.Equal(200, json.GetProperty("keys").GetInt64());
        Assert.Equal(0, json.GetProperty("resumed").GetInt64());
        Assert.Contains("images/s, ETA", stderr, StringComparison.Ordinal);
        var whole = File.ReadAllBytes(keys);
        using (var file = KeyFile.Open(keys))
        {
            Assert.Equal((200L, 64, TorchSharp.torch.ScalarType.Float16), (file.Count, file.Layout.Dimension, file.Layout.ScalarType));
            Assert.Equal([64, 64, 64, 8], file.Chunks.Select(c => c.Rows));
        }

        // A build killed during chunk 3: two complete chunks, then part of the third's contents.
        const int chunkBytes = KeyFile.PageBytes + KeyFile.PageBytes + (64 * 64 * 2 / KeyFile.PageBytes * KeyFile.PageBytes);
        File.WriteAllBytes(keys, whole[..(KeyFile.PageBytes + (2 * chunkBytes) + 5000)]);
        (code, json, stderr) = await Run(Build(keys, "--output", folder.File("train.scache")));
        Assert.True(code == ExitCodes.Success, stderr);
        Assert.Contains("resuming", stderr, StringComparison.Ordinal);
        Assert.Equal(whole, File.ReadAllBytes(keys));
        Assert.Equal(200, json.GetProperty("count").GetInt64());
        var (_, memory) = PersistenceTestSupport.Load(folder.File("train.scache"), [new ExactCacheMemoryFactory(new ExactCacheOptions())]);
        using (memory)
        {
            Assert.Equal((200L, 64, 10), (memory.Count, memory.Dimension, memory.ClassCount));
        }

        // Other arguments (another layer) must not continue this file.
        var other = Build(keys);
        other[Array.IndexOf(other, "avgpool")] = "layer3.2";
        (code, json, _) = await Run(other);
        Assert.Equal(ExitCodes.InvalidCacheFile, code);
        Assert.Contains("cannot resume", json.GetProperty("error").GetString(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("Hnsw")]
    [InlineData("RandomProjection")] // over Hnsw, 64 → 16
    public async Task OtherProvidersAreBuiltFromTheKeyFileAndAnswerAsTheSameStoreBuiltFromIt(string provider)
    {
        using var folder = new PersistenceTempFolder();
        var keys = folder.File("train.skeys");
        var cache = folder.File("train.scache");
        var (code, json, stderr) = await Run(Build(keys,
            "--output", cache, "--provider", provider, "--set", "Cache:Hnsw:Threads=1", "--set", "Cache:RandomProjection:Inner=Hnsw",
            "--set", "Cache:RandomProjection:OutputDimension=16"));
        Assert.True(code == ExitCodes.Success, stderr);
        Assert.Equal(provider, json.GetProperty("provider").GetString());
        Assert.Equal((200, 64), (json.GetProperty("count").GetInt64(), json.GetProperty("dimension").GetInt32()));
        Assert.True(json.GetProperty("timings").GetProperty("build").GetDouble() >= 0);

        var hnsw = new HnswCacheMemoryFactory(new HnswCacheOptions { Threads = 1 });
        ICacheMemoryFactory factory = provider == "Hnsw"
            ? hnsw
            : new RandomProjectionCacheMemoryFactory(new RandomProjectionCacheOptions { Inner = "Hnsw", OutputDimension = 16 }, [hnsw]);
        var (header, loaded) = PersistenceTestSupport.Load(cache, [new ExactCacheMemoryFactory(new ExactCacheOptions()), hnsw, factory]);
        using (loaded)
        using (var file = KeyFile.Open(keys))
        using (var expected = CacheEvaluation.Build(factory, file, cancellationToken: TestContext.Current.CancellationToken))
        {
            Assert.Equal((provider, 200L), (header.Provider, loaded.Count));
            if (loaded is IRandomProjectionCacheMemory rp)
            {
                Assert.Equal(("Hnsw", 16), (rp.Inner.Provider, rp.Inner.Dimension));
            }

            var queries = TestData.RandomUnitArray(5, 64, new Random(3));
            double[] thetas = [30];
            var want = PersistenceTestSupport.LogMass(expected, queries, thetas);
            var got = PersistenceTestSupport.LogMass(loaded, queries, thetas);
            if (provider == "Hnsw")
            {
                Assert.Equal(want, got); // bit for bit: the same keys inserted in the same order by one thread
            }
            else
            {
                // Bit-identical when this test runs alone; after the class's other in-process builds the CLI's store differs by up to
                // 3e-7 relative (cause not pinned down: float32 rounding in the projection, or a far key at the end of the top-100). 1e-5.
                Assert.All(want.Zip(got), p => Assert.True(p.First == p.Second || Math.Abs(p.First - p.Second) <= 1e-5 * (1 + Math.Abs(p.First)), $"{p.Second} vs {p.First}"));
            }
        }
    }

    [Fact]
    public async Task ADamagedKeyFileFailsTheBuildOfAnotherProviderWithTheCacheFileExitCode()
    {
        using var folder = new PersistenceTempFolder();
        var keys = folder.File("train.skeys");
        var (code, _, stderr) = await Run(Build(keys));
        Assert.True(code == ExitCodes.Success, stderr);
        var bytes = File.ReadAllBytes(keys);
        bytes[(3 * KeyFile.PageBytes) + 10] ^= 0x40; // a key of chunk 0 (header, chunk page, labels page, keys)
        File.WriteAllBytes(keys, bytes);

        var cache = folder.File("train.scache");
        (code, var json, _) = await Run(Build(keys, "--output", cache, "--provider", "Hnsw"));
        Assert.Equal(ExitCodes.InvalidCacheFile, code);
        var error = json.GetProperty("error").GetString();
        Assert.Contains(Path.GetFullPath(keys), error, StringComparison.Ordinal);
        Assert.Contains("checksum mismatch: the labels and keys of chunk 0", error, StringComparison.Ordinal);
        Assert.False(File.Exists(cache));
    }

    [Fact]
    public async Task TestKeysGoToAKeyFileOnly()
    {
        using var folder = new PersistenceTempFolder();
        var keys = folder.File("test.skeys");
        var test = Build(keys, "--test-keys", "--max-test", "50");
        test = [.. test.Where((_, i) => i < Array.IndexOf(test, "--max-train") || i > Array.IndexOf(test, "--max-train") + 1)];
        var (code, json, stderr) = await Run(test);
        Assert.True(code == ExitCodes.Success, stderr);
        Assert.Equal(50, json.GetProperty("keys").GetInt64());
        using (var file = KeyFile.Open(keys))
        {
            Assert.Equal(Enumerable.Repeat(5, 10), file.Labels.CountBy(l => l).OrderBy(kv => kv.Key).Select(kv => kv.Value)); // class-balanced
        }

        (code, json, _) = await Run(Build(keys, "--test-keys", "--output", folder.File("x.scache")));
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains("--test-keys writes the test images' keys", json.GetProperty("error").GetString(), StringComparison.Ordinal);
    }
}
