using static TorchSharp.torch;

namespace ScalableCache.Benchmarks;

/// <summary>
/// Synthetic clustered unit keys shared by the store benchmarks. Centres are random unit vectors; a key is
/// <c>normalise(centre + noise·N(0, I)/√d)</c> around a uniformly drawn centre and is labelled <c>cluster mod C</c>; queries are
/// drawn the same way, so each query has a true label and near neighbours of that label.
/// </summary>
internal sealed class SyntheticKeys : IDisposable
{
    /// <summary>Rows drawn per step, so temporaries stay small next to the result at 1,000,000 keys.</summary>
    public const int BlockRows = 65_536;

    private readonly Generator _generator;
    private readonly Tensor _centres;
    private readonly int _clusters;
    private readonly int _classes;
    private readonly double _scale;

    /// <summary>A sampler over <paramref name="clusters"/> random unit centres of <paramref name="dimension"/>.</summary>
    public SyntheticKeys(int dimension, int clusters, int classes, int seed, double noise = 0.5)
    {
        _generator = new Generator((ulong)seed);
        using var scope = NewDisposeScope();
        _centres = Normalise(randn(clusters, dimension, generator: _generator)).MoveToOuterDisposeScope();
        _clusters = clusters;
        _classes = classes;
        _scale = noise / Math.Sqrt(dimension);
        Dimension = dimension;
    }

    public int Dimension { get; }

    /// <summary>Keys <c>[n, d]</c> and their labels <c>[n]</c> (float32/int64, CPU), drawn in blocks of <see cref="BlockRows"/>.</summary>
    public (Tensor Keys, Tensor Labels) Sample(int count)
    {
        using var scope = NewDisposeScope();
        var result = empty(count, Dimension);
        var cluster = randint(0, _clusters, count, generator: _generator);
        for (var start = 0; start < count; start += BlockRows)
        {
            using var inner = NewDisposeScope();
            var n = Math.Min(BlockRows, count - start);
            var rows = _centres.index_select(0, cluster.narrow(0, start, n)) + (randn(n, Dimension, generator: _generator) * _scale);
            result.narrow(0, start, n).copy_(Normalise(rows));
        }

        return (result.MoveToOuterDisposeScope(), cluster.remainder(_classes).MoveToOuterDisposeScope());
    }

    /// <summary>Keys <c>[n, d]</c>, their labels <c>[n]</c>, queries <c>[q, d]</c> and the queries' labels <c>[q]</c>, all float32/int64 on the CPU.</summary>
    public static (Tensor Keys, Tensor Labels, Tensor Queries, Tensor QueryLabels) Generate(
        int keys, int queries, int dimension, int clusters, int classes, int seed, double noise = 0.5)
    {
        using var sampler = new SyntheticKeys(dimension, clusters, classes, seed, noise);
        var (k, keyLabels) = sampler.Sample(keys);
        var (q, queryLabels) = sampler.Sample(queries);
        return (k, keyLabels, q, queryLabels);
    }

    public void Dispose()
    {
        _centres.Dispose();
        _generator.Dispose();
    }

    private static Tensor Normalise(Tensor rows) => rows / rows.norm(1, keepdim: true);
}
