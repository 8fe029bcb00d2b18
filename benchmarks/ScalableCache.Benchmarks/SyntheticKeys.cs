using static TorchSharp.torch;

namespace ScalableCache.Benchmarks;

/// <summary>
/// Synthetic clustered unit keys shared by the store benchmarks. Centres are random unit vectors; a key is
/// <c>normalise(centre + noise·N(0, I)/√d)</c> around a uniformly drawn centre and is labelled <c>cluster mod C</c>; queries are
/// drawn the same way, so each query has a true label and near neighbours of that label.
/// </summary>
internal static class SyntheticKeys
{
    /// <summary>Keys <c>[n, d]</c>, their labels <c>[n]</c>, queries <c>[q, d]</c> and the queries' labels <c>[q]</c>, all float32/int64 on the CPU.</summary>
    public static (Tensor Keys, Tensor Labels, Tensor Queries, Tensor QueryLabels) Generate(
        int keys, int queries, int dimension, int clusters, int classes, int seed, double noise = 0.5)
    {
        using var scope = NewDisposeScope();
        var generator = new Generator((ulong)seed);
        var centres = Normalise(randn(clusters, dimension, generator: generator));
        var scale = noise / Math.Sqrt(dimension);

        Tensor Sample(int count, out Tensor label)
        {
            // In blocks, so the temporaries stay small next to the result at 1,000,000 keys.
            var result = empty(count, dimension);
            var cluster = randint(0, clusters, count, generator: generator);
            const int block = 65_536;
            for (var start = 0; start < count; start += block)
            {
                using var inner = NewDisposeScope();
                var n = Math.Min(block, count - start);
                var rows = centres.index_select(0, cluster.narrow(0, start, n)) + (randn(n, dimension, generator: generator) * scale);
                result.narrow(0, start, n).copy_(Normalise(rows));
            }

            label = cluster.remainder(classes);
            return result;
        }

        var k = Sample(keys, out var keyLabels);
        var q = Sample(queries, out var queryLabels);
        return (k.MoveToOuterDisposeScope(), keyLabels.MoveToOuterDisposeScope(), q.MoveToOuterDisposeScope(), queryLabels.MoveToOuterDisposeScope());
    }

    private static Tensor Normalise(Tensor rows) => rows / rows.norm(1, keepdim: true);
}
