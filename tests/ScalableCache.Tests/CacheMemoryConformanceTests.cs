using ScalableCache.Core;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>
/// What every <see cref="ICacheMemory"/> provider must do. Each backend subclasses this once and implements
/// <see cref="CreateMemory"/> and <see cref="RestoreFactories"/>; an approximate store turns <see cref="ExactScores"/> off,
/// which keeps the structural checks (shapes, −∞ for classes without keys, validation, top-class agreement on
/// well-separated data) and skips comparisons of log-mass values with the brute-force reference. The checks of queries and
/// saves during adds are in <c>CacheMemoryConformanceTests.Concurrency.cs</c>.
/// </summary>
public abstract partial class CacheMemoryConformanceTests
{
    /// <summary>Dimension used by most tests.</summary>
    protected const int Dim = 32;

    /// <summary>Classes used by most tests.</summary>
    protected const int Classes = 6;

    /// <summary>Creates an empty memory of the provider under test.</summary>
    protected abstract ICacheMemory CreateMemory(int dimension, int classCount);

    /// <summary>The provider name the memories report.</summary>
    protected abstract string ExpectedProvider { get; }

    /// <summary>
    /// Whether log-mass values must match the brute-force double-precision reference within
    /// <see cref="ScoreTolerance"/> (true for exact stores; approximate stores return <see langword="false"/>).
    /// </summary>
    protected virtual bool ExactScores => true;

    /// <summary>
    /// Tolerance on log-masses when <see cref="ExactScores"/> (and in the snapshot checks):
    /// <c>|L − L_ref| ≤ ScoreTolerance · (1 + θ + |L_ref|)</c>.
    /// The default 3e-7 covers float32 similarities of unit vectors (error ≲ 1e-7, scaled by θ) and the rounding of L itself
    /// (≈ 6e-8 · |L|), with a margin of about 3.
    /// </summary>
    protected virtual double ScoreTolerance => 3e-7;

    [Fact]
    public void NewMemoryReportsProviderDimensionClassesAndNoKeys()
    {
        using var memory = CreateMemory(Dim, Classes);
        Assert.Equal(ExpectedProvider, memory.Provider);
        Assert.Equal(Dim, memory.Dimension);
        Assert.Equal(Classes, memory.ClassCount);
        Assert.Equal(0, memory.Count);
    }

    [Fact]
    public void AddIncreasesCountByTheRowsAdded()
    {
        using var memory = CreateMemory(Dim, Classes);
        var data = TestData.Clustered(Dim, Classes, keysPerClass: 5, queriesPerClass: 1, seed: 1);
        using (var keys = data.KeyTensor())
        using (var labels = data.KeyLabelTensor())
        {
            memory.Add(keys, labels);
        }

        Assert.Equal(data.KeyCount, memory.Count);
        using (var keys = data.KeyTensor().narrow(0, 0, 7))
        using (var labels = data.KeyLabelTensor().narrow(0, 0, 7))
        {
            memory.Add(keys, labels);
        }

        Assert.Equal(data.KeyCount + 7, memory.Count);
    }

    [Fact]
    public void EmptyMemoryGivesNegativeInfinityForEveryClass()
    {
        using var memory = CreateMemory(Dim, Classes);
        using var queries = TestData.RandomUnit(3, Dim, seed: 2);
        using var logMass = memory.ClassLogMass(queries, [10.0, 20.0]);
        Assert.Equal(new long[] { 2, 3, Classes }, logMass.shape);
        Assert.All(logMass.data<float>().ToArray(), v => Assert.Equal(float.NegativeInfinity, v));
        using var p = LogMass.ToProbabilities(logMass);
        Assert.All(p.data<float>().ToArray(), v => Assert.Equal(0f, v));
    }

    [Fact]
    public void LogMassHasShapeThetasByQueriesByClassesFloat32OnCpu()
    {
        using var memory = CreateMemory(Dim, Classes);
        var data = TestData.Clustered(Dim, Classes, keysPerClass: 8, queriesPerClass: 2, seed: 3);
        AddAll(memory, data);
        using var queries = data.QueryTensor();
        using var logMass = memory.ClassLogMass(queries, [5.0, 10.0, 50.0]);
        Assert.Equal(new long[] { 3, data.QueryCount, Classes }, logMass.shape);
        Assert.Equal(ScalarType.Float32, logMass.dtype);
        Assert.Equal(DeviceType.CPU, logMass.device_type);
    }

    [Fact]
    public void ClassesWithoutKeysAreNegativeInfinityAndTheOthersFinite()
    {
        using var memory = CreateMemory(Dim, Classes);
        var data = TestData.Clustered(Dim, Classes, keysPerClass: 6, queriesPerClass: 2, seed: 4);
        var keep = Enumerable.Range(0, data.KeyCount).Where(i => data.KeyLabels[i] is not (1 or 4)).ToArray();
        using (var keys = data.KeyTensor().index_select(0, tensor(keep.Select(i => (long)i).ToArray())))
        using (var labels = data.KeyLabelTensor().index_select(0, tensor(keep.Select(i => (long)i).ToArray())))
        {
            memory.Add(keys, labels);
        }

        using var queries = data.QueryTensor();
        using var logMass = memory.ClassLogMass(queries, [10.0, 90.0]);
        var values = logMass.data<float>().ToArray();
        for (var i = 0; i < values.Length; i++)
        {
            var c = i % Classes;
            if (c is 1 or 4)
            {
                Assert.Equal(float.NegativeInfinity, values[i]);
            }
            else if (ExactScores)
            {
                Assert.True(float.IsFinite(values[i]), $"class {c} has keys but log-mass {values[i]}");
            }
        }

        using var p = LogMass.ToProbabilities(logMass);
        using var pEmpty = p.index_select(2, tensor(new long[] { 1, 4 }));
        Assert.All(pEmpty.data<float>().ToArray(), v => Assert.Equal(0f, v));
    }

    [Fact]
    public void AddRejectsWrongDimensionAndAddsNothing()
    {
        using var memory = CreateMemory(Dim, Classes);
        using var keys = TestData.RandomUnit(4, Dim + 1, seed: 5);
        using var labels = tensor(new long[] { 0, 1, 2, 3 });
        var e = Assert.ThrowsAny<ArgumentException>(() => memory.Add(keys, labels));
        Assert.Contains(Dim.ToString(System.Globalization.CultureInfo.InvariantCulture), e.Message, StringComparison.Ordinal);
        Assert.Equal(0, memory.Count);
    }

    [Fact]
    public void AddRejectsANonFiniteRowNamingItAndAddsNothing()
    {
        using var memory = CreateMemory(Dim, Classes);
        using var keys = TestData.RandomUnit(6, Dim, seed: 6);
        keys[3, 7].fill_(float.NaN);
        using var labels = tensor(new long[] { 0, 1, 2, 3, 4, 5 });
        var e = Assert.ThrowsAny<ArgumentException>(() => memory.Add(keys, labels));
        Assert.Contains("Row 3", e.Message, StringComparison.Ordinal);
        Assert.Equal(0, memory.Count);

        keys[3, 7].fill_(0f);
        keys[5, 0].fill_(float.PositiveInfinity);
        e = Assert.ThrowsAny<ArgumentException>(() => memory.Add(keys, labels));
        Assert.Contains("Row 5", e.Message, StringComparison.Ordinal);
        Assert.Equal(0, memory.Count);
    }

    [Fact]
    public void AddRejectsALabelOutsideTheClassRangeNamingItsRowAndAddsNothing()
    {
        using var memory = CreateMemory(Dim, Classes);
        using var keys = TestData.RandomUnit(6, Dim, seed: 7);
        using var high = tensor(new long[] { 0, 1, 2, 3, 4, Classes });
        var e = Assert.ThrowsAny<ArgumentException>(() => memory.Add(keys, high));
        Assert.Contains("Row 5", e.Message, StringComparison.Ordinal);
        using var negative = tensor(new long[] { 0, 1, -1, 3, 4, 5 });
        e = Assert.ThrowsAny<ArgumentException>(() => memory.Add(keys, negative));
        Assert.Contains("Row 2", e.Message, StringComparison.Ordinal);
        Assert.Equal(0, memory.Count);
    }

    [Fact]
    public void AddRejectsALabelCountThatDiffersFromTheKeyCount()
    {
        using var memory = CreateMemory(Dim, Classes);
        using var keys = TestData.RandomUnit(6, Dim, seed: 8);
        using var labels = tensor(new long[] { 0, 1, 2 });
        Assert.ThrowsAny<ArgumentException>(() => memory.Add(keys, labels));
        Assert.Equal(0, memory.Count);
    }

    [Fact]
    public void ClassLogMassRejectsQueriesOfTheWrongDimension()
    {
        using var memory = CreateMemory(Dim, Classes);
        using var queries = TestData.RandomUnit(2, Dim - 1, seed: 9);
        Assert.ThrowsAny<ArgumentException>(() => memory.ClassLogMass(queries, [10.0]));
    }

    [Fact]
    public void TopClassAgreesWithBruteForceOnWellSeparatedClusters()
    {
        using var memory = CreateMemory(Dim, Classes);
        var data = TestData.Clustered(Dim, Classes, keysPerClass: 40, queriesPerClass: 5, seed: 10, noise: 0.15);
        AddAll(memory, data);
        using var queries = data.QueryTensor();
        var thetas = new[] { 10.0, 50.0 };
        using var logMass = memory.ClassLogMass(queries, thetas);
        var reference = BruteForce.LogMass(data.Keys, data.KeyLabels, data.Queries, Dim, Classes, thetas);
        var values = logMass.data<float>().ToArray();
        for (var t = 0; t < thetas.Length; t++)
        {
            for (var q = 0; q < data.QueryCount; q++)
            {
                var row = values.AsSpan((t * data.QueryCount + q) * Classes, Classes);
                var expected = BruteForce.ArgMax(reference[t][q]);
                Assert.Equal(expected, row.IndexOf(MaxOf(row)));
                Assert.Equal(data.QueryLabels[q], expected);
            }
        }
    }

    [Fact]
    public void LogMassMatchesBruteForceWhenScoresAreExact()
    {
        if (!ExactScores)
        {
            return;
        }

        using var memory = CreateMemory(Dim, Classes);
        var data = TestData.Clustered(Dim, Classes, keysPerClass: 30, queriesPerClass: 3, seed: 11, noise: 0.6);
        AddAll(memory, data);
        using var queries = data.QueryTensor();
        var thetas = new[] { 1.0, 10.0, 45.5, 90.0 };
        using var logMass = memory.ClassLogMass(queries, thetas);
        BruteForce.AssertClose(logMass, BruteForce.LogMass(data.Keys, data.KeyLabels, data.Queries, Dim, Classes, thetas), thetas, ScoreTolerance);
    }

    [Fact]
    public void GrowthBySeveralAddsEqualsOneAdd()
    {
        var data = TestData.Clustered(Dim, Classes, keysPerClass: 25, queriesPerClass: 3, seed: 12, noise: 0.3);
        using var once = CreateMemory(Dim, Classes);
        AddAll(once, data);
        using var grown = CreateMemory(Dim, Classes);
        using (var keys = data.KeyTensor())
        using (var labels = data.KeyLabelTensor())
        {
            var start = 0;
            foreach (var size in new[] { 1, 2, 7, 13, 40, 3, 64 })
            {
                var rows = Math.Min(size, data.KeyCount - start);
                grown.Add(keys.narrow(0, start, rows), labels.narrow(0, start, rows));
                start += rows;
            }

            grown.Add(keys.narrow(0, start, data.KeyCount - start), labels.narrow(0, start, data.KeyCount - start));
        }

        Assert.Equal(once.Count, grown.Count);
        using var queries = data.QueryTensor();
        var thetas = new[] { 10.0, 60.0 };
        using var a = once.ClassLogMass(queries, thetas);
        using var b = grown.ClassLogMass(queries, thetas);
        if (ExactScores)
        {
            BruteForce.AssertClose(b, BruteForce.ToArrays(a), thetas, ScoreTolerance);
        }
        else
        {
            Assert.True(a.argmax(2).eq(b.argmax(2)).all().item<bool>());
        }
    }

    [Fact]
    public void CallerMayDisposeOrChangeItsTensorsAfterAdd()
    {
        using var memory = CreateMemory(Dim, Classes);
        var data = TestData.Clustered(Dim, Classes, keysPerClass: 10, queriesPerClass: 2, seed: 13);
        using var queries = data.QueryTensor();
        var keys = data.KeyTensor();
        var labels = data.KeyLabelTensor();
        memory.Add(keys, labels);
        using var before = memory.ClassLogMass(queries, [20.0]);
        keys.fill_(0.5f);
        labels.fill_(0L);
        keys.Dispose();
        labels.Dispose();
        using var after = memory.ClassLogMass(queries, [20.0]);
        Assert.True(before.eq(after).all().item<bool>());
    }

    [Fact]
    public void ClassLogMassRejectsThetasThatAreNotPositive()
    {
        using var memory = CreateMemory(Dim, Classes);
        var data = TestData.Clustered(Dim, Classes, keysPerClass: 2, queriesPerClass: 1, seed: 14);
        AddAll(memory, data);
        using var queries = data.QueryTensor();
        Assert.ThrowsAny<ArgumentException>(() => memory.ClassLogMass(queries, [10.0, 0.0]));
        Assert.ThrowsAny<ArgumentException>(() => memory.ClassLogMass(queries, [-1.0]));
        Assert.ThrowsAny<ArgumentException>(() => memory.ClassLogMass(queries, [double.NaN]));
    }

    [Fact]
    public void DisposeIsIdempotentAndLaterCallsThrow()
    {
        var memory = CreateMemory(Dim, Classes);
        var data = TestData.Clustered(Dim, Classes, keysPerClass: 2, queriesPerClass: 1, seed: 15);
        AddAll(memory, data);
        memory.Dispose();
        memory.Dispose();
        using var keys = data.KeyTensor();
        using var labels = data.KeyLabelTensor();
        using var queries = data.QueryTensor();
        Assert.Throws<ObjectDisposedException>(() => memory.Add(keys, labels));
        Assert.Throws<ObjectDisposedException>(() => memory.ClassLogMass(queries, [10.0]));
    }

    /// <summary>Adds every key of <paramref name="data"/> in one call.</summary>
    protected static void AddAll(ICacheMemory memory, TestData data)
    {
        ArgumentNullException.ThrowIfNull(memory);
        ArgumentNullException.ThrowIfNull(data);
        using var keys = data.KeyTensor();
        using var labels = data.KeyLabelTensor();
        memory.Add(keys, labels);
    }

    private static float MaxOf(ReadOnlySpan<float> values)
    {
        var max = float.NegativeInfinity;
        foreach (var v in values)
        {
            max = Math.Max(max, v);
        }

        return max;
    }
}

/// <summary>Deterministic keys and queries (row-major, L2-normalised) with labels, for cache-memory tests.</summary>
public sealed class TestData
{
    private TestData(float[] keys, long[] keyLabels, float[] queries, long[] queryLabels, int dimension)
    {
        Keys = keys;
        KeyLabels = keyLabels;
        Queries = queries;
        QueryLabels = queryLabels;
        Dimension = dimension;
    }

    public float[] Keys { get; }

    public long[] KeyLabels { get; }

    public float[] Queries { get; }

    public long[] QueryLabels { get; }

    public int Dimension { get; }

    public int KeyCount => KeyLabels.Length;

    public int QueryCount => QueryLabels.Length;

    public Tensor KeyTensor() => tensor(Keys, [KeyCount, Dimension]);

    public Tensor KeyLabelTensor() => tensor(KeyLabels);

    public Tensor QueryTensor() => tensor(Queries, [QueryCount, Dimension]);

    public Tensor QueryLabelTensor() => tensor(QueryLabels);

    /// <summary>
    /// One random unit centre per class; keys and queries are <c>normalise(centre + noise · N(0, I)/√d)</c>, keys in class
    /// order interleaved (key i has label i mod classes).
    /// </summary>
    public static TestData Clustered(int dimension, int classes, int keysPerClass, int queriesPerClass, int seed, double noise = 0.1)
    {
        var random = new Random(seed);
        var centres = new float[classes][];
        for (var c = 0; c < classes; c++)
        {
            centres[c] = Normalised(Gaussian(random, dimension));
        }

        float[] Sample(int count, long[] labels)
        {
            var rows = new float[count * dimension];
            for (var i = 0; i < count; i++)
            {
                var c = i % classes;
                labels[i] = c;
                var g = Gaussian(random, dimension);
                var v = new float[dimension];
                for (var j = 0; j < dimension; j++)
                {
                    v[j] = centres[c][j] + (float)(noise * g[j] / Math.Sqrt(dimension));
                }

                Normalised(v).CopyTo(rows, i * dimension);
            }

            return rows;
        }

        var keyLabels = new long[classes * keysPerClass];
        var keys = Sample(keyLabels.Length, keyLabels);
        var queryLabels = new long[classes * queriesPerClass];
        var queries = Sample(queryLabels.Length, queryLabels);
        return new TestData(keys, keyLabels, queries, queryLabels, dimension);
    }

    /// <summary>Random unit rows <c>[rows, dimension]</c>.</summary>
    public static Tensor RandomUnit(int rows, int dimension, int seed)
    {
        var random = new Random(seed);
        var values = new float[rows * dimension];
        for (var i = 0; i < rows; i++)
        {
            Normalised(Gaussian(random, dimension)).CopyTo(values, i * dimension);
        }

        return tensor(values, [rows, dimension]);
    }

    /// <summary>Random unit rows as a managed array.</summary>
    public static float[] RandomUnitArray(int rows, int dimension, Random random)
    {
        ArgumentNullException.ThrowIfNull(random);
        var values = new float[rows * dimension];
        for (var i = 0; i < rows; i++)
        {
            Normalised(Gaussian(random, dimension)).CopyTo(values, i * dimension);
        }

        return values;
    }

    private static float[] Gaussian(Random random, int n)
    {
        var v = new float[n];
        for (var i = 0; i < n; i++)
        {
            var u1 = 1.0 - random.NextDouble();
            var u2 = random.NextDouble();
            v[i] = (float)(Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * u2));
        }

        return v;
    }

    private static float[] Normalised(float[] v)
    {
        var norm = Math.Sqrt(v.Sum(x => (double)x * x));
        return v.Select(x => (float)(x / norm)).ToArray();
    }
}

/// <summary>Naive double-precision reference of the per-class log-mass.</summary>
public static class BruteForce
{
    /// <summary><c>L[t][q][c] = log Σ_{k: y_k = c} exp(θ_t q·k)</c> in double; −∞ for classes without keys.</summary>
    public static double[][][] LogMass(float[] keys, long[] labels, float[] queries, int dimension, int classes, IReadOnlyList<double> thetas)
    {
        ArgumentNullException.ThrowIfNull(keys);
        ArgumentNullException.ThrowIfNull(labels);
        ArgumentNullException.ThrowIfNull(queries);
        ArgumentNullException.ThrowIfNull(thetas);
        var n = labels.Length;
        var b = queries.Length / dimension;
        var result = new double[thetas.Count][][];
        for (var t = 0; t < thetas.Count; t++)
        {
            result[t] = new double[b][];
            for (var q = 0; q < b; q++)
            {
                var s = new double[n];
                for (var k = 0; k < n; k++)
                {
                    double dot = 0;
                    for (var j = 0; j < dimension; j++)
                    {
                        dot += (double)queries[q * dimension + j] * keys[k * dimension + j];
                    }

                    s[k] = thetas[t] * dot;
                }

                var row = new double[classes];
                for (var c = 0; c < classes; c++)
                {
                    var max = double.NegativeInfinity;
                    for (var k = 0; k < n; k++)
                    {
                        if (labels[k] == c)
                        {
                            max = Math.Max(max, s[k]);
                        }
                    }

                    if (double.IsNegativeInfinity(max))
                    {
                        row[c] = double.NegativeInfinity;
                        continue;
                    }

                    double sum = 0;
                    for (var k = 0; k < n; k++)
                    {
                        if (labels[k] == c)
                        {
                            sum += Math.Exp(s[k] - max);
                        }
                    }

                    row[c] = max + Math.Log(sum);
                }

                result[t][q] = row;
            }
        }

        return result;
    }

    /// <summary>A <c>[T, b, C]</c> tensor as nested arrays.</summary>
    public static double[][][] ToArrays(Tensor logMass)
    {
        ArgumentNullException.ThrowIfNull(logMass);
        var (t, b, c) = ((int)logMass.shape[0], (int)logMass.shape[1], (int)logMass.shape[2]);
        var values = logMass.cpu().data<float>().ToArray();
        var result = new double[t][][];
        for (var i = 0; i < t; i++)
        {
            result[i] = new double[b][];
            for (var q = 0; q < b; q++)
            {
                result[i][q] = values.AsSpan((i * b + q) * c, c).ToArray().Select(v => (double)v).ToArray();
            }
        }

        return result;
    }

    /// <summary>
    /// Asserts <c>|actual − expected| ≤ tolerance · (1 + θ + |expected|)</c> element-wise (both −∞ also matches), with θ
    /// the θ of the slice.
    /// </summary>
    public static void AssertClose(Tensor actual, double[][][] expected, IReadOnlyList<double> thetas, double tolerance)
    {
        ArgumentNullException.ThrowIfNull(expected);
        ArgumentNullException.ThrowIfNull(thetas);
        var got = ToArrays(actual);
        Assert.Equal(expected.Length, got.Length);
        for (var t = 0; t < expected.Length; t++)
        {
            Assert.Equal(expected[t].Length, got[t].Length);
            for (var q = 0; q < expected[t].Length; q++)
            {
                for (var c = 0; c < expected[t][q].Length; c++)
                {
                    var e = expected[t][q][c];
                    var a = got[t][q][c];
                    if (double.IsNegativeInfinity(e))
                    {
                        Assert.True(double.IsNegativeInfinity(a), $"θ={thetas[t]} q={q} c={c}: expected −∞, got {a}");
                    }
                    else
                    {
                        var limit = tolerance * (1 + thetas[t] + Math.Abs(e));
                        Assert.True(Math.Abs(a - e) <= limit, $"θ={thetas[t]} q={q} c={c}: expected {e}, got {a} (tolerance {limit})");
                    }
                }
            }
        }
    }

    /// <summary>Index of the largest value (first on ties).</summary>
    public static int ArgMax(double[] values)
    {
        ArgumentNullException.ThrowIfNull(values);
        var best = 0;
        for (var i = 1; i < values.Length; i++)
        {
            if (values[i] > values[best])
            {
                best = i;
            }
        }

        return best;
    }
}
