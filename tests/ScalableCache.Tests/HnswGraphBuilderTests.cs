using System.Buffers.Binary;
using ScalableCache.Hnsw;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>
/// The managed insertion (<see cref="HnswCacheOptions.ManagedBuild"/>) against USearch's insertion of the same keys: the
/// block it writes is USearch's layout (checked whole on load, viewed and loaded back by USearch), its graph finds as much as
/// USearch's does, and a settled graph grows through it keeping its earlier keys.
/// </summary>
public sealed class HnswGraphBuilderTests
{
    private static readonly double[] Thetas = [1, 10, 50];

    [Theory]
    [InlineData(16, 1)]
    [InlineData(16, 2)]
    [InlineData(8, 2)]
    [InlineData(12, 1)]
    public void TheManagedInsertionFindsAsMuchAsUSearchsOnTheSameKeys(int connectivity, int threads)
    {
        var data = HnswTestData.Clustered(51, 4000, 48, 10, clusters: 80);
        HnswCacheOptions Options(bool managedBuild) =>
            new() { TopK = 50, Threads = threads, Connectivity = connectivity, ManagedBuild = managedBuild };
        using var managed = HnswCacheMemoryTests.Build(data, 10, Options(true));
        using var usearch = HnswCacheMemoryTests.Build(data, 10, Options(false));
        Assert.True(managed.IsSettled);
        Assert.True(usearch.IsSettled);
        Assert.Equal(1, managed.ManagedInsertions);
        Assert.Equal(0, usearch.ManagedInsertions);

        // The block passes the whole-layout check a file's bytes get, and USearch's walk of it (a view of the loaded
        // bytes) finds what the managed walk does: USearch reads the graph the managed insertion wrote.
        var saved = managed.SaveGraph();
        using var viewed = HnswCacheMemory.Load(saved.Graph, saved.Labels, 10, new HnswCacheOptions { TopK = 50, Threads = 1, ManagedSearch = false });
        Assert.False(viewed.IsSettled);
        Assert.Equal(4000, viewed.Count);
        var other = usearch.SaveGraph().Graph;
        var head = HnswTestData.GraphOffset(saved.Graph) - 64;
        Assert.Equal(other.AsSpan((int)head, 64 + 24).ToArray(), saved.Graph.AsSpan((int)head, 64 + 24).ToArray()); // head, size, M, base

        var queries = data.Queries(52, 200);
        using var scope = NewDisposeScope();
        var q = data.QueriesTensor(queries);
        var ours = managed.Neighbours(q);
        var theirs = usearch.Neighbours(q);
        var loadedWalk = viewed.Neighbours(q);
        double recallOurs = 0, recallTheirs = 0, overlap = 0;
        for (var i = 0; i < ours.Length; i++)
        {
            var exact = HnswTestData.TopK(data.Similarities(queries, i), 50);
            recallOurs += exact.Intersect(ours[i].Keys.Select(k => (int)k)).Count();
            recallTheirs += exact.Intersect(theirs[i].Keys.Select(k => (int)k)).Count();
            overlap += ours[i].Keys.Intersect(loadedWalk[i].Keys).Count();
        }

        var total = 50.0 * ours.Length;
        Assert.True(overlap / total >= 0.98, $"USearch's walk of the managed graph shares {overlap / total:F4} of the managed walk's keys");
        Assert.True(recallOurs / total >= (recallTheirs / total) - 0.01, $"recall@50 {recallOurs / total:F4} (managed insertion) vs {recallTheirs / total:F4} (USearch's)");
        Assert.True(recallOurs / total >= (connectivity >= 16 ? 0.95 : 0.9), $"recall@50 {recallOurs / total:F4} at M {connectivity}");

        // Nearly every key finds itself first, as in USearch's graph (two threads insert in no fixed order, so a few may not).
        using var keys = data.KeysTensor();
        var selves = managed.Neighbours(keys).Select((n, i) => n.Keys[0] == (ulong)i).Count(found => found);
        var selvesUSearch = usearch.Neighbours(keys).Select((n, i) => n.Keys[0] == (ulong)i).Count(found => found);
        Assert.True(selves >= 3960 && selves >= selvesUSearch - 20, $"{selves} of 4000 keys found themselves first ({selvesUSearch} in USearch's graph)");
    }

    [Fact]
    public void TheBlockHoldsEveryKeyOnceWithListsWithinTheirCapacities()
    {
        var data = HnswTestData.Clustered(53, 2500, 24, 4, clusters: 30);
        using var memory = HnswCacheMemoryTests.Build(data, 4, new HnswCacheOptions { Threads = 2, Connectivity = 6 });
        Assert.Equal(1, memory.ManagedInsertions);
        var graph = memory.SaveGraph().Graph;
        var (dimension, _, _) = USearchGraphLayout.Validate(graph, 2500, 24); // levels, lists, neighbours, keys 0..N−1
        Assert.Equal(24, dimension);

        // The vectors are the added keys, in slot order; level 0 is linked: every node has a neighbour and is someone's.
        Assert.Equal(data.Keys, System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(graph.AsSpan(8, 2500 * 24 * 4)).ToArray());
        var offset = (int)HnswTestData.GraphOffset(graph);
        Assert.Equal(6L, BinaryPrimitives.ReadInt64LittleEndian(graph.AsSpan(offset + 8)));
        Assert.Equal(12L, BinaryPrimitives.ReadInt64LittleEndian(graph.AsSpan(offset + 16)));
        var levels = new short[2500];
        var position = offset + 40;
        for (var i = 0; i < levels.Length; i++, position += 2)
        {
            levels[i] = BinaryPrimitives.ReadInt16LittleEndian(graph.AsSpan(position));
        }

        var incoming = new int[2500];
        for (var slot = 0; slot < 2500; slot++)
        {
            Assert.Equal((ulong)slot, BinaryPrimitives.ReadUInt64LittleEndian(graph.AsSpan(position)));
            var count = (int)BinaryPrimitives.ReadUInt32LittleEndian(graph.AsSpan(position + 10));
            Assert.InRange(count, 1, 12);
            var neighbours = Enumerable.Range(0, count).Select(j => BinaryPrimitives.ReadUInt32LittleEndian(graph.AsSpan(position + 14 + (4 * j)))).ToArray();
            Assert.Equal(count, neighbours.Distinct().Count());
            Assert.DoesNotContain((uint)slot, neighbours);
            foreach (var neighbour in neighbours)
            {
                incoming[neighbour]++;
            }

            position += (int)USearchGraphLayout.NodeBytes(levels[slot], 6, 12);
        }

        Assert.Equal(graph.Length, position);
        Assert.True(incoming.Count(n => n == 0) <= 12, $"{incoming.Count(n => n == 0)} of 2500 nodes are in no list"); // pruning may orphan a rare few
        Assert.True(levels.Count(l => l > 0) is > 250 and < 600, $"{levels.Count(l => l > 0)} of 2500 nodes above level 0 at M 6 (expected about 1/6)");
    }

    [Fact]
    public void OneThreadBuildsTheSameBlockEveryTime()
    {
        var data = HnswTestData.Clustered(55, 1500, 16, 3, clusters: 20);
        var options = new HnswCacheOptions { Threads = 1 };
        using var first = HnswCacheMemoryTests.Build(data, 3, options);
        using var second = HnswCacheMemoryTests.Build(data, 3, options);
        Assert.Equal(1, first.ManagedInsertions);
        Assert.Equal(first.SaveGraph().Graph, second.SaveGraph().Graph);
    }

    [Fact]
    public void ASettledGraphGrowsInManagedCodeAndKeepsItsKeys()
    {
        var data = HnswTestData.Clustered(57, 3000, 32, 6, clusters: 50);
        using var memory = HnswCacheMemory.Create(data.Dimension, 6, new HnswCacheOptions { TopK = 20, Threads = 2 });
        using var reference = HnswCacheMemory.Create(data.Dimension, 6, new HnswCacheOptions { TopK = 20, Threads = 2, ManagedBuild = false });
        var start = 0;
        foreach (var count in new[] { 1200, 600, 1200 }) // each add grows the graph by a quarter or more, so each settles
        {
            using var keys = data.KeysTensor(start, count);
            using var labels = data.LabelsTensor(start, count);
            memory.Add(keys, labels);
            reference.Add(keys, labels);
            start += count;
            Assert.True(memory.IsSettled);
            Assert.Equal(start, memory.Count);
        }

        Assert.Equal(3, memory.ManagedInsertions); // from empty, then twice after the settled block's keys
        Assert.Equal(0, reference.ManagedInsertions);

        var saved = memory.SaveGraph();
        USearchGraphLayout.Validate(saved.Graph, 3000, 32);
        Assert.Equal(data.Labels.Select(l => (int)l).ToArray(), saved.Labels);
        Assert.Equal(data.Keys, System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(saved.Graph.AsSpan(8, 3000 * 32 * 4)).ToArray());

        using var all = data.KeysTensor();
        var selves = memory.Neighbours(all).Select((n, i) => n.Keys[0] == (ulong)i).Count(found => found);
        Assert.True(selves >= 2970, $"{selves} of 3000 keys found themselves first"); // two threads insert in no fixed order

        var queries = data.Queries(58, 150);
        using var scope = NewDisposeScope();
        var q = data.QueriesTensor(queries);
        var ours = memory.Neighbours(q);
        var theirs = reference.Neighbours(q);
        double recallOurs = 0, recallTheirs = 0;
        for (var i = 0; i < ours.Length; i++)
        {
            var exact = HnswTestData.TopK(data.Similarities(queries, i), 20);
            recallOurs += exact.Intersect(ours[i].Keys.Select(k => (int)k)).Count();
            recallTheirs += exact.Intersect(theirs[i].Keys.Select(k => (int)k)).Count();
        }

        Assert.True(recallOurs >= recallTheirs - (0.01 * 20 * ours.Length), $"recall@20 {recallOurs / (20.0 * ours.Length):F4} (managed) vs {recallTheirs / (20.0 * ours.Length):F4} (USearch)");

        // Loaded back, grown a little through USearch's insertion (an add under a quarter unsettles), and saved again.
        using var loaded = HnswCacheMemory.Load(saved.Graph, saved.Labels, 6, new HnswCacheOptions { TopK = 20, Threads = 2 });
        Assert.Equal(memory.ClassLogMass(q, Thetas).data<float>().ToArray(), loaded.ClassLogMass(q, Thetas).data<float>().ToArray());
        using var few = data.KeysTensor(0, 20);
        using var fewLabels = data.LabelsTensor(0, 20);
        loaded.Add(few, fewLabels);
        Assert.False(loaded.IsSettled);
        Assert.Contains(3000UL, loaded.Neighbours(few)[0].Keys.Take(2)); // key 0 and its copy, 3000
        Assert.Equal(0, loaded.ManagedInsertions);
        USearchGraphLayout.Validate(loaded.SaveGraph().Graph, 3020, 32);
    }
}
