namespace ScalableCache.Core;

/// <summary>Torch runtime settings (configuration section <c>Torch</c>).</summary>
public sealed class TorchOptions
{
    /// <summary>Configuration section name.</summary>
    public const string SectionName = "Torch";

    /// <summary>Device for models and tensors: <c>cpu</c>, <c>cuda</c> or <c>cuda:N</c>.</summary>
    public string Device { get; set; } = "cpu";

    /// <summary>Intra-op CPU threads; 0 leaves libtorch's default (one per core).</summary>
    public int Threads { get; set; }

    /// <summary>
    /// Let the native allocator reuse freed blocks under 32 MiB (<see cref="ProcessMemory.ReuseNativeAllocations"/>) instead of
    /// mapping each forward pass's activations afresh: fewer page faults, the same peak. Applied once, with <see cref="Threads"/>.
    /// </summary>
    public bool ReuseNativeMemory { get; set; } = true;

    /// <summary>Images per forward pass during feature extraction.</summary>
    public int BatchSize { get; set; } = 256;

    /// <summary>
    /// Most images the network sees in one call (<see cref="Features.LayerTapExtractor.ForwardBatchSize"/>); a batch of
    /// <see cref="BatchSize"/> goes through it in slices of this many, with the same outputs.
    /// </summary>
    public int ForwardBatchSize { get; set; } = Features.LayerTapExtractor.DefaultForwardBatchSize;
}
