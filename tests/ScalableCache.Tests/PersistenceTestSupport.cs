using ScalableCache.Core;
using ScalableCache.Core.Persistence;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>Random unit keys, temporary folders and a header for the cache-file tests.</summary>
internal static class PersistenceTestSupport
{
    /// <summary><paramref name="n"/> random unit vectors of dimension <paramref name="d"/> (row-major) with labels i·7 mod classes.</summary>
    public static (float[] Keys, long[] Labels) UnitKeys(int seed, int n, int d, int classes)
    {
        var rng = new Random(seed);
        var keys = new float[n * d];
        var labels = new long[n];
        for (var i = 0; i < n; i++)
        {
            double norm = 0;
            for (var j = 0; j < d; j++)
            {
                var v = (rng.NextDouble() * 2) - 1;
                keys[(i * d) + j] = (float)v;
                norm += v * v;
            }

            for (var j = 0; j < d; j++)
            {
                keys[(i * d) + j] = (float)(keys[(i * d) + j] / Math.Sqrt(norm));
            }

            labels[i] = (i * 7 + rng.Next(2)) % classes;
        }

        return (keys, labels);
    }

    /// <summary>Adds rows <c>[start, start + n)</c> of the keys to <paramref name="memory"/>.</summary>
    public static void Add(ICacheMemory memory, float[] keys, long[] labels, int start, int n)
    {
        var d = memory.Dimension;
        using var scope = NewDisposeScope();
        memory.Add(tensor(keys.AsSpan(start * d, n * d).ToArray(), [n, d]), tensor(labels.AsSpan(start, n).ToArray()));
    }

    /// <summary>The log-masses as raw float32 bits, for bit-identical comparisons.</summary>
    public static float[] LogMass(ICacheMemory memory, float[] queries, double[] thetas)
    {
        using var scope = NewDisposeScope();
        var q = tensor(queries, [queries.Length / memory.Dimension, memory.Dimension]);
        return memory.ClassLogMass(q, thetas).data<float>().ToArray();
    }

    /// <summary><see cref="CacheFile.Save"/> with the test's cancellation token.</summary>
    public static CacheFileHeader Save(string path, CacheFileHeader header, ICacheMemory memory) =>
        CacheFile.Save(path, header, memory, Xunit.TestContext.Current.CancellationToken);

    /// <summary><see cref="CacheFile.Load(string, IEnumerable{ICacheMemoryFactory}, CancellationToken)"/> with the test's cancellation token.</summary>
    public static LoadedCacheFile Load(string path, IEnumerable<ICacheMemoryFactory> factories) =>
        CacheFile.Load(path, factories, Xunit.TestContext.Current.CancellationToken);

    public static CacheFileHeader Header() => new()
    {
        Model = new CacheModelId("resnet20", new string('a', 64), "resnet20.safetensors"),
        Layers = ["layer3.2", "avgpool"],
        Flip = true,
        Normalization = "test normalisation",
        Theta = 40,
        Lambda = 0.3,
        Metadata = new Dictionary<string, string> { ["purpose"] = "test" },
    };
}

/// <summary>A fresh temporary folder, deleted (with its files) on dispose.</summary>
internal sealed class PersistenceTempFolder : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("scache-persistence-").FullName;

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>A persistent memory whose state is given by the test (to write inconsistent files and failing saves).</summary>
internal sealed class ScriptedPersistentMemory(string provider, int dimension, int classCount, Func<CacheState> export, long count = 0) : IPersistentCacheMemory
{
    public string Provider => provider;

    public int Dimension => dimension;

    public int ClassCount => classCount;

    public long Count => count;

    public void Add(Tensor keys, Tensor labels) => throw new NotSupportedException();

    public Tensor ClassLogMass(Tensor queries, ReadOnlySpan<double> thetas) => throw new NotSupportedException();

    public CacheState ExportState() => export();

    public void Dispose()
    {
    }
}

/// <summary>A persistent factory whose restore is given by the test.</summary>
internal sealed class ScriptedPersistentFactory(string provider, Func<CacheState, CacheRestoreContext, ICacheMemory> restore) : IPersistentCacheMemoryFactory
{
    public string Provider => provider;

    public ICacheMemory Create(int dimension, int classCount) => throw new NotSupportedException();

    public ICacheMemory Restore(CacheState state, CacheRestoreContext context) => restore(state, context);
}
