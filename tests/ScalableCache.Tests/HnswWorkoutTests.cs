using ScalableCache.Hnsw;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>Build, save, reload, identical answers; concurrent readers; invalid input fails clearly.</summary>
public sealed class HnswWorkoutTests
{
    [Fact]
    public void SavedGraphReloadsWithIdenticalAnswers()
    {
        const int classes = 7;
        var data = HnswTestData.Clustered(seed: 31, n: 900, dimension: 24, classes, clusters: 20);
        // One insert thread: a multi-threaded build's graph depends on the interleaving, and on a loaded machine it has
        // left a cluster poorly linked (recall@30 0.937 on CI), which is HNSW's approximation, not a save/restore defect.
        var factory = new HnswCacheMemoryFactory(new HnswCacheOptions { TopK = 30, Threads = 1 });
        using var original = factory.CreateHnsw(data.Dimension, classes);
        using (var keys = data.KeysTensor(0, 600))
        using (var labels = data.LabelsTensor(0, 600))
        {
            original.Add(keys, labels);
        }

        var snapshot = original.SaveGraph();
        Assert.Equal(600, snapshot.Count);
        Assert.Equal(data.Labels.Take(600).Select(l => (int)l), snapshot.Labels);
        using var restored = factory.Restore(snapshot, classes);
        Assert.Equal(original.Count, restored.Count);
        Assert.Equal(original.Dimension, restored.Dimension);
        Assert.Equal(classes, restored.ClassCount);
        Assert.Equal("Hnsw", restored.Provider);

        using var scope = NewDisposeScope();
        var q = data.QueriesTensor(data.Queries(32, 25));
        double[] thetas = [3, 30];
        Assert.Equal(original.ClassLogMass(q, thetas).data<float>().ToArray(), restored.ClassLogMass(q, thetas).data<float>().ToArray());

        // Both keep growing from the same ids; restored keys are never rebuilt.
        using (var keys = data.KeysTensor(600))
        using (var labels = data.LabelsTensor(600))
        {
            original.Add(keys, labels);
            restored.Add(keys, labels);
        }

        Assert.Equal(900, restored.Count);
        Assert.Equal(original.ClassLogMass(q, thetas).data<float>().ToArray(), restored.ClassLogMass(q, thetas).data<float>().ToArray());

        // Both must still find the exact top-k after growing.
        var queries = data.Queries(33, 25);
        foreach (var memory in new[] { original, restored })
        {
            var neighbours = ((HnswCacheMemory)memory).Neighbours(data.QueriesTensor(queries));
            var recall = neighbours.Select((n, i) => HnswTestData.TopK(data.Similarities(queries, i), 30)
                .Intersect(n.Keys.Select(k => (int)k)).Count() / 30.0).Average();
            Assert.True(recall >= 0.95, $"recall@30 after adding to the {(memory == original ? "original" : "restored")} graph: {recall:F3}");
        }
    }

    [Fact]
    public void Float32KernelMatchesUSearchsKernelAndBruteForce()
    {
        // The library's float32 distance kernel against USearch's (float64 accumulation) on the same keys, one insert thread:
        // similarities within float32 rounding of the brute-force dot products, the same neighbours, and recall alike.
        const int classes = 5, k = 20;
        var data = HnswTestData.Clustered(seed: 61, n: 700, dimension: 40, classes, clusters: 15); // 40: vector and scalar tails
        var queries = data.Queries(62, 30);
        var results = new Dictionary<HnswDistanceKernel, (ulong[] Keys, float[] Similarities)[]>();
        foreach (var kernel in new[] { HnswDistanceKernel.Native, HnswDistanceKernel.Float32 })
        {
            using var memory = (HnswCacheMemory)new HnswCacheMemoryFactory(
                new HnswCacheOptions { TopK = k, Threads = 1, DistanceKernel = kernel }).CreateHnsw(data.Dimension, classes);
            using (var keys = data.KeysTensor())
            using (var labels = data.LabelsTensor())
            {
                memory.Add(keys, labels);
            }

            Assert.Equal(kernel == HnswDistanceKernel.Native ? memory.HardwareAcceleration : "serial", memory.HardwareAcceleration);
            using var q = data.QueriesTensor(queries);
            results[kernel] = memory.Neighbours(q);
        }

        double overlap = 0;
        var recalls = new List<double>();
        for (var i = 0; i < queries.Length / data.Dimension; i++)
        {
            var similarities = data.Similarities(queries, i);
            var own = results[HnswDistanceKernel.Float32][i];
            for (var j = 0; j < own.Keys.Length; j++)
            {
                Assert.InRange(own.Similarities[j] - similarities[(int)own.Keys[j]], -2e-6, 2e-6);
            }

            overlap += own.Keys.Intersect(results[HnswDistanceKernel.Native][i].Keys).Count() / (double)k;
            recalls.Add(HnswTestData.TopK(similarities, k).Intersect(own.Keys.Select(key => (int)key)).Count() / (double)k);
        }

        // Averages over the 30 queries: a graph is approximate, and CPUs of other vector widths round the distances (so build the
        // graph) differently; here every query's recall was 1.
        var count = queries.Length / data.Dimension;
        TestContext.Current.TestOutputHelper?.WriteLine($"recall@{k}: mean {recalls.Average():F3}, lowest {recalls.Min():F3}; overlap {overlap / count:F3}");
        Assert.True(recalls.Average() >= 0.95, $"mean recall@{k} {recalls.Average():F3} with the float32 kernel");
        Assert.True(overlap / count >= 0.95, $"neighbour overlap between the kernels {overlap / count:F3}");
    }

    [Fact]
    public void RestoreTakesScalarKindFromTheGraphAndSearchSettingsFromTheFactory()
    {
        var data = HnswTestData.Clustered(seed: 41, n: 200, dimension: 16, classes: 3, clusters: 6);
        var saved = new HnswCacheMemoryFactory(new HnswCacheOptions { ScalarKind = HnswScalarKind.Float16, Threads = 1 });
        using var original = saved.CreateHnsw(data.Dimension, 3);
        using (var keys = data.KeysTensor())
        using (var labels = data.LabelsTensor())
        {
            original.Add(keys, labels);
        }

        var loader = new HnswCacheMemoryFactory(new HnswCacheOptions { TopK = 7, ExpansionSearch = 40, Threads = 2 });
        using var restored = loader.Restore(original.SaveGraph(), 3);
        Assert.Equal(HnswScalarKind.Float16, restored.Options.ScalarKind);
        Assert.Equal(7, restored.Options.TopK);
        Assert.Equal(200, restored.Count);
        Assert.True(restored.NativeMemoryBytes > 0);
    }

    [Fact]
    public void RestoreRejectsInconsistentInput()
    {
        var data = HnswTestData.Clustered(seed: 51, n: 50, dimension: 8, classes: 3, clusters: 6);
        var factory = new HnswCacheMemoryFactory(new HnswCacheOptions { Threads = 1 });
        using var memory = factory.CreateHnsw(data.Dimension, 3);
        using (var keys = data.KeysTensor())
        using (var labels = data.LabelsTensor())
        {
            memory.Add(keys, labels);
        }

        var snapshot = memory.SaveGraph();
        var fewer = Assert.Throws<ArgumentException>(() => factory.Restore(snapshot.Graph, snapshot.Labels.AsSpan(1), 3));
        Assert.Contains("50 keys but 49 labels", fewer.Message, StringComparison.Ordinal);

        var badLabels = snapshot.Labels.ToArray();
        badLabels[4] = 3;
        var outOfRange = Assert.Throws<ArgumentException>(() => factory.Restore(snapshot.Graph, badLabels, 3));
        Assert.Contains("key 4", outOfRange.Message, StringComparison.Ordinal);

        Assert.Throws<ArgumentException>(() => factory.Restore([], [], 3));
        var truncated = Assert.Throws<ArgumentException>(() => factory.Restore(snapshot.Graph.AsSpan(0, snapshot.Graph.Length / 2), snapshot.Labels, 3));
        Assert.Contains("not a complete USearch index", truncated.Message, StringComparison.Ordinal);
        var foreign = new byte[1000];
        new Random(1).NextBytes(foreign);
        Assert.Throws<ArgumentException>(() => factory.Restore(foreign, [], 3));
    }

    [Fact]
    public void InvalidKeysAndLabelsFailNamingTheRowAndAddNothing()
    {
        using var memory = HnswCacheMemory.Create(4, 3, new HnswCacheOptions { Threads = 1 });
        using var scope = NewDisposeScope();
        var good = eye(4)[..3];

        var wrongDim = Assert.Throws<ArgumentException>(() => memory.Add(ones(3, 5), zeros(3, ScalarType.Int64)));
        Assert.Contains("expected [n, 4]", wrongDim.Message, StringComparison.Ordinal);

        var nan = good.clone();
        nan[2, 1] = float.NaN;
        var nonFinite = Assert.Throws<ArgumentException>(() => memory.Add(nan, zeros(3, ScalarType.Int64)));
        Assert.Contains("Row 2", nonFinite.Message, StringComparison.Ordinal);

        var inf = good.clone();
        inf[1, 0] = float.PositiveInfinity;
        Assert.Contains("Row 1", Assert.Throws<ArgumentException>(() => memory.Add(inf, zeros(3, ScalarType.Int64))).Message, StringComparison.Ordinal);

        var labelTooLarge = Assert.Throws<ArgumentException>(() => memory.Add(good, tensor(new long[] { 0, 3, 1 })));
        Assert.Contains("Row 1 has label 3, outside [0, 3)", labelTooLarge.Message, StringComparison.Ordinal);
        var labelNegative = Assert.Throws<ArgumentException>(() => memory.Add(good, tensor(new long[] { 0, 1, -1 })));
        Assert.Contains("Row 2", labelNegative.Message, StringComparison.Ordinal);

        Assert.Throws<ArgumentException>(() => memory.Add(good, zeros(2, ScalarType.Int64)));
        Assert.Throws<ArgumentException>(() => memory.Add(good, zeros(3, ScalarType.Float32)));
        Assert.Throws<ArgumentException>(() => memory.Add(good.to_type(ScalarType.Float64), zeros(3, ScalarType.Int64)));
        Assert.Throws<ArgumentException>(() => memory.ClassLogMass(ones(2, 3), [1.0]));
        Assert.ThrowsAny<ArgumentException>(() => memory.ClassLogMass(ones(2, 4), [double.NaN]));
        Assert.ThrowsAny<ArgumentException>(() => memory.ClassLogMass(ones(2, 4), [0.0]));
        Assert.ThrowsAny<ArgumentException>(() => memory.ClassLogMass(ones(2, 4), []));
        var badQuery = ones(2, 4);
        badQuery[1, 2] = float.NaN;
        Assert.Contains("Row 1 of queries", Assert.Throws<ArgumentException>(() => memory.ClassLogMass(badQuery, [1.0])).Message, StringComparison.Ordinal);
        Assert.Equal(0, memory.Count);

        memory.Add(good, tensor(new long[] { 0, 1, 2 }));
        Assert.Equal(3, memory.Count);
    }

    [Fact]
    public void InvalidOptionsFailWithClearMessages()
    {
        var tooSmallEf = Assert.Throws<ArgumentException>(() => new HnswCacheMemoryFactory(new HnswCacheOptions { TopK = 100, ExpansionSearch = 64 }));
        Assert.Contains("ExpansionSearch (64) must be at least Cache:Hnsw:TopK (100)", tooSmallEf.Message, StringComparison.Ordinal);
        Assert.Contains("TopK must be positive", Assert.Throws<ArgumentException>(() => new HnswCacheMemoryFactory(new HnswCacheOptions { TopK = 0 })).Message, StringComparison.Ordinal);
        Assert.Contains("Connectivity", Assert.Throws<ArgumentException>(() => new HnswCacheMemoryFactory(new HnswCacheOptions { Connectivity = 1 })).Message, StringComparison.Ordinal);
        Assert.Contains("Threads", Assert.Throws<ArgumentException>(() => new HnswCacheMemoryFactory(new HnswCacheOptions { Threads = -1 })).Message, StringComparison.Ordinal);
        Assert.Contains("ExpansionAdd", Assert.Throws<ArgumentException>(() => new HnswCacheMemoryFactory(new HnswCacheOptions { ExpansionAdd = 0 })).Message, StringComparison.Ordinal);
        Assert.Contains("ScalarKind", Assert.Throws<ArgumentException>(() => new HnswCacheMemoryFactory(new HnswCacheOptions { ScalarKind = (HnswScalarKind)42 })).Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentOutOfRangeException>(() => new HnswCacheMemoryFactory(new HnswCacheOptions()).Create(0, 3));
    }

    [Fact]
    public void DisposedMemoryRefusesWork()
    {
        var memory = HnswCacheMemory.Create(4, 2, new HnswCacheOptions { Threads = 1, InitialCapacity = 10 });
        memory.Dispose();
        memory.Dispose();
        using var q = ones(1, 4);
        Assert.Throws<ObjectDisposedException>(() => memory.ClassLogMass(q, [1.0]));
        Assert.Throws<ObjectDisposedException>(() => memory.SaveGraph());
    }
}
