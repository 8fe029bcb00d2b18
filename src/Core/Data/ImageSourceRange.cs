using ScalableCache.Core.Models;

namespace ScalableCache.Core.Data;

/// <summary>Images <c>[start, start + count)</c> of another source, renumbered from 0 (reads go to the inner source).</summary>
internal sealed class ImageSourceRange : IImageSource
{
    private readonly IImageSource _inner;
    private readonly int _start;

    public ImageSourceRange(IImageSource inner, int start, int count)
    {
        ArgumentNullException.ThrowIfNull(inner);
        if (start < 0 || count < 0 || start > inner.Count - count)
        {
            throw new ArgumentOutOfRangeException(nameof(count), $"Images [{start}, {start + count}) are outside the source's {inner.Count}.");
        }

        _inner = inner;
        _start = start;
        Count = count;
        var labels = new int[count];
        for (var i = 0; i < count; i++)
        {
            labels[i] = inner.Labels[start + i];
        }

        Labels = labels;
    }

    public int Count { get; }

    public InputShape Shape => _inner.Shape;

    public IReadOnlyList<string> ClassNames => _inner.ClassNames;

    public IReadOnlyList<int> Labels { get; }

    public void Read(int start, int count, Span<byte> destination)
    {
        if (start < 0 || count < 0 || start > Count - count)
        {
            throw new ArgumentOutOfRangeException(nameof(count), $"Images [{start}, {start + count}) are outside the range's {Count}.");
        }

        _inner.Read(_start + start, count, destination);
    }
}
