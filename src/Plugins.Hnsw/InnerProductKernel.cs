using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace ScalableCache.Hnsw;

/// <summary>
/// The float32 inner-product distance <c>1 − a·b</c> handed to USearch as a stateful custom metric (the state is the
/// dimension). USearch 2.26's built-in float32 kernel (NumKong <c>nk_dot_f32_*</c>) widens every product to float64 and
/// keeps one accumulator, eight floats per step, so a distance costs several times the float32 FMA work hnswlib does; this
/// one multiplies and adds in float32 with four independent vector accumulators (the widest vectors the CPU has), then
/// adds them pairwise. Its result differs from the float64-accumulated one by float32 rounding of the sum (relative
/// ~1e-7 for unit keys), far below the differences HNSW's approximation makes.
/// </summary>
internal static unsafe class InnerProductKernel
{
    /// <summary>The callback's address, for <c>usearch_change_metric</c>.</summary>
    public static nint Pointer => (nint)(delegate* unmanaged[Cdecl]<float*, float*, nint, float>)&Callback;

    /// <summary><c>1 − a·b</c> for two float32 vectors of <paramref name="dimension"/> elements: USearch's metric, and the managed walk's and insertion's.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Distance(float* a, float* b, int dimension) => 1f - Dot(a, b, dimension);

    /// <summary><see cref="Distance"/>, called by USearch.</summary>
    [UnmanagedCallersOnly(CallConvs = [typeof(CallConvCdecl)])]
    private static float Callback(float* a, float* b, nint dimension) => Distance(a, b, (int)dimension);

    /// <summary><c>a·b</c> in float32 with four vector accumulators (512-bit vectors where the CPU has them, else 256-bit).</summary>
    /// <remarks>The two widths repeat one loop: <c>ISimdVector</c>, which would make it generic, is not public in .NET 10.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining | MethodImplOptions.AggressiveOptimization)]
    public static float Dot(float* a, float* b, int n)
    {
        var i = 0;
        var sum = 0f;
        if (Vector512.IsHardwareAccelerated && n >= 64)
        {
            Vector512<float> s0 = default, s1 = default, s2 = default, s3 = default;
            for (; i <= n - 64; i += 64)
            {
                s0 = Vector512.FusedMultiplyAdd(Vector512.Load(a + i), Vector512.Load(b + i), s0);
                s1 = Vector512.FusedMultiplyAdd(Vector512.Load(a + i + 16), Vector512.Load(b + i + 16), s1);
                s2 = Vector512.FusedMultiplyAdd(Vector512.Load(a + i + 32), Vector512.Load(b + i + 32), s2);
                s3 = Vector512.FusedMultiplyAdd(Vector512.Load(a + i + 48), Vector512.Load(b + i + 48), s3);
            }

            for (; i <= n - 16; i += 16)
            {
                s0 = Vector512.FusedMultiplyAdd(Vector512.Load(a + i), Vector512.Load(b + i), s0);
            }

            sum = Vector512.Sum((s0 + s1) + (s2 + s3));
        }
        else if (Vector256.IsHardwareAccelerated && n >= 32)
        {
            Vector256<float> s0 = default, s1 = default, s2 = default, s3 = default;
            for (; i <= n - 32; i += 32)
            {
                s0 = Vector256.FusedMultiplyAdd(Vector256.Load(a + i), Vector256.Load(b + i), s0);
                s1 = Vector256.FusedMultiplyAdd(Vector256.Load(a + i + 8), Vector256.Load(b + i + 8), s1);
                s2 = Vector256.FusedMultiplyAdd(Vector256.Load(a + i + 16), Vector256.Load(b + i + 16), s2);
                s3 = Vector256.FusedMultiplyAdd(Vector256.Load(a + i + 24), Vector256.Load(b + i + 24), s3);
            }

            for (; i <= n - 8; i += 8)
            {
                s0 = Vector256.FusedMultiplyAdd(Vector256.Load(a + i), Vector256.Load(b + i), s0);
            }

            sum = Vector256.Sum((s0 + s1) + (s2 + s3));
        }

        for (; i < n; i++)
        {
            sum = MathF.FusedMultiplyAdd(a[i], b[i], sum);
        }

        return sum;
    }
}
