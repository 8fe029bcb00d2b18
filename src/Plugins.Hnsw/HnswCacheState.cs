using ScalableCache.Core;
using ScalableCache.Core.Persistence;

namespace ScalableCache.Hnsw;

/// <summary>Saving an HNSW memory (<see cref="IPersistentCacheMemory"/>).</summary>
/// <remarks>
/// State blobs, in this order: <c>labels</c> (int32 little-endian, one per key id) and <c>graph</c> (USearch's buffer
/// format from <see cref="SaveGraph"/>: vectors, graph and its metadata). Property <c>scalarKind</c> records how vectors are
/// stored (the graph records it too, and a restore checks that they agree). Restoring loads the graph as it is — nothing
/// is rebuilt — once <see cref="USearchGraphLayout"/> has checked its whole structure (a graph that fails is rejected, not
/// repaired: a damaged graph means a damaged file).
/// </remarks>
internal sealed partial class HnswCacheMemory : IPersistentCacheMemory
{
    internal const string LabelsBlob = "labels";
    internal const string GraphBlob = "graph";
    internal const string ScalarKindProperty = "scalarKind";

    /// <inheritdoc />
    public CacheState ExportState()
    {
        var snapshot = SaveGraph();
        var state = new CacheState(HnswCacheMemoryFactory.ProviderName, Dimension, snapshot.Count);
        state.Properties[ScalarKindProperty] = _options.ScalarKind.ToString();
        state.Blobs.Add(CacheBlob.FromInt32s(LabelsBlob, snapshot.Labels));
        state.Blobs.Add(CacheBlob.FromBytes(GraphBlob, snapshot.Graph));
        return state;
    }
}

/// <summary>Restores HNSW memories saved with <see cref="IPersistentCacheMemory.ExportState"/>.</summary>
public sealed partial class HnswCacheMemoryFactory : IPersistentCacheMemoryFactory
{
    /// <summary>
    /// Restores the memory <paramref name="state"/> describes with <see cref="Restore(ReadOnlySpan{byte}, ReadOnlySpan{int}, int)"/>:
    /// the graph is loaded, not rebuilt; search settings come from this factory's options.
    /// </summary>
    /// <exception cref="ArgumentException">The state is of another provider, or its parts disagree (counts, dimension, labels,
    /// scalar kind), or its graph is not one an HNSW cache memory wrote (see <see cref="USearchGraphLayout"/>).</exception>
    public ICacheMemory Restore(CacheState state, CacheRestoreContext context)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(context);
        state.EnsureProvider(ProviderName);
        var labels = state.Blob(HnswCacheMemory.LabelsBlob);
        if (labels.Length != 4 * state.Count)
        {
            throw new ArgumentException($"{state.Count} keys need {4 * state.Count} label bytes; the state has {labels.Length}.", nameof(state));
        }

        var labelValues = labels.ReadInt32s(); // blobs in the order they were written: labels, then graph
        var memory = HnswCacheMemory.Load(state.Blob(HnswCacheMemory.GraphBlob).ReadAllBytes(), labelValues, context.ClassCount, _options, state.Dimension);
        if (state.Properties.TryGetValue(HnswCacheMemory.ScalarKindProperty, out var kind) && kind != memory.Options.ScalarKind.ToString())
        {
            var stored = memory.Options.ScalarKind;
            memory.Dispose();
            throw new ArgumentException($"The state's scalar kind '{kind}' is not its graph's ({stored}).", nameof(state));
        }

        return memory;
    }
}
