namespace ScalableCache.Hnsw;

/// <summary>
/// Settings of the HNSW key store (configuration section <c>Cache:Hnsw</c>). Keys live in a USearch graph under the
/// inner-product metric (cosine for the L2-normalised keys of the contract); a query retrieves its <see cref="TopK"/>
/// approximate nearest keys and the per-class log-mass is summed over those only.
/// </summary>
public sealed class HnswCacheOptions
{
    /// <summary>Configuration section name.</summary>
    public const string SectionName = "Cache:Hnsw";

    /// <summary>Graph degree M: links kept per node and layer (layer 0 keeps 2·M). Higher = better recall, more memory. Range ≥ 2.</summary>
    public int Connectivity { get; set; } = 16;

    /// <summary>Candidate list length while inserting (efConstruction), in nodes. Higher = better graph, slower build. Range ≥ 1.</summary>
    public int ExpansionAdd { get; set; } = 128;

    /// <summary>
    /// Candidate list length while searching (efSearch), in nodes; must be ≥ <see cref="TopK"/>. Default 128 (with
    /// <see cref="TopK"/> = 100): on ResNet-20 CIFAR-10 keys this came within 0.10 points of the exact store's error, with top-1
    /// agreement 0.997, where efSearch 64 with top-k 50 was 0.18 points off (<c>docs/results/compare/report.md</c>).
    /// </summary>
    public int ExpansionSearch { get; set; } = 128;

    /// <summary>
    /// Neighbours retrieved per query, in keys; the log-mass is exact over these. Range ≥ 1. When it is at least the number
    /// of keys, every key contributes (keys the graph walk misses are scored directly) and the result is the exact log-mass.
    /// </summary>
    public int TopK { get; set; } = 100;

    /// <summary>
    /// Native worker threads for building and searching, and the size of the index's native thread-context pool:
    /// at most this many native calls run at once, whatever the number of callers. 0 = <see cref="Environment.ProcessorCount"/>.
    /// </summary>
    public int Threads { get; set; }

    /// <summary>How the graph stores keys: <see cref="HnswScalarKind.Float32"/> (exact similarities) or a smaller, lossy kind.</summary>
    public HnswScalarKind ScalarKind { get; set; } = HnswScalarKind.Float32;

    /// <summary>
    /// The float32 distance kernel: <see cref="HnswDistanceKernel.Float32"/> (default: float32 multiply–add, four vector
    /// accumulators) or USearch's own (<see cref="HnswDistanceKernel.Native"/>, which accumulates in float64). Float32
    /// storage only; the smaller kinds always use USearch's kernels. Not stored with the graph: a restored memory takes it
    /// from the factory's options.
    /// </summary>
    public HnswDistanceKernel DistanceKernel { get; set; } = HnswDistanceKernel.Float32;

    /// <summary>
    /// Whether searches of a settled graph walk it in managed code (default true; float32 keys with the
    /// <see cref="HnswDistanceKernel.Float32"/> kernel only). After an add that grew the graph by a quarter or more (and after
    /// a load), the graph is serialized once into one block that USearch views in place and the walk reads: hnswlib's search,
    /// prefetching each next neighbour's vector while the current one is scored, with the distance kernel inlined (USearch's
    /// C API walks without prefetching and calls the kernel across the native boundary for every distance). The next add
    /// loads the block back into an editable index first. Neither copy is kept beside the other, except while switching.
    /// </summary>
    public bool ManagedSearch { get; set; } = true;

    /// <summary>
    /// Whether an add that settles the graph (see <see cref="ManagedSearch"/>, which it needs) inserts its keys in managed
    /// code straight into the new settled block (default true): USearch's insertion algorithm, with the next neighbour's
    /// vector prefetched and the kernel inlined, instead of USearch's add followed by a serialization. It applies to the first
    /// add and to adds to a settled graph; the block is USearch's layout, so a later add loads it back into USearch as before.
    /// </summary>
    public bool ManagedBuild { get; set; } = true;

    /// <summary>Keys to reserve room for when the memory is created, in keys (0 = grow on the first <c>Add</c>).</summary>
    public long InitialCapacity { get; set; }

    /// <summary>The effective native thread count: <see cref="Threads"/>, or the processor count when it is 0.</summary>
    public int EffectiveThreads => Threads > 0 ? Threads : Environment.ProcessorCount;

    /// <summary>A copy, so a memory is not affected by later changes to the options object it was created from.</summary>
    public HnswCacheOptions Clone() => (HnswCacheOptions)MemberwiseClone();

    /// <summary>Every problem with these settings, as messages naming the setting; empty when they are valid.</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (Connectivity < 2)
        {
            errors.Add($"Cache:Hnsw:Connectivity must be at least 2 (got {Connectivity}).");
        }

        if (ExpansionAdd < 1)
        {
            errors.Add($"Cache:Hnsw:ExpansionAdd must be positive (got {ExpansionAdd}).");
        }

        if (TopK < 1)
        {
            errors.Add($"Cache:Hnsw:TopK must be positive (got {TopK}).");
        }

        if (ExpansionSearch < 1)
        {
            errors.Add($"Cache:Hnsw:ExpansionSearch must be positive (got {ExpansionSearch}).");
        }
        else if (TopK >= 1 && ExpansionSearch < TopK)
        {
            errors.Add($"Cache:Hnsw:ExpansionSearch ({ExpansionSearch}) must be at least Cache:Hnsw:TopK ({TopK}): " +
                "the search keeps ExpansionSearch candidates and returns the best TopK of them.");
        }

        if (!Enum.IsDefined(DistanceKernel))
        {
            errors.Add($"Cache:Hnsw:DistanceKernel must be Float32 or Native (got {(int)DistanceKernel}).");
        }

        if (Threads < 0)
        {
            errors.Add($"Cache:Hnsw:Threads must be 0 (one per processor) or positive (got {Threads}).");
        }

        if (!Enum.IsDefined(ScalarKind))
        {
            errors.Add($"Cache:Hnsw:ScalarKind '{ScalarKind}' is not one of {string.Join(", ", Enum.GetNames<HnswScalarKind>())}.");
        }

        if (InitialCapacity < 0)
        {
            errors.Add($"Cache:Hnsw:InitialCapacity must not be negative (got {InitialCapacity}).");
        }

        return errors;
    }
}

/// <summary>How the HNSW graph stores key vectors.</summary>
public enum HnswScalarKind
{
    /// <summary>4 bytes per component; similarities equal the float32 dot product up to rounding.</summary>
    Float32,

    /// <summary>2 bytes per component (IEEE half); similarities carry about 1e-3 relative error.</summary>
    Float16,

    /// <summary>2 bytes per component (bfloat16); similarities carry about 1e-2 relative error.</summary>
    BFloat16,

    /// <summary>1 byte per component: each key is scaled to [−127, 127] (cosine metric); coarsest similarities.</summary>
    Int8,
}

/// <summary>Which inner-product kernel a float32 HNSW graph measures distances with.</summary>
public enum HnswDistanceKernel
{
    /// <summary>Float32 multiply–add with four vector accumulators (this library's kernel).</summary>
    Float32 = 0,

    /// <summary>USearch's built-in kernel (NumKong; float64 accumulation in USearch 2.26).</summary>
    Native = 1,
}
