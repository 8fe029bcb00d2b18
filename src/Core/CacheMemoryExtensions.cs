using ScalableCache.Core.Persistence;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core;

/// <summary>Convenience operations on <see cref="ICacheMemory"/>: filling one in blocks, and its results.</summary>
public static class CacheMemoryExtensions
{
    /// <summary>Keys per <see cref="ICacheMemory.Add"/> call of <see cref="AddKeyFile"/> by default (64 MiB of float32 keys at d = 2,048).</summary>
    public const int DefaultKeyFileBlockRows = 8192;

    /// <summary>
    /// Adds every key of <paramref name="file"/> to <paramref name="memory"/> in row order, <paramref name="blockRows"/> keys per
    /// <see cref="ICacheMemory.Add"/> call: each block is read with <see cref="KeyFile.ReadKeys"/> (float32, converted from the file's
    /// scalar type, its mapped pages released) and freed before the next, so outside the memory only one block exists
    /// (<c>blockRows × d × 4</c> bytes and the file's scalars), never N × d. This builds any provider from a key file — a random
    /// projection over HNSW or exact keys, HNSW itself — with the same adds as a caller adding those blocks from memory; the file's
    /// row r becomes key <c>Count + r</c> of the memory (its id for <see cref="IKeyRetrievingCacheMemory.RetrievedKeys"/>).
    /// </summary>
    /// <param name="memory">The memory to fill (usually empty).</param>
    /// <param name="file">An open key file with the memory's dimension and class count; it stays open.</param>
    /// <param name="blockRows">Keys per add (≥ 1).</param>
    /// <param name="progress">Keys of the file added so far, after each block.</param>
    /// <param name="cancellationToken">Checked before each block; the blocks already added stay in the memory.</param>
    /// <returns>The keys added.</returns>
    /// <exception cref="ArgumentException">The file's dimension or class count is not the memory's.</exception>
    public static long AddKeyFile(
        this ICacheMemory memory, KeyFile file, int blockRows = DefaultKeyFileBlockRows, IProgress<long>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(memory);
        ArgumentNullException.ThrowIfNull(file);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(blockRows);
        if (file.Layout.Dimension != memory.Dimension || file.Layout.ClassCount != memory.ClassCount)
        {
            throw new ArgumentException(
                $"The key file '{file.Path}' holds {file.Layout.Dimension}-d keys of {file.Layout.ClassCount} classes; the {memory.Provider} memory " +
                $"takes {memory.Dimension}-d keys of {memory.ClassCount} classes.", nameof(file));
        }

        memory.AddBlocks(file.Count, (start, n) => file.ReadKeys(start, n), blockRows, progress, cancellationToken);
        return file.Count;
    }

    /// <summary>
    /// The one block loop of <see cref="AddKeyFile"/> and <c>CacheEvaluation.Build</c>: adds <paramref name="count"/> keys,
    /// <paramref name="blockRows"/> at a time, each block read by <paramref name="read"/> <c>(start, rows)</c> inside its own dispose
    /// scope, and the block's two tensors disposed after the add even when the reader detached them from every scope (a chunk
    /// left to the finaliser stays resident until a garbage collection, as much again as the store).
    /// </summary>
    internal static void AddBlocks(
        this ICacheMemory memory, long count, Func<long, int, (Tensor Keys, Tensor Labels)> read, int blockRows, IProgress<long>? progress,
        CancellationToken cancellationToken)
    {
        for (long start = 0; start < count; start += blockRows)
        {
            cancellationToken.ThrowIfCancellationRequested();
            using (var scope = NewDisposeScope())
            {
                var n = (int)Math.Min(blockRows, count - start);
                var (keys, labels) = read(start, n);
                using (keys)
                using (labels)
                {
                    memory.Add(keys, labels);
                }
            }

            progress?.Report(Math.Min(start + blockRows, count));
        }
    }

    /// <summary><c>p_mem = softmax_c(L_c)</c> for a single θ: <c>[b, ClassCount]</c>, owned by the caller.</summary>
    public static Tensor MemoryProbabilities(this ICacheMemory memory, Tensor queries, double theta)
    {
        ArgumentNullException.ThrowIfNull(memory);
        using var scope = NewDisposeScope();
        var logMass = memory.ClassLogMass(queries, [theta]);
        return LogMass.ToProbabilities(logMass[0]).MoveToOuterDisposeScope();
    }
}

/// <summary>Operations on per-class log-mass tensors (last dimension = classes).</summary>
public static class LogMass
{
    /// <summary>softmax over the class dimension; rows where every class is −∞ (an empty memory) become all zeros.</summary>
    public static Tensor ToProbabilities(Tensor logMass)
    {
        ArgumentNullException.ThrowIfNull(logMass);
        using var scope = NewDisposeScope();
        var max = logMass.amax([-1], keepdim: true);
        var finite = isfinite(max);
        var shifted = logMass - where(finite, max, zeros_like(max));
        var e = shifted.exp();
        var sum = e.sum(-1, keepdim: true);
        var p = where(finite, e / sum.clamp_min(float.Epsilon), zeros_like(e));
        return p.MoveToOuterDisposeScope();
    }

    /// <summary>Exact merge of two shards of one cache: element-wise log-add-exp, with −∞ ⊕ −∞ = −∞. Differentiable.</summary>
    public static Tensor Merge(Tensor a, Tensor b)
    {
        ArgumentNullException.ThrowIfNull(a);
        ArgumentNullException.ThrowIfNull(b);
        using var scope = NewDisposeScope();
        var m = maximum(a, b);
        var absent = isneginf(m);
        var safe = where(isfinite(m), m, zeros_like(m));
        var sum = (a - safe).exp() + (b - safe).exp();
        var r = safe + where(absent, ones_like(sum), sum).log(); // no log(0) where both are −∞: zero, not NaN, gradients
        return where(absent, m, r).MoveToOuterDisposeScope();
    }
}
