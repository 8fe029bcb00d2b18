using Microsoft.Extensions.DependencyInjection;
using ScalableCache.Core;
using ScalableCache.Core.Evaluation;
using ScalableCache.RandomProjection;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>
/// The random-projection decorator over a brute-force reference memory (<see cref="RandomProjectionNaiveMemory"/>, below) and over the
/// exact store. Tolerances: the decorator's output is the inner memory's log-mass of the projected vectors, so it is
/// compared with the reference computed on the same projected vectors to float32 rounding (1e-5 relative on vectors,
/// 1e-4 absolute on log-masses at θ ≤ 50); against the unprojected memory only the top class is compared (agreement ≥ 0.95).
/// </summary>
public sealed class RandomProjectionCacheMemoryTests
{
    private static readonly double[] Thetas = [10.0, 50.0];

    internal static RandomProjectionCacheMemoryFactory NaiveFactory(Action<RandomProjectionCacheOptions>? configure = null)
    {
        var options = new RandomProjectionCacheOptions { Inner = RandomProjectionNaiveMemoryFactory.ProviderName };
        configure?.Invoke(options);
        return new RandomProjectionCacheMemoryFactory(options, [new RandomProjectionNaiveMemoryFactory()]);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void InnerMemoryReceivesTheProjectedVectorsAndAnswersForThem(bool renormalize)
    {
        var factory = NaiveFactory(o =>
        {
            o.OutputDimension = 16;
            o.Renormalize = renormalize;
            o.Seed = 3;
        });
        using var memory = factory.CreateProjected(64, 5);
        var inner = Assert.IsType<RandomProjectionNaiveMemory>(memory.Inner);
        Assert.Equal(64, memory.Dimension);
        Assert.Equal(16, inner.Dimension);
        Assert.Equal(renormalize, memory.Renormalize);
        Assert.Equal(new RandomProjectionDefinition(RandomProjectionKind.Gaussian, 3, 64, 16), memory.Projection.Definition);

        var data = TestData.Clustered(64, 5, keysPerClass: 6, queriesPerClass: 3, seed: 21, noise: 0.5);
        using var scope = NewDisposeScope();
        var keys = data.KeyTensor();
        memory.Add(keys, data.KeyLabelTensor());
        Assert.Equal(data.KeyCount, memory.Count);

        var expectedKeys = memory.Projection.Apply(keys);
        if (renormalize)
        {
            expectedKeys = expectedKeys / expectedKeys.norm(1, keepdim: true);
            Assert.True(inner.Keys().norm(1).sub(1).abs().max().item<float>() < 1e-5f);
        }

        Assert.True(inner.Keys().allclose(expectedKeys, rtol: 1e-5, atol: 1e-6));

        var queries = data.QueryTensor();
        var projectedQueries = memory.Projection.Apply(queries);
        if (renormalize)
        {
            projectedQueries = projectedQueries / projectedQueries.norm(1, keepdim: true);
        }

        var expected = SimilarityLogMass.Compute(projectedQueries.mm(expectedKeys.t()), data.KeyLabelTensor(), 5, Thetas);
        var actual = memory.ClassLogMass(queries, Thetas);
        Assert.Equal(new long[] { 2, data.QueryCount, 5 }, actual.shape);
        Assert.True(actual.allclose(expected, rtol: 1e-5, atol: 1e-4));
    }

    [Fact]
    public void RenormalisingRescalesEachVectorToTheLengthOfItsInput()
    {
        var factory = NaiveFactory(o => o.Ratio = 0.25);
        using var memory = factory.CreateProjected(64, 3);
        using var scope = NewDisposeScope();
        var keys = TestData.RandomUnit(4, 64, seed: 2) * tensor(new[] { 1f, 2f, 0.5f, 0f }).unsqueeze(1);
        memory.Add(keys, tensor(new long[] { 0, 1, 2, 0 }));
        var norms = Assert.IsType<RandomProjectionNaiveMemory>(memory.Inner).Keys().norm(1).data<float>().ToArray();
        Assert.Equal(new[] { 1f, 2f, 0.5f, 0f }, norms, (a, b) => Math.Abs(a - b) < 1e-5f);
    }

    /// <summary>
    /// Clustered data (10 classes, 60 keys each, key–centre cosine ≈ 0.9 at noise 0.5 and ≈ 0.7 at noise 1), d = 512 → k = 64
    /// (Ratio 0.125), over the exact store: the projected memory picks the same top class as the exact store without
    /// projection for ≥ 95 % of queries at θ = 10 and 50. The same run measures re-normalisation: with it, <c>p_mem</c> is
    /// closer to the unprojected one (mean L1 distance) than without it. Printed, for the record (seed 31, projection seed 8):
    /// noise 0.5: agreement 100 % / 100 %, L1 0.006 / 0.018 (re-normalised / raw); noise 1: 99.8 % / 100 %, 0.090 / 0.116.
    /// </summary>
    [Fact]
    public void TopClassAgreesWithTheUnprojectedExactMemoryOnClusteredData()
    {
        const int d = 512;
        const int classes = 10;
        using var services = new ServiceCollection().AddExactCache().BuildServiceProvider();
        var exact = services.GetServices<ICacheMemoryFactory>().Single(f => f.Provider == "Exact");
        var report = new List<string>();
        foreach (var noise in new[] { 0.5, 1.0 })
        {
            var data = TestData.Clustered(d, classes, keysPerClass: 60, queriesPerClass: 30, seed: 31, noise: noise);
            using var reference = exact.Create(d, classes);
            AddAll(reference, data);
            using var scope = NewDisposeScope();
            var queries = data.QueryTensor();
            var expected = reference.ClassLogMass(queries, Thetas);
            var gaps = new Dictionary<bool, float>();
            foreach (var renormalize in new[] { true, false })
            {
                var options = new RandomProjectionCacheOptions { Inner = "Exact", Ratio = 0.125, Renormalize = renormalize, Seed = 8 };
                var factory = new RandomProjectionCacheMemoryFactory(options, [exact]);
                using var memory = factory.CreateProjected(d, classes);
                Assert.Equal(64, memory.Inner.Dimension);
                AddAll(memory, data);
                var actual = memory.ClassLogMass(queries, Thetas);
                var agreement = actual.argmax(2).eq(expected.argmax(2)).to_type(ScalarType.Float64).mean().item<double>();
                gaps[renormalize] = (LogMass.ToProbabilities(actual) - LogMass.ToProbabilities(expected)).abs().sum(2).mean().item<float>();
                report.Add($"noise {noise}, renormalize={renormalize}: top-class agreement {agreement:P1}, mean L1 distance of p_mem {gaps[renormalize]:F3}");
                if (renormalize)
                {
                    Assert.True(agreement >= 0.95, $"noise {noise}: agreement {agreement:P1}");
                }
            }

            Assert.True(gaps[true] < gaps[false], $"noise {noise}: L1 distance re-normalised {gaps[true]}, raw {gaps[false]}");
        }

        TestContext.Current.TestOutputHelper?.WriteLine(string.Join(Environment.NewLine, report));
    }

    [Fact]
    public void ValidationSpeaksOfTheCallersDimensionAndNamesTheRow()
    {
        using var memory = NaiveFactory(o => o.OutputDimension = 8).CreateProjected(40, 4);
        using var scope = NewDisposeScope();
        var wrong = zeros(3, 8);
        Assert.Contains("[n, 40]", Assert.Throws<ArgumentException>(() => memory.Add(wrong, zeros(3, dtype: ScalarType.Int64))).Message, StringComparison.Ordinal);
        Assert.Contains("[b, 40]", Assert.Throws<ArgumentException>(() => memory.ClassLogMass(wrong, Thetas)).Message, StringComparison.Ordinal);

        var keys = TestData.RandomUnit(5, 40, seed: 4);
        keys[4, 39].fill_(float.NegativeInfinity);
        var error = Assert.Throws<ArgumentException>(() => memory.Add(keys, tensor(new long[] { 0, 1, 2, 3, 0 })));
        Assert.Contains("Row 4 of keys", error.Message, StringComparison.Ordinal);
        Assert.Equal("keys", error.ParamName);

        keys[4, 39].fill_(0f);
        error = Assert.Throws<ArgumentException>(() => memory.Add(keys, tensor(new long[] { 0, 1, 7, 3, 0 })));
        Assert.Contains("Row 2 has label 7", error.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => memory.Add(keys, zeros(5, dtype: ScalarType.Float32)));
        Assert.Throws<ArgumentException>(() => memory.Add(keys.to_type(ScalarType.Float64), zeros(5, dtype: ScalarType.Int64)));
        Assert.Equal(0, memory.Count);

        memory.Add(keys, tensor(new[] { 0, 1, 2, 3, 0 })); // int32 labels are accepted
        Assert.Equal(5, memory.Count);

        var queries = TestData.RandomUnit(3, 40, seed: 5);
        queries[1, 0].fill_(float.NaN);
        error = Assert.Throws<ArgumentException>(() => memory.ClassLogMass(queries, Thetas));
        Assert.Contains("Row 1 of queries", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void EmptyBatchesPassThrough()
    {
        using var memory = NaiveFactory(o => o.OutputDimension = 8).CreateProjected(40, 4);
        using var scope = NewDisposeScope();
        memory.Add(zeros(0, 40), zeros(0, dtype: ScalarType.Int64));
        Assert.Equal(0, memory.Count);
        var none = memory.ClassLogMass(zeros(0, 40), Thetas);
        Assert.Equal(new long[] { 2, 0, 4 }, none.shape);
        var empty = memory.ClassLogMass(TestData.RandomUnit(2, 40, seed: 1), Thetas);
        Assert.All(empty.data<float>().ToArray(), v => Assert.Equal(float.NegativeInfinity, v));
    }

    [Fact]
    public void GradientsFlowThroughTheProjectionToTheQueries()
    {
        using var services = new ServiceCollection().AddExactCache().AddRandomProjectionCache(o => o.OutputDimension = 12).BuildServiceProvider();
        var factory = services.GetRequiredService<RandomProjectionCacheMemoryFactory>();
        using var memory = factory.Create(48, 3);
        var data = TestData.Clustered(48, 3, keysPerClass: 5, queriesPerClass: 2, seed: 6, noise: 0.5);
        AddAll(memory, data);
        using var scope = NewDisposeScope();
        var queries = data.QueryTensor().requires_grad_();
        var logMass = memory.ClassLogMass(queries, [20.0]);
        logMass.select(2, 0).sum().backward();
        var grad = queries.grad;
        Assert.NotNull(grad);
        Assert.Equal(queries.shape, grad.shape);
        Assert.True(isfinite(grad).all().item<bool>());
        Assert.True(grad.abs().sum().item<float>() > 0);
    }

    /// <summary>
    /// Workout: build, save the projection (definition and matrix bytes), restore it into a new memory over the same inner
    /// provider, add the same keys: identical answers, bit for bit; regenerating from the definition alone gives the same.
    /// </summary>
    [Fact]
    public void SavedProjectionRestoresToIdenticalAnswers()
    {
        using var services = new ServiceCollection()
            .AddExactCache()
            .AddRandomProjectionCache(o =>
            {
                o.Kind = RandomProjectionKind.Achlioptas;
                o.Ratio = 0.25;
                o.Seed = 99;
            })
            .BuildServiceProvider();
        var factory = services.GetRequiredService<RandomProjectionCacheMemoryFactory>();
        var data = TestData.Clustered(128, 4, keysPerClass: 20, queriesPerClass: 4, seed: 7, noise: 1.0);
        using var original = factory.CreateProjected(128, 4);
        AddAll(original, data);

        var definition = original.Projection.Definition;
        var bytes = original.Projection.ExportMatrix();
        using var imported = RandomProjectionMatrix.Import(definition, bytes);
        using var restored = factory.CreateProjected(imported, 4);
        AddAll(restored, data);
        using var regeneratedProjection = RandomProjectionMatrix.Create(definition);
        using var regenerated = factory.CreateProjected(regeneratedProjection, 4);
        AddAll(regenerated, data);

        using var scope = NewDisposeScope();
        var queries = data.QueryTensor();
        var a = original.ClassLogMass(queries, Thetas);
        Assert.True(a.eq(restored.ClassLogMass(queries, Thetas)).all().item<bool>());
        Assert.True(a.eq(regenerated.ClassLogMass(queries, Thetas)).all().item<bool>());
        Assert.Equal(bytes, restored.Projection.ExportMatrix());
    }

    [Theory]
    [InlineData(4096, null, 0.125, 512)]
    [InlineData(100, null, 0.07, 7)]
    [InlineData(100, null, null, 13)]
    [InlineData(5, null, 0.01, 1)]
    [InlineData(64, 64, null, 64)]
    [InlineData(64, 10, null, 10)]
    public void OutputDimensionComesFromTheAbsoluteSettingOrTheRatio(int d, int? k, double? ratio, int expected)
    {
        var options = new RandomProjectionCacheOptions { OutputDimension = k, Ratio = ratio };
        Assert.Empty(options.Validate());
        Assert.Equal(expected, options.ResolveOutputDimension(d));
    }

    [Fact]
    public void AnOutputDimensionAboveTheKeyDimensionFailsOnCreate()
    {
        var factory = NaiveFactory(o => o.OutputDimension = 65);
        var error = Assert.Throws<ArgumentException>(() => factory.Create(64, 2));
        Assert.Contains("exceeds the key dimension (64)", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void InvalidOptionsAndUnknownInnerFailWhenTheFactoryIsBuilt()
    {
        var error = Assert.Throws<ArgumentException>(() => NaiveFactory(o =>
        {
            o.Inner = "randomprojection";
            o.Ratio = 1.5;
            o.OutputDimension = 0;
        }));
        Assert.Contains("must not be RandomProjection itself", error.Message, StringComparison.Ordinal);
        Assert.Contains("Ratio must lie in (0, 1]", error.Message, StringComparison.Ordinal);
        Assert.Contains("OutputDimension must be at least 1", error.Message, StringComparison.Ordinal);
        Assert.Contains("not both", error.Message, StringComparison.Ordinal);

        var unknown = Assert.Throws<InvalidOperationException>(() => NaiveFactory(o => o.Inner = "Nope"));
        Assert.Contains("'Nope'", unknown.Message, StringComparison.Ordinal);
        Assert.Contains("Registered providers it can wrap: Naive", unknown.Message, StringComparison.Ordinal);
        var inner = Assert.IsType<UnknownProviderException>(unknown.InnerException);
        Assert.Equal(["Naive"], inner.Registered);

        // Inner names are case-insensitive, like Cache:Provider.
        Assert.Equal("Naive", NaiveFactory(o => o.Inner = " naive ").InnerFactory.Provider);
    }

    [Fact]
    public void AMemoryCreatedAndFilledInsideADisposeScopeOutlivesIt()
    {
        var data = TestData.Clustered(32, 3, keysPerClass: 4, queriesPerClass: 1, seed: 3);
        IRandomProjectionCacheMemory memory;
        using (NewDisposeScope())
        {
            memory = NaiveFactory(o => o.OutputDimension = 8).CreateProjected(32, 3);
            memory.Add(data.KeyTensor(), data.KeyLabelTensor());
        }

        using (memory)
        using (var queries = data.QueryTensor())
        using (var logMass = memory.ClassLogMass(queries, Thetas))
        {
            Assert.Equal(12, memory.Count);
            Assert.True(isfinite(logMass).all().item<bool>());
        }
    }

    [Fact]
    public void DisposeReleasesTheInnerMemory()
    {
        var memory = NaiveFactory(o => o.OutputDimension = 4).CreateProjected(16, 2);
        var inner = Assert.IsType<RandomProjectionNaiveMemory>(memory.Inner);
        memory.Dispose();
        memory.Dispose();
        Assert.True(inner.Disposed);
        Assert.Throws<ObjectDisposedException>(() => memory.Projection.ToArray());
    }

    private static void AddAll(ICacheMemory memory, TestData data)
    {
        using var keys = data.KeyTensor();
        using var labels = data.KeyLabelTensor();
        memory.Add(keys, labels);
    }
}

/// <summary>Creates <see cref="RandomProjectionNaiveMemory"/> instances (provider <c>Naive</c>).</summary>
internal sealed class RandomProjectionNaiveMemoryFactory : ICacheMemoryFactory
{
    public const string ProviderName = "Naive";

    public string Provider => ProviderName;

    public ICacheMemory Create(int dimension, int classCount) => new RandomProjectionNaiveMemory(dimension, classCount);
}

/// <summary>
/// Brute-force reference memory: keeps every key (float32, CPU) and scores with <see cref="SimilarityLogMass"/> over all
/// of them under a lock. Minimal validation (shape); it records what the decorator hands it.
/// </summary>
internal sealed class RandomProjectionNaiveMemory(int dimension, int classCount) : ICacheMemory
{
    private readonly Lock _gate = new();
    private readonly List<Tensor> _keys = [];
    private readonly List<Tensor> _labels = [];

    public string Provider => RandomProjectionNaiveMemoryFactory.ProviderName;

    public int Dimension { get; } = dimension;

    public int ClassCount { get; } = classCount;

    public long Count
    {
        get
        {
            lock (_gate)
            {
                return _labels.Sum(l => l.shape[0]);
            }
        }
    }

    public bool Disposed { get; private set; }

    public void Add(Tensor keys, Tensor labels)
    {
        ObjectDisposedException.ThrowIf(Disposed, this);
        if (keys.dim() != 2 || keys.shape[1] != Dimension || labels.shape[0] != keys.shape[0])
        {
            throw new ArgumentException($"keys has shape [{string.Join(", ", keys.shape)}]; expected [n, {Dimension}].", nameof(keys));
        }

        // Owned by this memory, not by whatever dispose scope the caller has open.
        var k = keys.detach().to(ScalarType.Float32, CPU).clone().DetachFromDisposeScope();
        var y = labels.detach().to(ScalarType.Int64, CPU).clone().DetachFromDisposeScope();
        lock (_gate)
        {
            _keys.Add(k);
            _labels.Add(y);
        }
    }

    /// <summary>All keys added so far, <c>[n, Dimension]</c> (a new tensor).</summary>
    public Tensor Keys()
    {
        lock (_gate)
        {
            return _keys.Count == 0 ? zeros(0, Dimension) : cat(_keys, 0);
        }
    }

    public Tensor ClassLogMass(Tensor queries, ReadOnlySpan<double> thetas)
    {
        ObjectDisposedException.ThrowIf(Disposed, this);
        Tensor keys, labels;
        lock (_gate)
        {
            keys = _keys.Count == 0 ? zeros(0, Dimension) : cat(_keys, 0);
            labels = _labels.Count == 0 ? zeros(0, dtype: ScalarType.Int64) : cat(_labels, 0);
        }

        using var scope = NewDisposeScope();
        using (keys)
        using (labels)
        {
            var s = queries.to(CPU).mm(keys.t());
            return SimilarityLogMass.Compute(s, labels, ClassCount, thetas).MoveToOuterDisposeScope();
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            Disposed = true;
            foreach (var t in _keys.Concat(_labels))
            {
                t.Dispose();
            }

            _keys.Clear();
            _labels.Clear();
        }
    }
}
