using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>Clustered unit vectors and brute-force references for the HNSW tests.</summary>
internal sealed class HnswTestData
{
    private HnswTestData(float[] keys, long[] labels, int dimension)
    {
        Keys = keys;
        Labels = labels;
        Dimension = dimension;
    }

    /// <summary>Row-major <c>[n, d]</c> unit keys.</summary>
    public float[] Keys { get; }

    public long[] Labels { get; }

    public int Dimension { get; }

    public int Count => Labels.Length;

    /// <summary>
    /// Where the graph of a saved USearch index (<c>SaveGraph</c> bytes) starts: after the vector matrix (rows, columns,
    /// rows × columns bytes) and the 64-byte head (layout: <c>USearchGraphLayout</c>).
    /// </summary>
    public static long GraphOffset(ReadOnlySpan<byte> index) =>
        8 + ((long)System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(index) * System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(index[4..])) + 64;

    /// <summary>
    /// <paramref name="n"/> keys around <paramref name="clusters"/> random unit centres (spread <paramref name="spread"/> per
    /// component, then re-normalised); a key's label is its cluster modulo <paramref name="classes"/>, so classes mix clusters.
    /// </summary>
    public static HnswTestData Clustered(int seed, int n, int dimension, int classes, int clusters, double spread = 0.15)
    {
        var rng = new Random(seed);
        var centres = new float[clusters * dimension];
        for (var c = 0; c < clusters; c++)
        {
            FillUnit(rng, centres.AsSpan(c * dimension, dimension), null, 1.0);
        }

        var keys = new float[n * dimension];
        var labels = new long[n];
        for (var i = 0; i < n; i++)
        {
            var cluster = rng.Next(clusters);
            FillUnit(rng, keys.AsSpan(i * dimension, dimension), centres.AsSpan(cluster * dimension, dimension).ToArray(), spread);
            labels[i] = cluster % classes;
        }

        return new HnswTestData(keys, labels, dimension);
    }

    /// <summary>Queries drawn like keys (fresh noise around the same kind of centres), row-major <c>[b, d]</c>.</summary>
    public float[] Queries(int seed, int count, double spread = 0.2)
    {
        var rng = new Random(seed);
        var queries = new float[count * Dimension];
        for (var q = 0; q < count; q++)
        {
            var anchor = rng.Next(Count);
            FillUnit(rng, queries.AsSpan(q * Dimension, Dimension), Keys.AsSpan(anchor * Dimension, Dimension).ToArray(), spread);
        }

        return queries;
    }

    public Tensor KeysTensor(int start = 0, int count = -1)
    {
        count = count < 0 ? Count - start : count;
        return tensor(Keys.AsSpan(start * Dimension, count * Dimension).ToArray(), [count, Dimension]);
    }

    public Tensor LabelsTensor(int start = 0, int count = -1)
    {
        count = count < 0 ? Count - start : count;
        return tensor(Labels.AsSpan(start, count).ToArray(), [count]);
    }

    public Tensor QueriesTensor(float[] queries) => tensor(queries, [queries.Length / Dimension, Dimension]);

    /// <summary>Exact similarities of one query to every key, in double.</summary>
    public double[] Similarities(float[] queries, int q)
    {
        var s = new double[Count];
        for (var k = 0; k < Count; k++)
        {
            double dot = 0;
            for (var j = 0; j < Dimension; j++)
            {
                dot += (double)queries[(q * Dimension) + j] * Keys[(k * Dimension) + j];
            }

            s[k] = dot;
        }

        return s;
    }

    /// <summary>Ids of the <paramref name="k"/> most similar keys (exact).</summary>
    public static int[] TopK(double[] similarities, int k) =>
        Enumerable.Range(0, similarities.Length).OrderByDescending(i => similarities[i]).Take(k).ToArray();

    /// <summary><c>log Σ_{j ∈ ids, y_j = c} exp(θ s_j)</c> in double, −∞ for classes without an id.</summary>
    public double[] LogMass(IEnumerable<int> ids, double[] similarities, double theta, int classes)
    {
        var result = Enumerable.Repeat(double.NegativeInfinity, classes).ToArray();
        foreach (var group in ids.GroupBy(i => Labels[i]))
        {
            var values = group.Select(i => theta * similarities[i]).ToArray();
            var max = values.Max();
            result[group.Key] = max + Math.Log(values.Sum(v => Math.Exp(v - max)));
        }

        return result;
    }

    private static void FillUnit(Random rng, Span<float> target, float[]? centre, double spread)
    {
        double norm = 0;
        for (var j = 0; j < target.Length; j++)
        {
            var noise = Gaussian(rng) * spread;
            var v = (centre?[j] ?? 0) + noise;
            target[j] = (float)v;
            norm += v * v;
        }

        var scale = 1 / Math.Sqrt(norm);
        for (var j = 0; j < target.Length; j++)
        {
            target[j] = (float)(target[j] * scale);
        }
    }

    private static double Gaussian(Random rng) =>
        Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
}
