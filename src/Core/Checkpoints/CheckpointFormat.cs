namespace ScalableCache.Core.Checkpoints;

/// <summary>On-disk checkpoint formats, told apart by content (<see cref="CheckpointFormats.Detect(string)"/>), not by extension.</summary>
public enum CheckpointFormat
{
    /// <summary>Hugging Face safetensors: 8-byte little-endian header length, JSON header, raw little-endian tensor data.</summary>
    Safetensors,

    /// <summary>PyTorch ≥ 1.6 <c>torch.save</c>: a zip archive with <c>…/data.pkl</c> and one <c>…/data/&lt;key&gt;</c> entry per storage.</summary>
    TorchZip,

    /// <summary>
    /// PyTorch legacy (pre-zip) <c>torch.save</c>: magic-number, protocol-version and sys-info pickles, the object pickle with
    /// persistent storage references, the pickled list of storage keys, then each storage as an 8-byte element count and raw data.
    /// </summary>
    TorchLegacy,

    /// <summary>
    /// A whole Keras model saved with <c>model.save</c> (HDF5 signature <c>\x89HDF\r\n\x1a\n</c>): the root attribute
    /// <c>model_config</c> (JSON) describes the architecture, the group <c>model_weights</c> holds the weights.
    /// </summary>
    KerasHdf5,
}
