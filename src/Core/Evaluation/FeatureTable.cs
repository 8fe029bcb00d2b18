using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Evaluation;

/// <summary>
/// What one forward pass over a data set yields for the cache: unit keys, the network's class probabilities and the labels,
/// row-aligned, on the CPU. Owns its tensors.
/// </summary>
public sealed class FeatureTable : IDisposable
{
    /// <summary>Takes ownership of the three tensors (detached, moved to the CPU).</summary>
    public FeatureTable(Tensor keys, Tensor probabilities, Tensor labels, IReadOnlyList<string> layers)
    {
        ArgumentNullException.ThrowIfNull(keys);
        ArgumentNullException.ThrowIfNull(probabilities);
        ArgumentNullException.ThrowIfNull(labels);
        if (keys.shape[0] != probabilities.shape[0] || keys.shape[0] != labels.shape[0])
        {
            throw new ArgumentException(
                $"Row counts differ: keys {keys.shape[0]}, probabilities {probabilities.shape[0]}, labels {labels.shape[0]}.");
        }

        Keys = keys.detach().cpu();
        Probabilities = probabilities.detach().cpu();
        Labels = labels.detach().cpu().to_type(ScalarType.Int64);
        Layers = layers.ToArray();
    }

    /// <summary>Unit keys <c>[n, D]</c>.</summary>
    public Tensor Keys { get; }

    /// <summary><c>p_net</c> rows <c>[n, C]</c>.</summary>
    public Tensor Probabilities { get; }

    /// <summary>True labels <c>[n]</c> (int64).</summary>
    public Tensor Labels { get; }

    /// <summary>The tapped layers the keys concatenate.</summary>
    public IReadOnlyList<string> Layers { get; }

    /// <summary>Number of rows.</summary>
    public long Count => Labels.shape[0];

    /// <summary>Key dimension D.</summary>
    public long KeyDimension => Keys.shape[1];

    /// <summary>The rows at <paramref name="indices"/> as a new table (copies).</summary>
    public FeatureTable Rows(IReadOnlyList<int> indices)
    {
        ArgumentNullException.ThrowIfNull(indices);
        using var scope = NewDisposeScope();
        var index = tensor(indices.Select(i => (long)i).ToArray());
        var table = new FeatureTable(Keys.index_select(0, index), Probabilities.index_select(0, index), Labels.index_select(0, index), Layers);
        table.Keys.MoveToOuterDisposeScope();
        table.Probabilities.MoveToOuterDisposeScope();
        table.Labels.MoveToOuterDisposeScope();
        return table;
    }

    /// <summary>The rows of <paramref name="first"/> followed by those of <paramref name="second"/> (copies).</summary>
    public static FeatureTable Concat(FeatureTable first, FeatureTable second)
    {
        ArgumentNullException.ThrowIfNull(first);
        ArgumentNullException.ThrowIfNull(second);
        using var scope = NewDisposeScope();
        var table = new FeatureTable(
            cat([first.Keys, second.Keys]), cat([first.Probabilities, second.Probabilities]), cat([first.Labels, second.Labels]), first.Layers);
        table.Keys.MoveToOuterDisposeScope();
        table.Probabilities.MoveToOuterDisposeScope();
        table.Labels.MoveToOuterDisposeScope();
        return table;
    }

    /// <summary>Top-1 error of the network alone.</summary>
    public double NetworkError()
    {
        using var scope = NewDisposeScope();
        return Probabilities.argmax(1).ne(Labels).sum().item<long>() / (double)Math.Max(1, Count);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        Keys.Dispose();
        Probabilities.Dispose();
        Labels.Dispose();
    }
}
