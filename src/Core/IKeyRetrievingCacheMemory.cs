using static TorchSharp.torch;

namespace ScalableCache.Core;

/// <summary>
/// A memory whose log-mass sums over the keys it retrieves for each query (an approximate store such as HNSW), and that can say
/// which keys those are — to measure recall against exact search (<c>HnswRecall.AtK</c>).
/// </summary>
public interface IKeyRetrievingCacheMemory : ICacheMemory
{
    /// <summary>
    /// For each query <c>[b, d]</c>, the ids of the keys <see cref="ICacheMemory.ClassLogMass"/> sums over: a key's id is its row in
    /// the memory's insertion order (0-based, across every add). The implementation documents the order within one query.
    /// </summary>
    /// <exception cref="NotSupportedException">The memory sums over every key (nothing is retrieved).</exception>
    IReadOnlyList<long[]> RetrievedKeys(Tensor queries);
}
