using ScalableCache.Core;
using ScalableCache.Core.Persistence;
using static TorchSharp.torch;

namespace ScalableCache.Hnsw;

/// <summary>
/// How many of the exact nearest keys an HNSW memory (or any <see cref="IKeyRetrievingCacheMemory"/>, such as Orleans over HNSW
/// shards, or a random projection over HNSW) retrieves.
/// </summary>
public static class HnswRecall
{
    /// <summary>Queries whose exact top-k one pass over a key file finds (<see cref="AtK(IKeyRetrievingCacheMemory, Tensor, KeyFile, int, int)"/>).</summary>
    private const int QueriesPerFilePass = 1024;

    /// <summary>
    /// Mean recall@k: for each query <c>[b, d]</c>, the fraction of its exact top-k keys (by inner product with
    /// <paramref name="keys"/> <c>[N, d]</c>, the keys in insertion order) among the keys <paramref name="memory"/> retrieves;
    /// k is capped at N. The exact top-k comes from matrix products over blocks of queries.
    /// </summary>
    public static double AtK(IKeyRetrievingCacheMemory memory, Tensor queries, Tensor keys, int k)
    {
        ArgumentNullException.ThrowIfNull(memory);
        ArgumentNullException.ThrowIfNull(queries);
        ArgumentNullException.ThrowIfNull(keys);
        ArgumentOutOfRangeException.ThrowIfLessThan(k, 1);
        var width = (int)Math.Min(k, keys.shape[0]);
        return Mean(memory, queries, 256, block => block.mm(keys.t()).topk(width, 1).indexes.data<long>().ToArray(), width);
    }

    /// <summary>
    /// Mean recall@k as <see cref="AtK(IKeyRetrievingCacheMemory, Tensor, Tensor, int)"/>, with the keys in a key file (row r = key r
    /// of the memory, as <see cref="CacheMemoryExtensions.AddKeyFile"/> adds them): the exact top-k of up to 1,024 queries at a time comes
    /// from one pass over the file in float32 blocks (<see cref="KeyFile.ReadKeys"/>) that keeps a running top-k, so memory holds
    /// the queries' <c>k + block</c> similarities, never the file's N × d. For a random projection over HNSW, pass the
    /// d-dimensional queries and the original key file: the recall then counts the projection's error as well as the graph's.
    /// </summary>
    /// <param name="memory">The memory built from <paramref name="keys"/>.</param>
    /// <param name="queries">Queries <c>[b, d]</c> (float32).</param>
    /// <param name="keys">The key file the memory was built from.</param>
    /// <param name="k">Neighbours (capped at the file's key count).</param>
    /// <param name="blockRows">Keys read per block.</param>
    public static double AtK(IKeyRetrievingCacheMemory memory, Tensor queries, KeyFile keys, int k, int blockRows = CacheMemoryExtensions.DefaultKeyFileBlockRows)
    {
        ArgumentNullException.ThrowIfNull(memory);
        ArgumentNullException.ThrowIfNull(queries);
        ArgumentNullException.ThrowIfNull(keys);
        ArgumentOutOfRangeException.ThrowIfLessThan(k, 1);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(blockRows);
        if (keys.Count == 0 || keys.Layout.Dimension != memory.Dimension)
        {
            throw new ArgumentException(
                $"The key file '{keys.Path}' holds {keys.Count} keys of dimension {keys.Layout.Dimension}; recall needs the keys the memory " +
                $"(dimension {memory.Dimension}) was built from.", nameof(keys));
        }

        var width = (int)Math.Min(k, keys.Count);
        return Mean(memory, queries, QueriesPerFilePass, block => StreamedTopK(block, keys, width, blockRows), width);
    }

    /// <summary>The ids of each query's exact top-<paramref name="width"/> keys in <paramref name="keys"/>, row-major <c>[b, width]</c>.</summary>
    private static long[] StreamedTopK(Tensor queries, KeyFile keys, int width, int blockRows)
    {
        using var scope = NewDisposeScope();
        Tensor? bestScores = null;
        Tensor? bestIds = null;
        for (long start = 0; start < keys.Count; start += blockRows)
        {
            using var block = NewDisposeScope();
            var n = (int)Math.Min(blockRows, keys.Count - start);
            var (rows, _) = keys.ReadKeys(start, n);
            var scores = queries.mm(rows.t());
            var ids = arange(start, start + n, ScalarType.Int64).expand(queries.shape[0], n);
            if (bestScores is not null)
            {
                scores = cat([bestScores, scores], 1);
                ids = cat([bestIds!, ids], 1);
            }

            var top = scores.topk(Math.Min(width, (int)scores.shape[1]), 1);
            var (previousScores, previousIds) = (bestScores, bestIds);
            bestScores = top.values.MoveToOuterDisposeScope();
            bestIds = ids.gather(1, top.indexes).MoveToOuterDisposeScope();
            previousScores?.Dispose(); // one running top-k, not one per block
            previousIds?.Dispose();
        }

        return bestIds!.contiguous().data<long>().ToArray();
    }

    /// <summary>Mean over the queries, <paramref name="perBlock"/> at a time, of the share of their exact top keys the memory retrieves.</summary>
    private static double Mean(IKeyRetrievingCacheMemory memory, Tensor queries, int perBlock, Func<Tensor, long[]> exactTop, int width)
    {
        var count = queries.shape[0];
        if (count == 0)
        {
            return double.NaN;
        }

        double total = 0;
        for (long start = 0; start < count; start += perBlock)
        {
            using var scope = NewDisposeScope();
            var n = Math.Min(perBlock, count - start);
            var block = queries.narrow(0, start, n);
            var truth = exactTop(block);
            var retrieved = memory.RetrievedKeys(block);
            for (var q = 0; q < n; q++)
            {
                var top = new HashSet<long>(truth.Skip((int)q * width).Take(width));
                total += retrieved[(int)q].Count(top.Contains) / (double)width;
            }
        }

        return total / count;
    }
}
