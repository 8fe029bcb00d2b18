using System.Text.Json;
using ScalableCache.Orleans;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>
/// A persisted cache: checkpoints as cache files beside a manifest, parts of later adds on disk, restore after a full
/// restart of the cluster, and a damaged shard file that stops the restore naming the shard.
/// </summary>
public sealed class OrleansPersistenceTests
{
    private const int Dim = 24;

    [Fact]
    public async Task AClusterRestartedFromTheManifestAnswersAsBeforeAndADamagedShardFileStopsTheRestoreNamingTheShard()
    {
        var folder = Directory.CreateTempSubdirectory("scache-orleans-persist-").FullName;
        try
        {
            var data = TestData.Clustered(Dim, 5, keysPerClass: 40, queriesPerClass: 3, seed: 50, noise: 0.4);
            var cacheId = "persisted-" + Guid.NewGuid().ToString("N");
            double[] thetas = [10, 60];
            float[] before;
            await using (var cluster = await OrleansTestCluster.StartAsync(stateDirectory: folder))
            {
                using var memory = cluster.Factory().CreateSharded(Dim, 5, cacheId);
                using var keys = data.KeyTensor();
                using var labels = data.KeyLabelTensor();
                memory.Add(keys.narrow(0, 0, 120), labels.narrow(0, 0, 120));
                memory.Add(keys.narrow(0, 120, 50), labels.narrow(0, 120, 50));
                memory.Checkpoint();
                memory.Add(keys.narrow(0, 170, 30), labels.narrow(0, 170, 30)); // after the checkpoint: only its parts are on disk
                using var queries = data.QueryTensor();
                using var answer = memory.ClassLogMass(queries, thetas);
                before = answer.data<float>().ToArray();

                var manifest = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(folder, cacheId, "manifest.json"))).RootElement;
                Assert.Equal("Orleans", manifest.GetProperty("Provider").GetString());
                Assert.Equal("Exact", manifest.GetProperty("Inner").GetString());
                Assert.Equal(3, manifest.GetProperty("Shards").GetInt32());
                Assert.Equal(3, manifest.GetProperty("Version").GetInt64());
                var checkpoints = manifest.GetProperty("Checkpoints").EnumerateArray().ToList();
                Assert.Equal([0, 1, 2], checkpoints.Select(c => c.GetProperty("Shard").GetInt32()));
                Assert.All(checkpoints, c => Assert.Equal(2, c.GetProperty("Version").GetInt64()));
                Assert.All(checkpoints, c => Assert.Equal(64, c.GetProperty("Sha256").GetString()!.Length));
                Assert.All(checkpoints, c => Assert.True(File.Exists(Path.Combine(folder, cacheId, c.GetProperty("File").GetString()!))));
                Assert.Equal(3, Directory.EnumerateFiles(Path.Combine(folder, cacheId), "part-*.bin", SearchOption.AllDirectories).Count());
            }

            // A full restart: new silos, the same folder. Open restores every shard and checks it against the manifest.
            await using (var cluster = await OrleansTestCluster.StartAsync(stateDirectory: folder))
            {
                using var memory = OrleansCacheMemory.Open(cluster.Client, cacheId);
                Assert.Equal(3, memory.Version);
                Assert.Equal(data.KeyCount, memory.Count);
                using var queries = data.QueryTensor();
                using var answer = memory.ClassLogMass(queries, thetas);
                var after = answer.data<float>().ToArray();
                Assert.Equal(before.Length, after.Length);
                Assert.All(Enumerable.Range(0, before.Length), i => Assert.True(Math.Abs(before[i] - after[i]) <= 1e-5f, $"element {i}: {before[i]} then {after[i]}"));
            }

            // Damage shard 1's checkpoint: the restore stops with an error naming shard 1 and its file.
            var file = Directory.EnumerateFiles(Path.Combine(folder, cacheId, "shard-001"), "checkpoint-*.scache").Single();
            var bytes = File.ReadAllBytes(file);
            bytes[bytes.Length / 2] ^= 0x5A;
            File.WriteAllBytes(file, bytes);
            await using (var cluster = await OrleansTestCluster.StartAsync(stateDirectory: folder))
            {
                var e = Assert.Throws<CacheShardException>(() => OrleansCacheMemory.Open(cluster.Client, cacheId));
                Assert.Equal([1], e.Shards);
                Assert.Contains("shard 1", e.Message, StringComparison.Ordinal);
                Assert.Contains("SHA-256", e.Message, StringComparison.Ordinal);
                Assert.Contains(Path.GetFileName(file), e.Message, StringComparison.Ordinal);
            }
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
