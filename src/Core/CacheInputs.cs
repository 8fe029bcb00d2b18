using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core;

/// <summary>
/// The input checks every <see cref="ICacheMemory"/> makes, in one place, so all stores reject the same inputs with the same
/// messages (the conformance suite asserts them).
/// </summary>
public static class CacheInputs
{
    /// <summary>
    /// Checks shapes and element types of an <see cref="ICacheMemory.Add"/> call: keys <c>[n, dimension]</c> float32, labels
    /// <c>[n]</c> int64 (or int32). Returns n.
    /// </summary>
    public static long CheckAddShapes(Tensor keys, Tensor labels, int dimension)
    {
        ArgumentNullException.ThrowIfNull(keys);
        ArgumentNullException.ThrowIfNull(labels);
        if (keys.dim() != 2 || keys.shape[1] != dimension)
        {
            throw new ArgumentException($"keys has shape [{string.Join(", ", keys.shape)}]; expected [n, {dimension}].", nameof(keys));
        }

        if (keys.dtype != ScalarType.Float32)
        {
            throw new ArgumentException($"keys has element type {keys.dtype}; expected Float32.", nameof(keys));
        }

        var n = keys.shape[0];
        if (labels.dim() != 1 || labels.shape[0] != n)
        {
            throw new ArgumentException(
                $"labels has shape [{string.Join(", ", labels.shape)}]; expected [{n}] (one label per key row).", nameof(labels));
        }

        if (labels.dtype is not (ScalarType.Int64 or ScalarType.Int32))
        {
            throw new ArgumentException($"labels has element type {labels.dtype}; expected Int64.", nameof(labels));
        }

        return n;
    }

    /// <summary>Throws naming the first row of <paramref name="rows"/> <c>[n, d]</c> that holds NaN or ±∞.</summary>
    public static void ThrowIfNonFinite(Tensor rows, string name, string suffix = "")
    {
        ArgumentNullException.ThrowIfNull(rows);
        using var scope = NewDisposeScope();
        ThrowAtFirst(isfinite(rows.detach()).all(1).logical_not(), name, "has a non-finite value (NaN or ±∞)" + suffix);
    }

    /// <summary>
    /// Throws naming the first row of <paramref name="rows"/> <c>[n, d]</c> (finite values) whose squared norm overflows
    /// float32: a store that scores in float32 (HNSW's distance <c>1 − a·b</c>) cannot give such a key a finite similarity.
    /// </summary>
    public static void ThrowIfNormOverflows(Tensor rows, string name, string suffix = "")
    {
        ArgumentNullException.ThrowIfNull(rows);
        using var scope = NewDisposeScope();
        ThrowAtFirst(isfinite(rows.detach().to_type(ScalarType.Float32).square().sum(1)).logical_not(), name, "has a squared norm beyond float32's range" + suffix);
    }

    /// <summary>Throws naming the first row <paramref name="failing"/> (<c>[n]</c>, bool) marks, when any is.</summary>
    private static void ThrowAtFirst(Tensor failing, string name, string problem)
    {
        if (failing.any().item<bool>())
        {
            var first = failing.to_type(ScalarType.Int32).argmax().item<long>();
            throw new ArgumentException($"Row {first} of {name} {problem}.", name);
        }
    }

    /// <summary>Labels as int64 on the CPU, after checking each lies in <c>[0, classCount)</c> (the message names the row).</summary>
    public static Tensor CheckedLabels(Tensor labels, int classCount)
    {
        ArgumentNullException.ThrowIfNull(labels);
        using var scope = NewDisposeScope();
        var y = labels.detach().to(ScalarType.Int64, CPU);
        var outside = y.lt(0).logical_or(y.ge(classCount));
        if (outside.any().item<bool>())
        {
            var row = outside.to_type(ScalarType.Int32).argmax().item<long>();
            throw new ArgumentException(
                $"Row {row} has label {y[row].item<long>()}, outside [0, {classCount}); nothing was added.", nameof(labels));
        }

        return y.MoveToOuterDisposeScope();
    }

    /// <summary>Checks that queries are <c>[b, dimension]</c>.</summary>
    public static void CheckQueryShape(Tensor queries, int dimension)
    {
        ArgumentNullException.ThrowIfNull(queries);
        if (queries.dim() != 2 || queries.shape[1] != dimension)
        {
            throw new ArgumentException($"queries has shape [{string.Join(", ", queries.shape)}]; expected [b, {dimension}].", nameof(queries));
        }
    }

    /// <summary>Checks a <see cref="ICacheMemory.ClassLogMass"/> call: queries <c>[b, dimension]</c> float32, θ finite and positive.</summary>
    public static void CheckQuery(Tensor queries, int dimension, ReadOnlySpan<double> thetas)
    {
        CheckQueryShape(queries, dimension);
        if (queries.dtype != ScalarType.Float32)
        {
            throw new ArgumentException($"queries has element type {queries.dtype}; expected Float32.", nameof(queries));
        }

        if (thetas.IsEmpty)
        {
            throw new ArgumentException("At least one θ is needed.", nameof(thetas));
        }

        foreach (var theta in thetas)
        {
            if (!(theta > 0) || !double.IsFinite(theta))
            {
                throw new ArgumentOutOfRangeException(nameof(thetas), theta, "Every θ must be finite and greater than 0.");
            }
        }
    }
}
