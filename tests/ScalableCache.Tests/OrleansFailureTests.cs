using System.Diagnostics;
using System.Text.Json;
using ScalableCache.Exact;
using ScalableCache.Orleans;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>
/// A silo killed during a stream of queries: every query returns the full answer or fails with a
/// <see cref="CacheShardException"/> naming shards, within a bounded time; once the shard re-activates on a live silo
/// from its persisted state, queries return the full answer again.
/// </summary>
public sealed class OrleansFailureTests
{
    private const int Dim = 32;
    private const int Classes = 8;
    private const double CallTimeoutSeconds = 3;

    [Fact]
    public async Task KillingAShardsSiloDuringQueriesFailsThemNamingTheShardUntilItReactivatesWithTheFullAnswer()
    {
        await using var cluster = await OrleansTestCluster.StartAsync();
        var data = TestData.Clustered(Dim, Classes, keysPerClass: 150, queriesPerClass: 8, seed: 60, noise: 0.5);
        double[] thetas = [20, 80];
        using var keys = data.KeyTensor();
        using var labels = data.KeyLabelTensor();
        using var queries = data.QueryTensor();
        using var reference = new ExactCacheMemory(Dim, Classes);
        reference.Add(keys, labels);
        using var expected = reference.ClassLogMass(queries, thetas);
        var want = expected.data<float>().ToArray();

        using var memory = cluster.Factory(callTimeoutSeconds: CallTimeoutSeconds).CreateSharded(Dim, Classes);
        memory.Add(keys.narrow(0, 0, 700), labels.narrow(0, 0, 700));
        memory.Add(keys.narrow(0, 700, data.KeyCount - 700), labels.narrow(0, 700, data.KeyCount - 700));

        // The victim: a shard on a silo other than the primary (which holds the test cluster's membership table).
        var primary = cluster.Cluster.Silos[0].SiloAddress.ToString();
        var victim = memory.ShardStatuses().First(s => s.Silo != primary);
        var handle = cluster.Cluster.Silos.Single(h => h.SiloAddress.ToString() == victim.Silo);

        var outcomes = new List<Outcome>();
        var clock = Stopwatch.StartNew();
        TimeSpan? killedAt = null;
        var ct = TestContext.Current.CancellationToken;
        var stream = Task.Run(() =>
        {
            while (clock.Elapsed < TimeSpan.FromSeconds(120))
            {
                var start = clock.Elapsed;
                var outcome = Query(memory, queries, thetas, want, start, killedAt is not null);
                outcome = outcome with { Took = clock.Elapsed - start };
                lock (outcomes)
                {
                    outcomes.Add(outcome);
                    if (outcomes.Count(o => o.AfterKill && o.Kind == "full") >= 20)
                    {
                        return;
                    }
                }
            }
        }, ct);

        while (true)
        {
            lock (outcomes)
            {
                if (outcomes.Count >= 20 || stream.IsCompleted)
                {
                    break;
                }
            }

            await Task.Delay(10, ct);
        }

        killedAt = clock.Elapsed;
        await cluster.Cluster.KillSiloAsync(handle, ct);
        await stream;

        var afterKill = outcomes.Where(o => o.AfterKill).ToList();
        var failures = afterKill.Where(o => o.Kind == "failed").ToList();
        var firstFull = afterKill.FirstOrDefault(o => o.Kind == "full" && o.Start > (failures.LastOrDefault()?.Start ?? TimeSpan.Zero));
        var report = new
        {
            victim = victim.Shard,
            queriesBeforeKill = outcomes.Count - afterKill.Count,
            full = afterKill.Count(o => o.Kind == "full"),
            failedNamingShards = failures.Count,
            failedNamingTheVictim = failures.Count(o => o.Shards.Contains(victim.Shard)),
            wrong = outcomes.Count(o => o.Kind is "wrong" or "other"),
            longestFailureSeconds = failures.Count == 0 ? 0 : failures.Max(o => o.Took.TotalSeconds),
            recoverySeconds = firstFull is null ? double.NaN : (firstFull.Start + firstFull.Took - killedAt.Value).TotalSeconds,
            messages = failures.Select(o => o.Message).Distinct().Take(3).ToList(),
        };
        var json = JsonSerializer.Serialize(report, new JsonSerializerOptions { WriteIndented = true });
        TestContext.Current.SendDiagnosticMessage(json);
        if (Environment.GetEnvironmentVariable("SCACHE_ORLEANS_FAILURE_REPORT") is { Length: > 0 } path)
        {
            File.WriteAllText(path, json);
        }

        Assert.True(report.wrong == 0, "every query returns the full answer or fails naming shards: " + json);
        Assert.All(failures, o => Assert.NotEmpty(o.Shards));
        Assert.All(failures, o => Assert.True(o.Took < TimeSpan.FromSeconds((CallTimeoutSeconds * 3) + 10), $"a failure took {o.Took}"));
        Assert.True(report.full >= 20, "queries succeed again with the full answer after the shard re-activates: " + json);
        Assert.Equal("full", outcomes[^1].Kind);
        var moved = memory.ShardStatuses()[victim.Shard];
        Assert.NotEqual(victim.Silo, moved.Silo);
        Assert.Equal(victim.Count, moved.Count);
    }

    private static Outcome Query(OrleansCacheMemory memory, Tensor queries, double[] thetas, float[] want, TimeSpan start, bool afterKill)
    {
        try
        {
            using var answer = memory.ClassLogMass(queries, thetas);
            var got = answer.data<float>().ToArray();
            var full = got.Length == want.Length && got.Zip(want).All(p => Math.Abs(p.First - p.Second) <= 1e-5f * (1 + Math.Abs(p.Second)));
            return new Outcome(start, TimeSpan.Zero, afterKill, full ? "full" : "wrong", [], "");
        }
        catch (CacheShardException e)
        {
            return new Outcome(start, TimeSpan.Zero, afterKill, "failed", e.Shards, e.Message);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return new Outcome(start, TimeSpan.Zero, afterKill, "other", [], $"{e.GetType().Name}: {e.Message}");
        }
    }

    private sealed record Outcome(TimeSpan Start, TimeSpan Took, bool AfterKill, string Kind, int[] Shards, string Message);
}
