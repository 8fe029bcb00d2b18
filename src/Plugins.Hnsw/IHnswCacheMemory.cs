using ScalableCache.Core;

namespace ScalableCache.Hnsw;

/// <summary>
/// An <see cref="ICacheMemory"/> backed by a USearch HNSW graph, with the hooks a cache file format needs to store the
/// graph and reload it without rebuilding. Created by <see cref="HnswCacheMemoryFactory"/>. Its
/// <see cref="IKeyRetrievingCacheMemory.RetrievedKeys"/> are the top-k keys of each query, best first.
/// </summary>
public interface IHnswCacheMemory : IKeyRetrievingCacheMemory
{
    /// <summary>The settings this memory runs with (a copy; changing it has no effect).</summary>
    HnswCacheOptions Options { get; }

    /// <summary>Bytes held by the native index (vectors, graph, per-thread contexts), as USearch reports them.</summary>
    long NativeMemoryBytes { get; }

    /// <summary>
    /// The SIMD target USearch picked for this index's distance kernel on this CPU (<c>serial</c> when none applies, e.g.
    /// <c>genoa</c> or <c>haswell</c> otherwise), as <c>usearch_hardware_acceleration</c> reports it.
    /// </summary>
    string HardwareAcceleration { get; }

    /// <summary>
    /// Changes the search settings — the neighbours summed over (<see cref="HnswCacheOptions.TopK"/>) and the candidate list of the
    /// graph walk (<see cref="HnswCacheOptions.ExpansionSearch"/>) — without rebuilding the graph. Waits for running queries;
    /// queries that start afterwards use both new values.
    /// </summary>
    void TuneSearch(int topK, int expansionSearch);

    /// <summary>
    /// Serialises the published keys: the native index (USearch's own format: vectors, graph and its metadata) and
    /// the label of each key, taken from one consistent snapshot (an <see cref="ICacheMemory.Add"/> in progress is waited
    /// for). Restore with <see cref="HnswCacheMemoryFactory.Restore(HnswGraphSnapshot, int)"/>.
    /// </summary>
    HnswGraphSnapshot SaveGraph();

}

/// <summary>
/// A serialised HNSW memory. <see cref="Graph"/> is USearch's buffer format (<c>usearch_save_buffer</c>); key id
/// <c>k</c> in it is row <c>k</c> of the keys in insertion order, whose label is <c>Labels[k]</c>.
/// The graph records dimension, metric and scalar kind; the class count is stored by the caller.
/// </summary>
/// <param name="Graph">Native index bytes.</param>
/// <param name="Labels">Label of key <c>k</c> at index <c>k</c>; its length is the key count.</param>
public sealed record HnswGraphSnapshot(byte[] Graph, int[] Labels)
{
    /// <summary>Number of keys.</summary>
    public long Count => Labels.LongLength;
}
