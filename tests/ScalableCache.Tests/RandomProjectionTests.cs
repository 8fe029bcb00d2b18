using System.Security.Cryptography;
using CsCheck;
using ScalableCache.RandomProjection;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>
/// The seeded Johnson–Lindenstrauss matrices: reproducibility (pinned bits), the distribution of each kind, the
/// export/import round trip and the JL property. Tolerance of the JL check: for unit x, y with inner product ρ, the
/// projected inner product has standard deviation <c>√((1 + ρ²)/k) ≤ √(2/k)</c>; at k = 256 the stated tolerance
/// <c>ε = 2.5 · √(2/k) = 0.221</c> holds with probability ≥ 98.7 % per pair for every ρ, and the property asks for ≥ 95 %.
/// </summary>
public sealed class RandomProjectionTests
{
    private const int JlInputDimension = 4096;
    private const int JlOutputDimension = 256;
    private const double MinimumWithinFraction = 0.95;

    private static readonly double JlTolerance = 2.5 * Math.Sqrt(2.0 / JlOutputDimension);

    public static TheoryData<RandomProjectionKind> Kinds => [.. Enum.GetValues<RandomProjectionKind>()];

    [Theory]
    [MemberData(nameof(Kinds))]
    public void SameSeedGivesTheSameBytesAndAnotherSeedDiffers(RandomProjectionKind kind)
    {
        using var a = RandomProjectionMatrix.Create(kind, 123, 200, 30);
        using var b = RandomProjectionMatrix.Create(kind, 123, 200, 30);
        using var c = RandomProjectionMatrix.Create(kind, 124, 200, 30);
        Assert.Equal(a.ExportMatrix(), b.ExportMatrix());
        Assert.NotEqual(a.ExportMatrix(), c.ExportMatrix());
        Assert.Equal(a.MatrixByteCount, a.ExportMatrix().LongLength);
    }

    /// <summary>
    /// Generator version 1, pinned: the first 16 entries (4 × 16 matrix, seed 42) as float32 bits, and the SHA-256 of a
    /// 70 × 300 matrix. If this fails the generator changed: stored definitions would regenerate different matrices.
    /// </summary>
    [Theory]
    [InlineData(RandomProjectionKind.Gaussian,
        new[] { 0xBD7F7BFBu, 0xBC4433DEu, 0x3DC9BC3Fu, 0xBECFC72Eu, 0xBE980C60u, 0x3E6FE8A2u, 0xBEDCF1BBu, 0x3E26591Bu, 0x3F620416u, 0x3E3F2319u, 0x3E66DCFEu, 0x3F2B64C2u, 0x3DF6C3F0u, 0x3F2BBD23u, 0x3E1CA834u, 0x3F136267u },
        "B295388800EA7878CD4DC84DAB9DFCD1079BAC5D15948830D238211EE74FF46A")]
    [InlineData(RandomProjectionKind.Achlioptas,
        new[] { 0u, 0u, 0u, 0x3F5DB3D7u, 0u, 0x3F5DB3D7u, 0xBF5DB3D7u, 0u, 0x3F5DB3D7u, 0u, 0u, 0xBF5DB3D7u, 0xBF5DB3D7u, 0xBF5DB3D7u, 0u, 0u },
        "5482DB84443461A4E279E508F910F0E373F80B6515A767ECDB03611B8113B0A4")]
    [InlineData(RandomProjectionKind.VerySparse,
        new[] { 0u, 0u, 0u, 0x3F800000u, 0u, 0x3F800000u, 0xBF800000u, 0u, 0x3F800000u, 0u, 0u, 0xBF800000u, 0xBF800000u, 0u, 0u, 0u },
        "3A90921C192DDF32F26D16A75B6AA6DF02CCC0426E392A1F9E0B9346D6911D72")]
    public void GoldenValuesOfGeneratorVersion1(RandomProjectionKind kind, uint[] firstEntryBits, string sha256)
    {
        using var small = RandomProjectionMatrix.Create(kind, 42, 16, 4);
        Assert.Equal(1, small.Definition.GeneratorVersion);
        var values = small.ToArray();
        Assert.Equal(firstEntryBits, values.Take(16).Select(v => unchecked((uint)BitConverter.SingleToInt32Bits(v))).ToArray());

        using var larger = RandomProjectionMatrix.Create(kind, 42, 300, 70);
        Assert.Equal(sha256, Convert.ToHexString(SHA256.HashData(larger.ExportMatrix())));
    }

    [Fact]
    public void LogarithmMatchesTheRuntimeToAFewUlps()
    {
        var random = new Random(5);
        for (var i = 0; i < 20_000; i++)
        {
            var x = Math.Exp((random.NextDouble() - 0.5) * 100);
            var expected = Math.Log(x);
            var ulp = Math.BitIncrement(Math.Abs(expected)) - Math.Abs(expected);
            Assert.True(Math.Abs(ProjectionGenerator.Ln(x) - expected) <= 4 * ulp,
                $"ln({x:R}) = {ProjectionGenerator.Ln(x):R}, runtime {expected:R}");
        }

        Assert.Equal(0.0, ProjectionGenerator.Ln(1.0));
        Assert.Equal(Math.Log(2.0), ProjectionGenerator.Ln(2.0), tolerance: 4 * (Math.BitIncrement(Math.Log(2.0)) - Math.Log(2.0))); // 4 ulp, as above
    }

    [Fact]
    public void GaussianEntriesHaveMeanZeroAndVarianceOneOverK()
    {
        const int k = 64;
        using var projection = RandomProjectionMatrix.Create(RandomProjectionKind.Gaussian, 9, 2000, k);
        var values = projection.ToArray().Select(v => (double)v).ToArray();
        var mean = values.Average();
        var variance = values.Select(v => (v - mean) * (v - mean)).Average();
        var fourth = values.Select(v => Math.Pow(v - mean, 4)).Average() / (variance * variance);
        // n = 128,000 entries: the mean's standard error is √(1/k/n) ≈ 3.5e-4, the variance's relative one √(2/n) ≈ 0.4 %.
        Assert.InRange(mean, -2e-3, 2e-3);
        Assert.InRange(variance * k, 0.98, 1.02);
        Assert.InRange(fourth, 2.9, 3.1); // Gaussian kurtosis
        Assert.Equal(1.0, projection.Density);
    }

    [Theory]
    [InlineData(RandomProjectionKind.Achlioptas, 1000)]
    [InlineData(RandomProjectionKind.VerySparse, 1024)]
    [InlineData(RandomProjectionKind.VerySparse, 4096)]
    public void SparseEntriesTakeThreeValuesAtTheStatedDensity(RandomProjectionKind kind, int d)
    {
        const int k = 50;
        using var projection = RandomProjectionMatrix.Create(kind, 11, d, k);
        var values = projection.ToArray();
        var magnitude = kind == RandomProjectionKind.Achlioptas ? (float)Math.Sqrt(3.0 / k) : (float)Math.Sqrt(Math.Sqrt(d) / k);
        Assert.All(values, v => Assert.True(v == 0 || v == magnitude || v == -magnitude, $"unexpected entry {v}"));
        var n = (double)values.Length;
        var density = values.Count(v => v != 0) / n;
        var plus = values.Count(v => v > 0) / n;
        var expected = projection.Density;
        var standardError = Math.Sqrt(expected * (1 - expected) / n);
        Assert.InRange(density, expected - (5 * standardError), expected + (5 * standardError));
        Assert.InRange(plus, (expected / 2) - (5 * standardError), (expected / 2) + (5 * standardError));
        Assert.Equal(kind == RandomProjectionKind.Achlioptas ? 1.0 / 3 : 1 / Math.Sqrt(d), expected, tolerance: 1e-12);
        var variance = values.Select(v => (double)v * v).Average();
        Assert.InRange(variance * k, 0.9, 1.1); // every kind has entry variance 1/k
    }

    [Fact]
    public void ApplyIsTheMatrixProductWithTheTransposedMatrix()
    {
        using var projection = RandomProjectionMatrix.Create(RandomProjectionKind.Gaussian, 3, 24, 5);
        var matrix = projection.ToArray();
        using var x = TestData.RandomUnit(7, 24, seed: 3);
        using var y = projection.Apply(x);
        Assert.Equal(new long[] { 7, 5 }, y.shape);
        var xs = x.data<float>().ToArray();
        var ys = y.data<float>().ToArray();
        for (var r = 0; r < 7; r++)
        {
            for (var i = 0; i < 5; i++)
            {
                double expected = 0, magnitude = 0;
                for (var j = 0; j < 24; j++)
                {
                    expected += (double)xs[(r * 24) + j] * matrix[(i * 24) + j];
                    magnitude += Math.Abs((double)xs[(r * 24) + j] * matrix[(i * 24) + j]);
                }

                // A float32 sum of 24 products, in any order and fused or not, errs by at most γ₂₄·Σ|x_j m_ij| < 25·u·Σ|x_j m_ij|
                // (u = 2⁻²⁴); the double reference is exact to far below that.
                Assert.Equal(expected, ys[(r * 5) + i], tolerance: 25 * Math.ScaleB(1.0, -24) * magnitude);
            }
        }

        using var empty = zeros(0, 24);
        using var none = projection.Apply(empty);
        Assert.Equal(new long[] { 0, 5 }, none.shape);
        using var wrong = zeros(2, 23);
        Assert.Contains("[n, 24]", Assert.Throws<ArgumentException>(() => projection.Apply(wrong)).Message, StringComparison.Ordinal);
        using var doubles = zeros(2, 24, dtype: ScalarType.Float64);
        Assert.Throws<ArgumentException>(() => projection.Apply(doubles));
    }

    [Theory]
    [MemberData(nameof(Kinds))]
    public void ExportedBytesImportToTheSameProjection(RandomProjectionKind kind)
    {
        using var original = RandomProjectionMatrix.Create(kind, 77, 40, 12);
        var bytes = original.ExportMatrix();
        var definition = original.Definition with { };
        using var imported = RandomProjectionMatrix.Import(definition, bytes);
        using var regenerated = RandomProjectionMatrix.Create(definition);
        Assert.Equal(bytes, imported.ExportMatrix());
        Assert.Equal(bytes, regenerated.ExportMatrix());
        Assert.Equal(original.Definition, imported.Definition);
        using var clone = original.Clone();
        Assert.Equal(bytes, clone.ExportMatrix());

        using var x = TestData.RandomUnit(5, 40, seed: 1);
        using var a = original.Apply(x);
        using var b = imported.Apply(x);
        Assert.True(a.eq(b).all().item<bool>());

        // Little-endian float32, row-major [k, d]: entry (row 2, column 3) is at byte 4·(2·40 + 3).
        Assert.Equal(original.ToArray()[(2 * 40) + 3], BitConverter.ToSingle(bytes, 4 * ((2 * 40) + 3)));
    }

    [Fact]
    public void AProjectionCreatedInsideADisposeScopeOutlivesIt()
    {
        RandomProjectionMatrix projection;
        using (NewDisposeScope())
        {
            projection = RandomProjectionMatrix.Create(RandomProjectionKind.Gaussian, 1, 16, 4);
            projection.Clone().Dispose();
        }

        using (projection)
        using (var x = TestData.RandomUnit(2, 16, seed: 1))
        using (var y = projection.Apply(x))
        {
            Assert.Equal(new long[] { 2, 4 }, y.shape);
            Assert.Equal(64, projection.ToArray().Length);
        }
    }

    [Fact]
    public void ImportRejectsWrongLengthNonFiniteEntriesAndBadDefinitions()
    {
        var definition = new RandomProjectionDefinition(RandomProjectionKind.Gaussian, 1, 4, 2);
        Assert.Contains("32 bytes", Assert.Throws<ArgumentException>(() => RandomProjectionMatrix.Import(definition, new byte[31])).Message, StringComparison.Ordinal);
        var bytes = new byte[32];
        BitConverter.GetBytes(float.NaN).CopyTo(bytes, 4 * 5);
        Assert.Contains("row 1, column 1", Assert.Throws<ArgumentException>(() => RandomProjectionMatrix.Import(definition, bytes)).Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentException>(() => RandomProjectionMatrix.Create(RandomProjectionKind.Gaussian, 1, 0, 2));
        Assert.Throws<ArgumentException>(() => RandomProjectionMatrix.Create((RandomProjectionKind)17, 1, 4, 2));
        var future = definition with { GeneratorVersion = 2 };
        Assert.Contains("Generator version 2", Assert.Throws<ArgumentException>(() => RandomProjectionMatrix.Create(future)).Message, StringComparison.Ordinal);
        using var imported = RandomProjectionMatrix.Import(future, new byte[32]);
        Assert.Equal(2, imported.Definition.GeneratorVersion);
    }

    /// <summary>
    /// JL property (CsCheck, a few seeds per kind): pairs of unit vectors in d = 4096 with inner products spread over
    /// [−1, 1]; after projection to k = 256 at least 95 % of the pairs keep their inner product within ε = 0.221, both as
    /// raw inner products and as cosines of the projections (the decorator's re-normalised score).
    /// </summary>
    [Theory]
    [MemberData(nameof(Kinds))]
    public void InnerProductsArePreservedWithinTheJlTolerance(RandomProjectionKind kind)
    {
        Gen.Select(Gen.ULong, Gen.Int[0, 1_000_000]).Sample(
            (seed, dataSeed) =>
            {
                using var scope = NewDisposeScope();
                using var projection = RandomProjectionMatrix.Create(kind, seed, JlInputDimension, JlOutputDimension);
                var (x, y, rho) = CorrelatedPairs(200, JlInputDimension, dataSeed);
                var px = projection.Apply(x);
                var py = projection.Apply(y);
                var raw = (px * py).sum(1);
                var cosine = raw / (px.norm(1) * py.norm(1));
                var rawWithin = (raw - rho).abs().le(JlTolerance).to_type(ScalarType.Float64).mean().item<double>();
                var cosineWithin = (cosine - rho).abs().le(JlTolerance).to_type(ScalarType.Float64).mean().item<double>();
                TestContext.Current.TestOutputHelper?.WriteLine(
                    $"{kind}, seed {seed}: within ε = {JlTolerance:F3}: raw {rawWithin:P1}, cosine {cosineWithin:P1}; max |error| raw {(raw - rho).abs().max().item<float>():F3}");
                return rawWithin >= MinimumWithinFraction && cosineWithin >= MinimumWithinFraction;
            },
            iter: 4,
            threads: 1);
    }

    /// <summary>
    /// Why the decorator re-normalises: for close pairs (ρ ≥ 0.8, the neighbours that dominate the log-mass at large θ)
    /// the cosine of the projections is a much better estimate of ρ than their raw inner product (variance about
    /// <c>(1 − ρ²)²/k</c> against <c>(1 + ρ²)/k</c>).
    /// </summary>
    [Fact]
    public void CosineOfProjectionsEstimatesCloseInnerProductsBetterThanTheRawInnerProduct()
    {
        using var scope = NewDisposeScope();
        using var projection = RandomProjectionMatrix.Create(RandomProjectionKind.Gaussian, 5, 1024, 64);
        var (x, y, rho) = CorrelatedPairs(400, 1024, 8, minimumRho: 0.8);
        var px = projection.Apply(x);
        var py = projection.Apply(y);
        var raw = (px * py).sum(1);
        var cosine = raw / (px.norm(1) * py.norm(1));
        var rawError = (raw - rho).abs().mean().item<float>();
        var cosineError = (cosine - rho).abs().mean().item<float>();
        TestContext.Current.TestOutputHelper?.WriteLine($"k=64, ρ≥0.8: mean |error| raw {rawError:F4}, cosine {cosineError:F4}");
        Assert.True(cosineError < rawError / 3, $"cosine error {cosineError} vs raw {rawError}");
    }

    /// <summary>Unit <c>x</c>, <c>y = ρx + √(1 − ρ²) z</c> with <c>z ⟂ x</c> unit, ρ uniform in [minimumRho, 1]; returns x, y, ρ (float32 tensors).</summary>
    internal static (Tensor X, Tensor Y, Tensor Rho) CorrelatedPairs(int pairs, int dimension, int seed, double minimumRho = -1)
    {
        var random = new Random(seed);
        using var scope = NewDisposeScope();
        var x = tensor(TestData.RandomUnitArray(pairs, dimension, random), [pairs, dimension]);
        var z = tensor(TestData.RandomUnitArray(pairs, dimension, random), [pairs, dimension]);
        z = z - ((z * x).sum(1, keepdim: true) * x);
        z = z / z.norm(1, keepdim: true);
        var rhoValues = Enumerable.Range(0, pairs).Select(_ => (float)(minimumRho + ((1 - minimumRho) * random.NextDouble()))).ToArray();
        var rho = tensor(rhoValues);
        var y = (rho.unsqueeze(1) * x) + ((1 - (rho * rho)).clamp_min(0).sqrt().unsqueeze(1) * z);
        return (x.MoveToOuterDisposeScope(), y.MoveToOuterDisposeScope(), rho.MoveToOuterDisposeScope());
    }
}
