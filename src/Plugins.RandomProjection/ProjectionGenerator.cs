namespace ScalableCache.RandomProjection;

/// <summary>
/// Generates projection matrices from a seed, bit for bit the same on every run, machine, runtime and TorchSharp version.
/// </summary>
/// <remarks>
/// <para><b>Generator version 1.</b> The matrix <c>R</c> is <c>[k, d]</c>, row-major; <c>Apply(x) = x Rᵀ</c>. Row <c>i</c>
/// has its own SplitMix64 stream (Steele, Lea &amp; Flood 2014): its initial state is output <c>i + 1</c> of a SplitMix64
/// stream whose state starts at <c>Seed</c>; the row's <c>d</c> entries are then drawn from its stream in column order.
/// Rows are independent, so they are generated in parallel without changing a bit, and row <c>i</c> depends only on
/// <c>Seed</c>, <c>i</c>, <c>d</c> and (for the scale) <c>k</c>.</para>
/// <para><b>Uniforms.</b> <c>U = (z &gt;&gt; 11) · 2⁻⁵³ ∈ [0, 1)</c> for a 64-bit output <c>z</c>; exact.</para>
/// <para><b>Gaussian</b> (<c>N(0, 1/k)</c>): Marsaglia's polar form of Box–Muller. Draw <c>u = 2U₁ − 1</c>,
/// <c>v = 2U₂ − 1</c> until <c>0 &lt; s = u² + v² &lt; 1</c>; the entry is <c>u · √(−2 ln s / s) / √k</c> (the second
/// normal, in <c>v</c>, is discarded so every entry costs whole draws). The polar form needs no sine or cosine, and the
/// logarithm is <see cref="Ln"/>, built from IEEE-754 +, −, ×, ÷ only (the CRT's <c>log</c> may differ by an ulp between
/// platforms); with <c>√</c> (correctly rounded by IEEE-754) every step is exactly specified. .NET never contracts
/// <c>a·b + c</c> into a fused multiply-add on its own, so the double result is the same everywhere, and so is its
/// rounding to float32.</para>
/// <para><b>Achlioptas</b> (2003): <c>√(3/k) · {+1, 0, −1}</c> with probabilities <c>1/6, 2/3, 1/6</c>: with
/// <c>r = ⌊6U⌋</c>, <c>r = 0 → +1</c>, <c>r = 1 → −1</c>, otherwise 0.</para>
/// <para><b>Very sparse</b> (Li, Hastie &amp; Church 2006) with <c>s = √d</c>: <c>√(s/k) · {+1, 0, −1}</c> with probabilities
/// <c>1/(2s), 1 − 1/s, 1/(2s)</c>: <c>U &lt; 1/(2s) → +1</c>, <c>U &lt; 1/s → −1</c>, otherwise 0.</para>
/// <para>Each entry's variance is <c>1/k</c>, so <c>E‖Rx‖² = ‖x‖²</c>. Changing any of this changes the matrices; bump
/// <see cref="Version"/> and keep the old path so stored definitions still regenerate (the golden-value tests pin it).</para>
/// </remarks>
internal static class ProjectionGenerator
{
    /// <summary>The generator version this code implements.</summary>
    public const int Version = 1;

    private const ulong Golden = 0x9E3779B97F4A7C15UL;
    private const double Ln2 = 0.6931471805599453094172321214581766;
    private const double Sqrt2 = 1.4142135623730950488016887242096981;
    private const double UnitScale = 1.0 / (1UL << 53);

    /// <summary>The matrix <c>[k, d]</c>, row-major, as float32.</summary>
    public static float[] Generate(RandomProjectionKind kind, ulong seed, int inputDimension, int outputDimension)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(inputDimension, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(outputDimension, 1);
        var d = inputDimension;
        var k = outputDimension;
        var matrix = new float[checked((long)k * d)];
        var options = new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, Environment.ProcessorCount) };
        Parallel.For(0, k, options, i => FillRow(kind, RowState(seed, i), k, matrix.AsSpan(i * d, d)));
        return matrix;
    }

    /// <summary>The expected fraction of non-zero entries of a <paramref name="kind"/> matrix with input dimension <paramref name="d"/>.</summary>
    public static double Density(RandomProjectionKind kind, int d) => kind switch
    {
        RandomProjectionKind.Gaussian => 1.0,
        RandomProjectionKind.Achlioptas => 1.0 / 3.0,
        RandomProjectionKind.VerySparse => Math.Min(1.0, 1.0 / Math.Sqrt(d)),
        _ => throw new ArgumentOutOfRangeException(nameof(kind), kind, "Unknown projection kind."),
    };

    /// <summary>Initial state of row <paramref name="row"/>'s stream: output <c>row + 1</c> of the stream seeded with <paramref name="seed"/>.</summary>
    internal static ulong RowState(ulong seed, long row) => Mix(unchecked(seed + (Golden * (ulong)(row + 1))));

    /// <summary>SplitMix64's output function (Stafford's variant 13).</summary>
    internal static ulong Mix(ulong z)
    {
        unchecked
        {
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }
    }

    /// <summary>
    /// Natural logarithm of a positive, finite, normal <paramref name="x"/> from IEEE-754 basic operations only:
    /// <c>x = m·2ᵉ</c> with <c>m ∈ [√½, √2)</c>, <c>ln m = 2 atanh t</c>, <c>t = (m − 1)/(m + 1)</c>, <c>|t| ≤ 0.172</c>, summed to
    /// <c>t²³</c> (truncation below 1e-19 relative); error within a few ulps of the true value.
    /// </summary>
    internal static double Ln(double x)
    {
        var bits = BitConverter.DoubleToInt64Bits(x);
        var exponent = (int)((bits >> 52) & 0x7FF) - 1023;
        var m = BitConverter.Int64BitsToDouble((bits & 0x000F_FFFF_FFFF_FFFFL) | 0x3FF0_0000_0000_0000L);
        if (m > Sqrt2)
        {
            m *= 0.5;
            exponent++;
        }

        var t = (m - 1.0) / (m + 1.0);
        var t2 = t * t;
        var sum = 1.0 / 23.0;
        for (var j = 21; j >= 1; j -= 2)
        {
            sum = (sum * t2) + (1.0 / j);
        }

        return (exponent * Ln2) + (2.0 * t * sum);
    }

    private static void FillRow(RandomProjectionKind kind, ulong state, int k, Span<float> row)
    {
        var d = row.Length;
        switch (kind)
        {
            case RandomProjectionKind.Gaussian:
            {
                var scale = 1.0 / Math.Sqrt(k);
                for (var j = 0; j < d; j++)
                {
                    double u, s;
                    do
                    {
                        u = (2.0 * Uniform(ref state)) - 1.0;
                        var v = (2.0 * Uniform(ref state)) - 1.0;
                        s = (u * u) + (v * v);
                    }
                    while (s >= 1.0 || s == 0.0);

                    row[j] = (float)(u * Math.Sqrt(-2.0 * Ln(s) / s) * scale);
                }

                break;
            }

            case RandomProjectionKind.Achlioptas:
            {
                var value = (float)Math.Sqrt(3.0 / k);
                for (var j = 0; j < d; j++)
                {
                    var r = (int)(Uniform(ref state) * 6.0);
                    row[j] = r switch { 0 => value, 1 => -value, _ => 0f };
                }

                break;
            }

            case RandomProjectionKind.VerySparse:
            {
                var sparsity = Math.Sqrt(d);
                var value = (float)Math.Sqrt(sparsity / k);
                var half = 0.5 / sparsity;
                var whole = 1.0 / sparsity;
                for (var j = 0; j < d; j++)
                {
                    var u = Uniform(ref state);
                    row[j] = u < half ? value : u < whole ? -value : 0f;
                }

                break;
            }

            default:
                throw new ArgumentOutOfRangeException(nameof(kind), kind, "Unknown projection kind.");
        }
    }

    private static double Uniform(ref ulong state)
    {
        state = unchecked(state + Golden);
        return (Mix(state) >> 11) * UnitScale;
    }
}
