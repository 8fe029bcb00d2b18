using ScalableCache.Core.Models;

namespace ScalableCache.Core.Data;

/// <summary>
/// Labelled images read batch by batch (uint8 CHW pixels), so a data set larger than memory — ImageNet's 1,281,167 training images —
/// streams through feature extraction. <see cref="ImageDataset"/> is the in-memory source; <see cref="ImageFileSource"/> decodes
/// files on demand.
/// </summary>
/// <remarks>
/// <see cref="Read"/> may be called from a background thread while the caller runs the network on the previous batch, and a source
/// must allow concurrent calls for disjoint ranges. Reading the same range twice gives the same pixels.
/// </remarks>
public interface IImageSource
{
    /// <summary>Number of images.</summary>
    int Count { get; }

    /// <summary>Shape of every image read.</summary>
    InputShape Shape { get; }

    /// <summary>Class names in label order.</summary>
    IReadOnlyList<string> ClassNames { get; }

    /// <summary>Labels in <c>[0, ClassNames.Count)</c>, one per image.</summary>
    IReadOnlyList<int> Labels { get; }

    /// <summary>Writes images <c>[start, start + count)</c> (NCHW, <c>count · Shape.Size</c> bytes) to <paramref name="destination"/>.</summary>
    void Read(int start, int count, Span<byte> destination);
}
