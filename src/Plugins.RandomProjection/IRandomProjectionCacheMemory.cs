using ScalableCache.Core;

namespace ScalableCache.RandomProjection;

/// <summary>
/// An <see cref="ICacheMemory"/> that projects d-dimensional keys and queries to k dimensions with a
/// <see cref="RandomProjectionMatrix"/> and keeps them in an inner memory of another provider. Created by
/// <see cref="RandomProjectionCacheMemoryFactory"/>; a cache file stores <see cref="Projection"/>'s definition (or its
/// matrix bytes) next to the inner memory's own data. <see cref="IKeyRetrievingCacheMemory.RetrievedKeys"/> lists the keys an
/// inner store that retrieves keys (HNSW) finds for the projected queries; over one that sums every key (Exact) it throws
/// <see cref="NotSupportedException"/>.
/// </summary>
public interface IRandomProjectionCacheMemory : IKeyRetrievingCacheMemory
{
    /// <summary>The projection applied to keys and queries (owned by this memory; do not dispose it).</summary>
    RandomProjectionMatrix Projection { get; }

    /// <summary>The memory that holds the projected keys, of dimension <see cref="RandomProjectionMatrix.OutputDimension"/> (owned by this memory).</summary>
    ICacheMemory Inner { get; }

    /// <summary>Whether projected vectors are rescaled to the length of their input (see <see cref="RandomProjectionCacheOptions.Renormalize"/>).</summary>
    bool Renormalize { get; }
}
