using Microsoft.Extensions.DependencyInjection;
using ScalableCache.Core;
using ScalableCache.RandomProjection;

namespace ScalableCache.Tests;

/// <summary>
/// The random-projection store over the exact store, d = 32 → k = 16 (Ratio 0.5): scores are those of the projected
/// vectors, so log-mass values are not compared with the unprojected reference (<see cref="ExactScores"/> is off); the
/// structural checks and top-class agreement on well-separated clusters still apply. The snapshot checks compare values
/// exactly, against the brute-force reference over the projected vectors (<see cref="ScoredVectors"/>, computed in double),
/// at a tolerance of 1e-5: the store projects in float32, which moves a unit vector's similarities by ≲ 1e-6 (d = 32) and a
/// log-mass by ≲ 1e-6 · θ.
/// </summary>
public sealed class RandomProjectionConformanceTests : CacheMemoryConformanceTests
{
    private static readonly Lazy<RandomProjectionCacheMemoryFactory> Factory = new(() =>
        new ServiceCollection()
            .AddExactCache()
            .AddRandomProjectionCache(o => o.Ratio = 0.5)
            .BuildServiceProvider()
            .GetRequiredService<RandomProjectionCacheMemoryFactory>());

    protected override string ExpectedProvider => "RandomProjection";

    protected override bool ExactScores => false;

    protected override bool ExactSnapshots => true;

    protected override double ScoreTolerance => 1e-5;

    protected override IReadOnlyList<ICacheMemoryFactory> RestoreFactories => [Factory.Value, Factory.Value.InnerFactory];

    protected override ICacheMemory CreateMemory(int dimension, int classCount) => Factory.Value.Create(dimension, classCount);

    /// <summary><c>R x</c> in double, rescaled to <c>‖x‖</c> when the memory renormalises.</summary>
    protected override (float[] Rows, int Dimension) ScoredVectors(ICacheMemory memory, float[] rows) =>
        Project((IRandomProjectionCacheMemory)memory, rows);

    /// <summary><c>R x</c> of <paramref name="projected"/>'s matrix in double, rescaled to <c>‖x‖</c> when it renormalises.</summary>
    internal static (float[] Rows, int Dimension) Project(IRandomProjectionCacheMemory projected, float[] rows)
    {
        var (d, k) = (projected.Projection.InputDimension, projected.Projection.OutputDimension);
        var matrix = projected.Projection.ToArray(); // [k, d], row-major
        var n = rows.Length / d;
        var result = new float[n * k];
        var y = new double[k];
        for (var i = 0; i < n; i++)
        {
            double inputNorm = 0, outputNorm = 0;
            for (var j = 0; j < d; j++)
            {
                inputNorm += (double)rows[(i * d) + j] * rows[(i * d) + j];
            }

            for (var r = 0; r < k; r++)
            {
                double sum = 0;
                for (var j = 0; j < d; j++)
                {
                    sum += (double)matrix[(r * d) + j] * rows[(i * d) + j];
                }

                y[r] = sum;
                outputNorm += sum * sum;
            }

            var scale = projected.Renormalize ? Math.Sqrt(inputNorm) / Math.Max(Math.Sqrt(outputNorm), 1e-30) : 1.0;
            for (var r = 0; r < k; r++)
            {
                result[(i * k) + r] = (float)(y[r] * scale);
            }
        }

        return (result, k);
    }
}
