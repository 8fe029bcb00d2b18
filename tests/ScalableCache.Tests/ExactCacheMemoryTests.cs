using ScalableCache.Core;
using ScalableCache.Exact;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>The exact store against the provider contract, with small blocks so every query spans several blocks.</summary>
public sealed class ExactConformanceTests : CacheMemoryConformanceTests
{
    private static readonly ExactCacheMemoryFactory Factory = new(new ExactCacheOptions { KeyBlockSize = 16, QueryBlockSize = 4 });

    protected override string ExpectedProvider => "Exact";

    protected override IReadOnlyList<ICacheMemoryFactory> RestoreFactories => [Factory];

    protected override ICacheMemory CreateMemory(int dimension, int classCount) => Factory.Create(dimension, classCount);
}

/// <summary>
/// The exact store's tensor path (the one CUDA and autograd use) against the contract, on the CPU. Saved files reload through
/// the factory, whose memories use the fused kernel; the snapshot checks compare both with the same reference.
/// </summary>
public sealed class ExactTensorPathConformanceTests : CacheMemoryConformanceTests
{
    private static readonly ExactCacheOptions Options = new() { KeyBlockSize = 16, QueryBlockSize = 4 };

    protected override string ExpectedProvider => "Exact";

    protected override IReadOnlyList<ICacheMemoryFactory> RestoreFactories => [new ExactCacheMemoryFactory(Options)];

    protected override ICacheMemory CreateMemory(int dimension, int classCount) =>
        new ExactCacheMemory(dimension, classCount, CPU, Options) { UseFusedKernel = false };
}

/// <summary>
/// The exact store with its keys on a CUDA device against the contract (the tensor path, on the GPU). Skipped where CUDA is not
/// available — the CPU-only build CI uses — and run on a GPU machine with a CUDA libtorch.
/// </summary>
public sealed class ExactCudaConformanceTests : CacheMemoryConformanceTests
{
    protected override string ExpectedProvider => "Exact";

    protected override IReadOnlyList<ICacheMemoryFactory> RestoreFactories => [CudaFactory()];

    protected override ICacheMemory CreateMemory(int dimension, int classCount)
    {
        if (!cuda.is_available())
        {
            Assert.Skip("No CUDA device in this build or on this machine.");
        }

        return CudaFactory().Create(dimension, classCount);
    }

    private static ExactCacheMemoryFactory CudaFactory() =>
        new(new ExactCacheOptions { Device = "cuda", KeyBlockSize = 16, QueryBlockSize = 4 });
}

/// <summary>
/// The exact store with float16 key storage against the contract. Tolerance: a float16 key component carries ≤ 2⁻¹¹
/// relative rounding, so a unit-vector similarity moves by ≲ 2e-4 and a log-mass by ≲ 2e-4·θ; the check allows
/// 5e-4 · (1 + θ + |L|).
/// </summary>
public sealed class ExactFloat16ConformanceTests : CacheMemoryConformanceTests
{
    private static readonly ExactCacheMemoryFactory Factory =
        new(new ExactCacheOptions { KeyBlockSize = 16, StorageType = ExactStorageType.Float16 });

    protected override string ExpectedProvider => "Exact";

    protected override double ScoreTolerance => 5e-4;

    protected override IReadOnlyList<ICacheMemoryFactory> RestoreFactories => [Factory];

    protected override ICacheMemory CreateMemory(int dimension, int classCount) => Factory.Create(dimension, classCount);
}

public sealed class ExactCacheMemoryTests
{
    /// <summary>
    /// Tolerance against the double-precision reference: <c>|L − L_ref| ≤ 3e-7 · (1 + θ + |L_ref|)</c>. Float32 similarities
    /// of unit vectors carry ≲ 1e-7 absolute error (scaled by θ in L) and L itself rounds to ≈ 6e-8 · |L|; the largest error
    /// seen on these tests is about 1e-7 · (1 + θ + |L|).
    /// </summary>
    private const double Tolerance = 3e-7;

    private static ExactCacheMemory Create(int dimension, int classes, int keyBlock = 4096, int queryBlock = 1024,
        ExactStorageType storage = ExactStorageType.Float32, bool fused = true) =>
        new(dimension, classes, CPU, new ExactCacheOptions { KeyBlockSize = keyBlock, QueryBlockSize = queryBlock, StorageType = storage })
        {
            UseFusedKernel = fused,
        };

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void MatchesNaiveDoubleReferenceOnRandomData(bool fused)
    {
        const int dim = 24, classes = 7, n = 257, b = 19;
        var random = new Random(100);
        var keys = TestData.RandomUnitArray(n, dim, random);
        var labels = Enumerable.Range(0, n).Select(_ => (long)random.Next(classes)).ToArray();
        var queries = TestData.RandomUnitArray(b, dim, random);
        double[] thetas = [0.5, 10, 37.3, 90, 200];

        using var memory = Create(dim, classes, keyBlock: 50, queryBlock: 8, fused: fused);
        using (var k = tensor(keys, [n, dim]))
        using (var y = tensor(labels))
        {
            memory.Add(k, y);
        }

        using var q = tensor(queries, [b, dim]);
        using var logMass = memory.ClassLogMass(q, thetas);
        BruteForce.AssertClose(logMass, BruteForce.LogMass(keys, labels, queries, dim, classes, thetas), thetas, Tolerance);
    }

    [Fact]
    public void QueryBlocksServedInOnePassOverTheKeysGiveEachBlocksOwnValuesBitForBit()
    {
        // 19 queries in blocks of 8 (the last partial) against 257 keys in three adds (several chunks) and key blocks of 50.
        const int dim = 24, classes = 7, n = 257, b = 19;
        var random = new Random(7);
        var keys = TestData.RandomUnitArray(n, dim, random);
        var labels = Enumerable.Range(0, n).Select(_ => (long)random.Next(classes)).ToArray();
        double[] thetas = [10, 20, 30, 40, 50, 60, 70, 80, 90];
        using var memory = Create(dim, classes, keyBlock: 50, queryBlock: 8);
        using var all = tensor(keys, [n, dim]);
        using var y = tensor(labels);
        foreach (var (start, count) in new[] { (0L, 100L), (100L, 57L), (157L, 100L) })
        {
            memory.Add(all.narrow(0, start, count), y.narrow(0, start, count));
        }

        using var scope = NewDisposeScope();
        var q = tensor(TestData.RandomUnitArray(b, dim, random), [b, dim]);
        var together = memory.ClassLogMass(q, thetas);
        var apart = cat([memory.ClassLogMass(q.narrow(0, 0, 8), thetas), memory.ClassLogMass(q.narrow(0, 8, 8), thetas), memory.ClassLogMass(q.narrow(0, 16, 3), thetas)], 1);
        Assert.True(together.eq(apart).all().item<bool>(), "a block's log-mass does not depend on the blocks served beside it");

        // The groups of query blocks one pass serves: as many as fit the running log-masses' budget, at least one.
        Assert.Equal(13, ExactCacheMemory.FusedGroupBlocks(9, 1000, 1024, ExactCacheMemory.FusedRunningBudgetBytes)); // 82 MB a block
        Assert.Equal(1, ExactCacheMemory.FusedGroupBlocks(9, 100_000, 1024, ExactCacheMemory.FusedRunningBudgetBytes));
        Assert.Equal(1 << 16, ExactCacheMemory.FusedGroupBlocks(1, 10, 8, ExactCacheMemory.FusedRunningBudgetBytes));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void EvenlySpacedDefaultGridMatchesReference(bool fused)
    {
        var data = TestData.Clustered(32, 5, keysPerClass: 40, queriesPerClass: 4, seed: 101, noise: 0.8);
        double[] thetas = [10, 20, 30, 40, 50, 60, 70, 80, 90];
        using var memory = Create(32, 5, keyBlock: 64, fused: fused);
        using (var k = data.KeyTensor())
        using (var y = data.KeyLabelTensor())
        {
            memory.Add(k, y);
        }

        using var q = data.QueryTensor();
        using var logMass = memory.ClassLogMass(q, thetas);
        BruteForce.AssertClose(logMass, BruteForce.LogMass(data.Keys, data.KeyLabels, data.Queries, 32, 5, thetas), thetas, Tolerance);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void UnsortedAndRepeatedThetasMatchOneCallPerTheta(bool fused)
    {
        var data = TestData.Clustered(16, 4, keysPerClass: 20, queriesPerClass: 3, seed: 102, noise: 0.7);
        using var memory = Create(16, 4, keyBlock: 25, fused: fused);
        using (var k = data.KeyTensor())
        using (var y = data.KeyLabelTensor())
        {
            memory.Add(k, y);
        }

        using var q = data.QueryTensor();
        double[] thetas = [90, 10, 10, 50, 30, 70, 0.25];
        using var all = memory.ClassLogMass(q, thetas);
        for (var t = 0; t < thetas.Length; t++)
        {
            using var one = memory.ClassLogMass(q, [thetas[t]]);
            using var slice = all.narrow(0, t, 1);
            BruteForce.AssertClose(slice, BruteForce.ToArrays(one), [thetas[t]], Tolerance);
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void BlockedEqualsUnblocked(bool fused)
    {
        var data = TestData.Clustered(20, 6, keysPerClass: 30, queriesPerClass: 5, seed: 103, noise: 0.9);
        double[] thetas = [1, 25, 90];
        using var blocked = Create(20, 6, keyBlock: 7, queryBlock: 3, fused: fused);
        using var whole = Create(20, 6, keyBlock: 1_000_000, queryBlock: 1_000_000, fused: fused);
        using (var k = data.KeyTensor())
        using (var y = data.KeyLabelTensor())
        {
            blocked.Add(k.narrow(0, 0, 100), y.narrow(0, 0, 100));
            blocked.Add(k.narrow(0, 100, 80), y.narrow(0, 100, 80));
            whole.Add(k, y);
        }

        using var q = data.QueryTensor();
        using var a = blocked.ClassLogMass(q, thetas);
        using var b = whole.ClassLogMass(q, thetas);
        BruteForce.AssertClose(a, BruteForce.ToArrays(b), thetas, Tolerance);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void ThetaTwoHundredWithAQueryEqualToAKeyIsFiniteAndCorrect(bool fused)
    {
        // Class 0 holds the query itself (cosine 1), class 1 its negation (cosine −1), class 2 an orthogonal key (cosine 0),
        // class 3 random keys; class 4 is empty. A single shift per query would underflow classes 1 and 2 at θ = 200.
        const int dim = 8, classes = 5;
        var random = new Random(104);
        var e1 = new float[dim];
        e1[0] = 1;
        var e2 = new float[dim];
        e2[1] = 1;
        var neg = e1.Select(v => -v).ToArray();
        var others = TestData.RandomUnitArray(6, dim, random);
        float[] keys = [.. e1, .. neg, .. e2, .. others];
        long[] labels = [0, 1, 2, 3, 3, 3, 3, 3, 3];
        double[] thetas = [200, 1000];

        using var memory = Create(dim, classes, fused: fused);
        using (var k = tensor(keys, [labels.Length, dim]))
        using (var y = tensor(labels))
        {
            memory.Add(k, y);
        }

        using var q = tensor(e1, [1, dim]);
        using var logMass = memory.ClassLogMass(q, thetas);
        var values = logMass.data<float>().ToArray();
        Assert.Equal(200f, values[0], 1e-3f);
        Assert.Equal(-200f, values[1], 1e-3f);
        Assert.Equal(0f, values[2], 1e-3f);
        Assert.True(float.IsFinite(values[3]));
        Assert.Equal(float.NegativeInfinity, values[4]);
        Assert.Equal(1000f, values[5], 1e-2f);
        Assert.Equal(-1000f, values[6], 1e-2f);
        BruteForce.AssertClose(logMass, BruteForce.LogMass(keys, labels, e1, dim, classes, thetas), thetas, Tolerance);

        using var p = memory.MemoryProbabilities(q, 200);
        Assert.Equal(1f, p[0, 0].item<float>(), 1e-6f);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void LargeThetaOnManyKeysPerClassStaysFiniteAndAccurate(bool fused)
    {
        // Thousands of keys per class widen the shift's slack (ln n / θ₀), which the refinement pass must tighten.
        var data = TestData.Clustered(16, 3, keysPerClass: 1500, queriesPerClass: 2, seed: 105, noise: 2.0);
        double[] thetas = [150, 400, 2000];
        using var memory = Create(16, 3, keyBlock: 8192, fused: fused);
        using (var k = data.KeyTensor())
        using (var y = data.KeyLabelTensor())
        {
            memory.Add(k, y);
        }

        using var q = data.QueryTensor();
        using var logMass = memory.ClassLogMass(q, thetas);
        Assert.All(logMass.data<float>().ToArray(), v => Assert.True(float.IsFinite(v)));
        BruteForce.AssertClose(logMass, BruteForce.LogMass(data.Keys, data.KeyLabels, data.Queries, 16, 3, thetas), thetas, Tolerance);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void ManyTiedKeysAtLargeThetaStayFiniteAndExact(bool fused)
    {
        // 2000 copies of the query under class 0 and 2000 keys at cosine 0.9 under class 1: the shift's slack is then the
        // worst case ln(n)/θ₀, so θ = 2000 needs the refinement pass (without it both classes underflow to −∞).
        const int dim = 4, copies = 2000;
        using var memory = Create(dim, 2, keyBlock: 8192, fused: fused);
        using (var scope = NewDisposeScope())
        {
            var keys = zeros(2 * copies, dim);
            keys.narrow(0, 0, copies).select(1, 0).fill_(1f);
            keys.narrow(0, copies, copies).select(1, 0).fill_(0.9f);
            keys.narrow(0, copies, copies).select(1, 1).fill_((float)Math.Sqrt(1 - 0.81));
            var labels = cat([zeros(copies, dtype: ScalarType.Int64), ones(copies, dtype: ScalarType.Int64)]);
            memory.Add(keys, labels);
        }

        using var q = tensor(new float[] { 1, 0, 0, 0 }, [1, dim]);
        double[] thetas = [200, 500, 2000];
        using var logMass = memory.ClassLogMass(q, thetas);
        var values = logMass.data<float>().ToArray();
        for (var t = 0; t < thetas.Length; t++)
        {
            var expected0 = thetas[t] + Math.Log(copies);
            var expected1 = 0.9 * thetas[t] + Math.Log(copies);
            Assert.True(Math.Abs(values[2 * t] - expected0) <= Tolerance * (1 + thetas[t] + expected0), $"θ={thetas[t]}: {values[2 * t]} vs {expected0}");
            Assert.True(Math.Abs(values[2 * t + 1] - expected1) <= 1e-6 * (1 + thetas[t] + expected1), $"θ={thetas[t]}: {values[2 * t + 1]} vs {expected1}");
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void ShardsMergedWithLogMassMergeEqualOneCache(bool fused)
    {
        var data = TestData.Clustered(24, 5, keysPerClass: 20, queriesPerClass: 3, seed: 106, noise: 0.7);
        double[] thetas = [10, 50, 90];
        using var whole = Create(24, 5, fused: fused);
        using var first = Create(24, 5, keyBlock: 9, fused: fused);
        using var second = Create(24, 5, keyBlock: 11, fused: fused);
        using (var k = data.KeyTensor())
        using (var y = data.KeyLabelTensor())
        {
            whole.Add(k, y);

            // The first shard lacks class 2 entirely, so −∞ ⊕ x must give x.
            var firstRows = Enumerable.Range(0, 50).Where(i => data.KeyLabels[i] != 2).Select(i => (long)i).ToArray();
            var secondRows = Enumerable.Range(0, data.KeyCount).Where(i => i >= 50 || data.KeyLabels[i] == 2).Select(i => (long)i).ToArray();
            using var firstIndex = tensor(firstRows);
            using var secondIndex = tensor(secondRows);
            first.Add(k.index_select(0, firstIndex), y.index_select(0, firstIndex));
            second.Add(k.index_select(0, secondIndex), y.index_select(0, secondIndex));
        }

        using var q = data.QueryTensor();
        using var a = first.ClassLogMass(q, thetas);
        using var b = second.ClassLogMass(q, thetas);
        using var merged = LogMass.Merge(a, b);
        using var expected = whole.ClassLogMass(q, thetas);
        BruteForce.AssertClose(merged, BruteForce.ToArrays(expected), thetas, Tolerance);
    }

    [Fact]
    public void ManySmallAddsShareAFewGeometricallyGrowingChunks()
    {
        const int dim = 4, adds = 60;
        using var memory = Create(dim, 2, keyBlock: 16);
        long total = 0;
        for (var i = 1; i <= adds; i++)
        {
            var size = 2 * (1 + (i * 7 % 5));
            using var keys = TestData.RandomUnit(size, dim, seed: i);
            using var labels = full(size, (long)(i % 2), ScalarType.Int64);
            memory.Add(keys, labels);
            total += size;
        }

        Assert.Equal(total, memory.Count);
        Assert.True(memory.ChunkCount < 12, $"{memory.ChunkCount} chunks for {adds} adds");
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Float16StorageIsCloseToFloat32(bool fused)
    {
        var data = TestData.Clustered(64, 8, keysPerClass: 25, queriesPerClass: 4, seed: 107, noise: 0.7);
        double[] thetas = [10, 50, 90];
        using var full32 = Create(64, 8, fused: fused);
        using var half = Create(64, 8, storage: ExactStorageType.Float16, keyBlock: 33, fused: fused);
        Assert.Equal(ScalarType.Float16, half.StorageType);
        using (var k = data.KeyTensor())
        using (var y = data.KeyLabelTensor())
        {
            full32.Add(k, y);
            half.Add(k, y);
        }

        using var q = data.QueryTensor();
        using var a = full32.ClassLogMass(q, thetas);
        using var b = half.ClassLogMass(q, thetas);
        BruteForce.AssertClose(b, BruteForce.ToArrays(a), thetas, 5e-4);
        using var pa = LogMass.ToProbabilities(a);
        using var pb = LogMass.ToProbabilities(b);
        Assert.True((pa - pb).abs().max().item<float>() < 0.02f);
    }

    [Fact]
    public void GradientWithRespectToQueriesMatchesTheAnalyticGradient()
    {
        // ∂L_c/∂q = θ Σ_{k∈c} softmax_k(θ q·μ_k) μ_k; class 3 is empty and must not poison the gradient with NaN.
        const int dim = 6, classes = 4;
        var random = new Random(108);
        var keys = TestData.RandomUnitArray(20, dim, random);
        var labels = Enumerable.Range(0, 20).Select(i => (long)(i % 3)).ToArray();
        var queries = TestData.RandomUnitArray(2, dim, random);
        const double theta = 30;
        using var memory = Create(dim, classes, keyBlock: 7);
        using (var k = tensor(keys, [20, dim]))
        using (var y = tensor(labels))
        {
            memory.Add(k, y);
        }

        using var q = tensor(queries, [2, dim]).requires_grad_(true);
        using (var scope = NewDisposeScope())
        {
            var logMass = memory.ClassLogMass(q, [theta]);
            Assert.True(logMass.requires_grad);
            var weights = tensor(new float[] { 1, -2, 0.5f, 3 }).view(1, 1, classes);
            var finite = where(isfinite(logMass), logMass, zeros_like(logMass));
            (finite * weights).sum().backward();
        }

        var grad = q.grad!.data<float>().ToArray();
        double[] w = [1, -2, 0.5, 3];
        for (var b = 0; b < 2; b++)
        {
            var expected = new double[dim];
            for (var c = 0; c < 3; c++)
            {
                var members = Enumerable.Range(0, 20).Where(i => labels[i] == c).ToArray();
                var s = members.Select(i => theta * Enumerable.Range(0, dim).Sum(j => (double)queries[b * dim + j] * keys[i * dim + j])).ToArray();
                var max = s.Max();
                var e = s.Select(v => Math.Exp(v - max)).ToArray();
                var sum = e.Sum();
                for (var m = 0; m < members.Length; m++)
                {
                    for (var j = 0; j < dim; j++)
                    {
                        expected[j] += w[c] * theta * e[m] / sum * keys[members[m] * dim + j];
                    }
                }
            }

            for (var j = 0; j < dim; j++)
            {
                Assert.True(Math.Abs(grad[b * dim + j] - expected[j]) <= 1e-3 * (1 + Math.Abs(expected[j])),
                    $"query {b}, component {j}: {grad[b * dim + j]} vs {expected[j]}");
            }
        }
    }

    [Fact]
    public void WithoutGradientsTheResultDoesNotTrackThem()
    {
        var data = TestData.Clustered(8, 3, keysPerClass: 5, queriesPerClass: 1, seed: 109);
        using var memory = Create(8, 3);
        using (var k = data.KeyTensor())
        using (var y = data.KeyLabelTensor())
        {
            memory.Add(k, y);
        }

        using var q = data.QueryTensor();
        using var logMass = memory.ClassLogMass(q, [10.0]);
        Assert.False(logMass.requires_grad);
        using var tracked = data.QueryTensor().requires_grad_(true);
        using (no_grad())
        {
            using var inside = memory.ClassLogMass(tracked, [10.0]);
            Assert.False(inside.requires_grad);
        }
    }

    [Fact]
    public void QueriesWithANonFiniteRowAreRejectedNamingTheRow()
    {
        var data = TestData.Clustered(8, 3, keysPerClass: 5, queriesPerClass: 2, seed: 110);
        using var memory = Create(8, 3);
        using (var k = data.KeyTensor())
        using (var y = data.KeyLabelTensor())
        {
            memory.Add(k, y);
        }

        using var q = data.QueryTensor();
        q[4, 1].fill_(float.NaN);
        var e = Assert.Throws<ArgumentException>(() => memory.ClassLogMass(q, [10.0]));
        Assert.Contains("Row 4", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void WrongElementTypesAreRejected()
    {
        using var memory = Create(8, 3);
        using var keys64 = zeros(2, 8, dtype: ScalarType.Float64);
        using var labels = tensor(new long[] { 0, 1 });
        Assert.Contains("Float32", Assert.Throws<ArgumentException>(() => memory.Add(keys64, labels)).Message, StringComparison.Ordinal);
        using var keys = zeros(2, 8);
        using var floatLabels = zeros(2);
        Assert.Throws<ArgumentException>(() => memory.Add(keys, floatLabels));
        Assert.Throws<ArgumentException>(() => memory.ClassLogMass(keys64, [1.0]));
        Assert.Equal(0, memory.Count);
    }

    [Fact]
    public void AnEmptyBatchOfQueriesGivesAnEmptyResult()
    {
        var data = TestData.Clustered(8, 3, keysPerClass: 5, queriesPerClass: 1, seed: 111);
        using var memory = Create(8, 3);
        using (var k = data.KeyTensor())
        using (var y = data.KeyLabelTensor())
        {
            memory.Add(k, y);
        }

        using var q = zeros(0, 8);
        using var logMass = memory.ClassLogMass(q, [10.0, 20.0]);
        Assert.Equal(new long[] { 2, 0, 3 }, logMass.shape);
    }
}
