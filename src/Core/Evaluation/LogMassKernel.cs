using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Evaluation;

/// <summary>
/// Fused CPU kernel for one block of similarities <c>S [n, b]</c> (row-major, key-major, <c>b</c> a multiple of
/// <see cref="Lanes"/>): the stabilising shift, every θ, and the log-add-exp merge into the running log-mass, in one
/// parallel loop over column tiles, with no intermediate tensors. Used by the exact store's CPU queries and by the layer
/// search's scoring (<see cref="LayerCombinationSearch"/>).
/// </summary>
/// <remarks>
/// Same mathematics as the exact store's tensor path: per tile of 64 queries, pass A sums
/// <c>exp(θ₀S − θ₀‖q‖·max‖k‖)</c> per class to get the shift <c>U</c> (refined at higher temperatures while
/// <c>θ_max · ln(n)/θ₀ &gt; 60</c>); pass B adds <c>exp(θ(S − U_y))</c> per class for every θ, reusing one exponential along
/// evenly spaced θ (<c>exp(θ_{i+1}D) = exp(θ_iD)·exp(δD)</c>). A tile's working set (shift, sums, <c>T × C × 64</c>
/// accumulators) stays in cache while <c>S</c> streams once per pass. Tiles own disjoint query columns, so the parallel
/// loop needs no synchronisation; it partitions dynamically, which keeps it efficient when cores are shared.
/// </remarks>
internal static unsafe class LogMassKernel
{
    /// <summary>Floats per vector; query columns are padded to a multiple of this.</summary>
    public const int Lanes = 8;

    /// <summary>θ₀ · (largest similarity range) for the stabilising pass: every term ≥ e⁻⁸⁰ stays a normal float32.</summary>
    public const float StabiliserExponent = 80;

    /// <summary>Refine the shift until θ_max · slack ≤ this, so a class's largest term is ≥ e⁻⁶⁰.</summary>
    public const float MaxShiftExponent = 60;

    /// <summary>Exponent of the smallest term of a refinement pass (e⁻⁷⁵ is a normal float32).</summary>
    public const float RefineExponent = 75;

    private const int TileColumns = 64;

    /// <summary>
    /// The stabiliser temperature θ₀ of a query whose similarities lie in <c>[−upper, upper]</c>: θ₀ · 2·upper =
    /// <see cref="StabiliserExponent"/>.
    /// </summary>
    public static float StabiliserTemperature(float upper) => (float)(StabiliserExponent / 2.0 / Math.Max(upper, 1e-12));

    /// <summary>
    /// The θ of a call as <see cref="Accumulate"/> takes them: distinct float32 values ascending, each caller θ's index among
    /// them, and the most frequent step between them that one exponential serves.
    /// </summary>
    /// <param name="Distinct">Distinct θ as float32, ascending.</param>
    /// <param name="DistinctIndex">For each caller θ, its index in <paramref name="Distinct"/>.</param>
    /// <param name="IsDistinctOrder">Whether the caller's θ are already <paramref name="Distinct"/>, in that order.</param>
    /// <param name="ChainDelta">The step between consecutive distinct θ that one exponential serves (0: none recurs).</param>
    public sealed record ThetaGrid(float[] Distinct, long[] DistinctIndex, bool IsDistinctOrder, float ChainDelta)
    {
        /// <summary>The plan for <paramref name="thetas"/> (caller order, duplicates allowed).</summary>
        public static ThetaGrid Create(ReadOnlySpan<double> thetas)
        {
            var values = thetas.ToArray().Select(t => (float)t).ToArray();
            var distinct = values.Distinct().Order().ToArray();
            var index = values.Select(v => (long)Array.IndexOf(distinct, v)).ToArray();
            var isDistinctOrder = index.Length == distinct.Length && index.Select((d, i) => d == i).All(x => x);
            var steps = Enumerable.Range(1, distinct.Length - 1).Select(i => distinct[i] - distinct[i - 1]).ToList();
            var best = steps.GroupBy(x => x).OrderByDescending(g => g.Count()).ThenBy(g => g.Key).FirstOrDefault();
            var chainDelta = best is not null && (best.Count() >= 2 || best.Key == distinct[0]) ? best.Key : 0f;
            return new ThetaGrid(distinct, index, isDistinctOrder, chainDelta);
        }
    }

    /// <summary>
    /// A running log-mass <c>[T, C, columns]</c> (row-major) in float64 as <c>L_t = θ_t·U + log S_t</c>: one running shift
    /// <c>U [C, columns]</c> shared by every θ (the largest block shift merged so far; the kernel's shifts do not depend on θ)
    /// and the scaled sums <c>S [T, C, columns]</c>. Merging a block rescales the sums of the smaller shift by
    /// <c>exp(−θ_t·|ΔU|)</c>, one exponential chained along evenly spaced θ; the logarithm is taken once, in
    /// <see cref="LogMass"/>. Nothing merged yet: <c>(−∞, 0)</c>, read as −∞.
    /// </summary>
    public sealed class Running
    {
        /// <summary>An empty running log-mass for the θ of <paramref name="grid"/>, <paramref name="classes"/> classes and <paramref name="columns"/> queries.</summary>
        public Running(ThetaGrid grid, int classes, int columns)
        {
            ArgumentNullException.ThrowIfNull(grid);
            (Grid, Classes, Columns) = (grid, classes, columns);
            Shift = new double[checked(classes * columns)];
            Array.Fill(Shift, double.NegativeInfinity);
            Sum = new double[checked(grid.Distinct.Length * classes * columns)];
        }

        /// <summary>The θ, as <see cref="Accumulate"/> merges them.</summary>
        public ThetaGrid Grid { get; }

        /// <summary>The distinct θ, ascending.</summary>
        public float[] Thetas => Grid.Distinct;

        /// <summary>Class count C.</summary>
        public int Classes { get; }

        /// <summary>Query columns (padded).</summary>
        public int Columns { get; }

        internal double[] Shift { get; }

        internal double[] Sum { get; }

        /// <summary><c>L_t = θ_t·U + log S_t</c> for every value, rounded to float32 once: <c>[T, C, columns]</c>, −∞ where nothing merged.</summary>
        public float[] LogMass()
        {
            var plane = Shift.Length;
            var result = new float[Sum.Length];
            fixed (double* u = Shift, s = Sum)
            fixed (float* r = result)
            {
                for (var t = 0; t < Thetas.Length; t++)
                {
                    var theta = (double)Thetas[t];
                    var i = 0;
                    for (; i + 4 <= plane; i += 4)
                    {
                        var value = (Vector256.Create(theta) * Vector256.Load(u + i)) + Vector256.Log(Vector256.Load(s + ((long)t * plane) + i));
                        Vector128.Store(Vector256.Narrow(value, Vector256<double>.Zero).GetLower(), r + ((long)t * plane) + i);
                    }

                    for (; i < plane; i++)
                    {
                        r[((long)t * plane) + i] = (float)((theta * u[i]) + Math.Log(s[((long)t * plane) + i]));
                    }
                }
            }

            return result;
        }

        /// <summary>
        /// <see cref="LogMass"/> as a float32 tensor <c>[θ, C, queries]</c> in the caller's θ order (duplicates included), the first
        /// <paramref name="queries"/> columns, contiguous.
        /// </summary>
        public Tensor ToTensor(long queries)
        {
            using var scope = NewDisposeScope();
            var result = tensor(LogMass(), [Thetas.Length, Classes, Columns]).narrow(2, 0, queries);
            if (!Grid.IsDistinctOrder)
            {
                result = result.index_select(0, tensor(Grid.DistinctIndex, dtype: ScalarType.Int64));
            }

            return result.contiguous().MoveToOuterDisposeScope();
        }
    }

    /// <summary>
    /// Merges one block's log-mass into <paramref name="running"/> <c>[T, C, b]</c> (row-major, −∞ where nothing merged yet).
    /// </summary>
    /// <remarks>
    /// The per-block sums are float32; the merge across blocks is float64 (<see cref="Running"/>), so the log-mass is rounded
    /// to float32 once, by <see cref="Running.LogMass"/>, whatever the number of blocks. Two stores holding the same keys in
    /// different blocks (or shards merged in float64) then differ by float32 steps of the final value, not by one rounding per
    /// block merge.
    /// </remarks>
    /// <param name="similarities">Address of <c>S [rows, columns]</c>, float32, contiguous.</param>
    /// <param name="rows">Keys in the block (n ≥ 1).</param>
    /// <param name="columns">Queries b, padded to a multiple of <see cref="Lanes"/>.</param>
    /// <param name="labels">Labels of the block's keys: <paramref name="labels"/>[<paramref name="labelOffset"/> + k].</param>
    /// <param name="labelOffset">Index of the block's first key in <paramref name="labels"/>.</param>
    /// <param name="present">Per class: whether the block holds a key of it.</param>
    /// <param name="theta0">Per query: stabiliser temperature θ₀.</param>
    /// <param name="upper">Per query: ‖q‖·max‖k‖, an upper bound of its similarities.</param>
    /// <param name="running">Running log-mass <c>[T, C, columns]</c>; its <see cref="Running.Grid"/> gives the θ.</param>
    public static void Accumulate(
        nint similarities, int rows, int columns, int[] labels, int labelOffset, bool[] present, float[] theta0, float[] upper, Running running)
    {
        var tiles = (columns + TileColumns - 1) / TileColumns;
        var theta0Min = float.PositiveInfinity;
        foreach (var t in theta0)
        {
            theta0Min = Math.Min(theta0Min, t);
        }

        var job = new Job(
            similarities, rows, columns, labels, labelOffset, present, running.Thetas, running.Grid.ChainDelta, theta0, upper, running, theta0Min);
        if (tiles == 1)
        {
            job.Tile(0);
            return;
        }

        Parallel.For(0, tiles, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount }, job.Tile);
    }

    private sealed class Job(
        nint similarities, int rows, int columns, int[] labels, int labelOffset, bool[] present, float[] thetas, float chainDelta,
        float[] theta0, float[] upper, Running running, float theta0Min)
    {
        private readonly int _classes = present.Length;

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public void Tile(int tile)
        {
            var j0 = tile * TileColumns;
            var width = Math.Min(TileColumns, columns - j0);
            var classes = _classes;
            var count = thetas.Length;
            var plane = classes * width;
            var shiftArray = ArrayPool<float>.Shared.Rent(plane);
            var sumsArray = ArrayPool<float>.Shared.Rent(plane);
            var accArray = ArrayPool<float>.Shared.Rent(count * plane);
            var thetaArray = ArrayPool<float>.Shared.Rent(width);
            try
            {
                fixed (float* shift = shiftArray, sums = sumsArray, acc = accArray, thetaR = thetaArray)
                fixed (float* t0 = &theta0[j0], up = &upper[j0], th = thetas)
                fixed (int* y = &labels[labelOffset])
                {
                    var s = (float*)similarities + j0;
                    new Span<float>(sums, plane).Clear();
                    new Span<float>(acc, count * plane).Clear();

                    // Pass A: Σ exp(θ₀S − θ₀·upper) ∈ [e⁻⁸⁰, 1] per term, then U = upper + log(Σ)/θ₀.
                    for (var k = 0; k < rows; k++)
                    {
                        var row = s + (long)k * columns;
                        var sc = sums + y[k] * width;
                        for (var v = 0; v < width; v += Lanes)
                        {
                            var temperature = Vector256.Load(t0 + v);
                            var term = Exp((temperature * Vector256.Load(row + v)) - (temperature * Vector256.Load(up + v)));
                            Vector256.Store(Vector256.Load(sc + v) + term, sc + v);
                        }
                    }

                    for (var c = 0; c < classes; c++)
                    {
                        var sh = shift + c * width;
                        var sc = sums + c * width;
                        for (var v = 0; v < width; v += Lanes)
                        {
                            var value = present[c]
                                ? Vector256.Load(up + v) + (Vector256.Log(Vector256.Load(sc + v)) / Vector256.Load(t0 + v))
                                : Vector256<float>.Zero;
                            Vector256.Store(value, sh + v);
                        }
                    }

                    // Refinement while the largest θ could see the shift's slack ln(n)/θ₀ (rare: large θ or many ties).
                    var lnRows = (float)Math.Log(rows);
                    var slack = lnRows / theta0Min;
                    var thetaMax = thetas[^1];
                    new Span<float>(t0, width).CopyTo(new Span<float>(thetaR, width));
                    while (thetaMax * slack > MaxShiftExponent)
                    {
                        var scale = Vector256.Create(RefineExponent / lnRows);
                        for (var v = 0; v < width; v += Lanes)
                        {
                            Vector256.Store(Vector256.Load(thetaR + v) * scale, thetaR + v);
                        }

                        new Span<float>(sums, plane).Clear();
                        for (var k = 0; k < rows; k++)
                        {
                            var row = s + (long)k * columns;
                            var c = y[k];
                            var sc = sums + c * width;
                            var sh = shift + c * width;
                            for (var v = 0; v < width; v += Lanes)
                            {
                                var term = Exp(Vector256.Load(thetaR + v) * (Vector256.Load(row + v) - Vector256.Load(sh + v)));
                                Vector256.Store(Vector256.Load(sc + v) + term, sc + v);
                            }
                        }

                        for (var c = 0; c < classes; c++)
                        {
                            if (!present[c])
                            {
                                continue;
                            }

                            var sh = shift + c * width;
                            var sc = sums + c * width;
                            for (var v = 0; v < width; v += Lanes)
                            {
                                var total = Vector256.Max(Vector256.Load(sc + v), Vector256.Create(float.Epsilon));
                                Vector256.Store(Vector256.Load(sh + v) + (Vector256.Log(total) / Vector256.Load(thetaR + v)), sh + v);
                            }
                        }

                        slack *= lnRows / RefineExponent;
                    }

                    // Pass B: for every θ, Σ exp(θ(S − U_y)); every term ≤ 1, each class's largest ≥ e⁻⁶⁰.
                    var first = Vector256.Create(th[0]);
                    var chained = chainDelta > 0;
                    var stepFromFirst = chained && chainDelta == th[0];
                    var delta = Vector256.Create(chainDelta);
                    var useStep = stackalloc bool[count];
                    for (var t = 1; t < count; t++)
                    {
                        useStep[t] = chained && th[t] - th[t - 1] == chainDelta;
                    }

                    for (var k = 0; k < rows; k++)
                    {
                        var row = s + (long)k * columns;
                        var c = y[k];
                        var sh = shift + c * width;
                        var a = acc + c * width;
                        for (var v = 0; v < width; v += Lanes)
                        {
                            var d = Vector256.Load(row + v) - Vector256.Load(sh + v);
                            var e = Exp(d * first);
                            Vector256.Store(Vector256.Load(a + v) + e, a + v);
                            var step = stepFromFirst ? e : chained ? Exp(d * delta) : default;
                            for (var t = 1; t < count; t++)
                            {
                                e = useStep[t] ? e * step : Exp(d * Vector256.Create(th[t]));
                                var at = a + (t * plane) + v;
                                Vector256.Store(Vector256.Load(at) + e, at);
                            }
                        }
                    }

                    // The block's (U, Σ_t) merged into the running (U, S_t) in float64: the sums of the smaller shift are scaled by
                    // exp(−θ_t·|ΔU|), chained along evenly spaced θ as in pass B; absent classes leave it as it is.
                    var thetaD = stackalloc double[count];
                    var chainD = stackalloc bool[count];
                    for (var t = 0; t < count; t++)
                    {
                        thetaD[t] = th[t];
                        chainD[t] = t > 0 && chained && thetaD[t] - thetaD[t - 1] == (double)chainDelta;
                    }

                    var deltaD = Vector256.Create((double)chainDelta);
                    fixed (double* ru = running.Shift, rs = running.Sum)
                    {
                        for (var c = 0; c < classes; c++)
                        {
                            if (!present[c])
                            {
                                continue;
                            }

                            var sh = shift + c * width;
                            var a = acc + c * width;
                            var u = ru + ((long)c * columns) + j0;
                            var sum = rs + ((long)c * columns) + j0;
                            for (var v = 0; v < width; v += Lanes)
                            {
                                var (low, high) = Vector256.Widen(Vector256.Load(sh + v));
                                Merge(u + v, sum + v, low, a + v, 0, count, (long)plane, (long)classes * columns, thetaD, chainD, chained, deltaD);
                                Merge(u + v + 4, sum + v + 4, high, a + v, 4, count, (long)plane, (long)classes * columns, thetaD, chainD, chained, deltaD);
                            }
                        }
                    }
                }
            }
            finally
            {
                ArrayPool<float>.Shared.Return(shiftArray);
                ArrayPool<float>.Shared.Return(sumsArray);
                ArrayPool<float>.Shared.Return(accArray);
                ArrayPool<float>.Shared.Return(thetaArray);
            }
        }

        /// <summary>
        /// <c>eˣ</c> in float32 (Cephes <c>expf</c>: range reduction by ln 2 in two parts, degree-6 polynomial; about 1 ulp).
        /// Arguments below −87.3 give ≈ 1.2e-38 instead of a smaller number or 0: such terms are at least e⁻²⁷ times
        /// smaller than the largest term of their sum (≥ e⁻⁶⁰), far below float32 resolution.
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static Vector256<float> Exp(Vector256<float> x)
        {
            x = Vector256.Min(Vector256.Max(x, Vector256.Create(-87.33654f)), Vector256.Create(88.3762626647949f));
            var n = Vector256.Round(x * Vector256.Create(1.44269504088896341f));
            var r = Vector256.FusedMultiplyAdd(n, Vector256.Create(-0.693359375f), x);
            r = Vector256.FusedMultiplyAdd(n, Vector256.Create(2.12194440e-4f), r);
            var p = Vector256.Create(1.9875691500E-4f);
            p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(1.3981999507E-3f));
            p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(8.3334519073E-3f));
            p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(4.1665795894E-2f));
            p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(1.6666665459E-1f));
            p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(5.0000001201E-1f));
            var y = Vector256.FusedMultiplyAdd(p, r * r, r) + Vector256<float>.One;
            var scale = (Vector256.ConvertToInt32(n) + Vector256.Create(127)) << 23;
            return y * scale.AsSingle();
        }

        /// <summary>
        /// Merges four columns of one class: the block's shift <paramref name="blockShift"/> and float32 sums (<paramref name="sums"/>
        /// + <paramref name="half"/>, then every <paramref name="sumStride"/> floats per θ) into the running shift <paramref name="shift"/>
        /// and float64 sums (<paramref name="running"/>, every <paramref name="runningStride"/> per θ):
        /// <c>S_t ← S_t·w_t + Σ_t</c> when the block's shift is larger (and it becomes the shift), else <c>S_t + Σ_t·w_t</c>,
        /// with <c>w_t = exp(−θ_t·|ΔU|)</c> ∈ [0, 1] (0 while nothing was merged, <c>U = −∞</c>).
        /// </summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static void Merge(
            double* shift, double* running, Vector256<double> blockShift, float* sums, int half, int count, long sumStride, long runningStride,
            double* theta, bool* chain, bool chained, Vector256<double> delta)
        {
            var current = Vector256.Load(shift);
            var d = blockShift - current;
            var above = Vector256.GreaterThan(d, Vector256<double>.Zero);
            var distance = -Vector256.Abs(d);
            var w = Vector256.Exp(distance * Vector256.Create(theta[0]));
            var step = chained ? Vector256.Exp(distance * delta) : default;
            for (var t = 0; t < count; t++)
            {
                if (t > 0)
                {
                    w = chain[t] ? w * step : Vector256.Exp(distance * Vector256.Create(theta[t]));
                }

                var block = Widen(sums + (t * sumStride), half);
                var target = running + (t * runningStride);
                var s = Vector256.Load(target);
                Vector256.Store(Vector256.ConditionalSelect(above, (s * w) + block, s + (block * w)), target);
            }

            Vector256.Store(Vector256.Max(current, blockShift), shift);
        }

        /// <summary>The lower (<paramref name="half"/> 0) or upper (4) four of the eight floats at <paramref name="source"/>, as float64.</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        private static Vector256<double> Widen(float* source, int half)
        {
            var x = Vector256.Load(source);
            return half == 0 ? Vector256.WidenLower(x) : Vector256.WidenUpper(x);
        }
    }
}
