using ScalableCache.Core;
using static TorchSharp.torch;

namespace ScalableCache.Hnsw;

/// <summary>How many of the exact nearest keys an HNSW memory (or any <see cref="IKeyRetrievingCacheMemory"/>, such as Orleans over HNSW shards) retrieves.</summary>
public static class HnswRecall
{
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
        var count = queries.shape[0];
        if (count == 0)
        {
            return double.NaN;
        }

        var width = (int)Math.Min(k, keys.shape[0]);
        double total = 0;
        for (long start = 0; start < count; start += 256)
        {
            using var scope = NewDisposeScope();
            var n = Math.Min(256, count - start);
            var block = queries.narrow(0, start, n);
            var exactTop = block.mm(keys.t()).topk(width, 1).indexes.data<long>().ToArray();
            var retrieved = memory.RetrievedKeys(block);
            for (var q = 0; q < n; q++)
            {
                var truth = new HashSet<long>(exactTop.Skip((int)q * width).Take(width));
                total += retrieved[(int)q].Count(truth.Contains) / (double)width;
            }
        }

        return total / count;
    }
}
