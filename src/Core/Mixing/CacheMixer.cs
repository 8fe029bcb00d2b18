using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core;

/// <summary>
/// The cache model's output (Orhan 2018): <c>p(y|x) = (1 − λ) p_net(y|x) + λ p_mem(y|x)</c>, with
/// <c>p_mem = softmax_c(L_c(x))</c> at temperature θ. λ = 0 is the network alone, λ = 1 the cache alone.
/// </summary>
/// <remarks>Returned tensors are new and owned by the caller; inputs are never disposed.</remarks>
public static class CacheMixer
{
    /// <summary>Default queries per <see cref="ICacheMemory.ClassLogMass"/> call in the batched methods.</summary>
    public const int DefaultBatchSize = 1024;

    /// <summary>
    /// <c>(1 − λ) p_net + λ p_mem</c>, the one place the mixture is written. <paramref name="netProbabilities"/> has the shape of
    /// <paramref name="memoryProbabilities"/> or of its trailing dimensions (e.g. <c>[b, C]</c> against <c>[θ, b, C]</c>, one
    /// memory distribution per θ). Float32, or float64 when either input is float64; in the autograd graph of both inputs.
    /// λ = 0 returns the network's probabilities, λ = 1 the memory's, exactly (as copies).
    /// </summary>
    public static Tensor Mix(Tensor netProbabilities, Tensor memoryProbabilities, double lambda)
    {
        ArgumentNullException.ThrowIfNull(netProbabilities);
        ArgumentNullException.ThrowIfNull(memoryProbabilities);
        CheckLambda(lambda);
        var net = netProbabilities.shape;
        var mem = memoryProbabilities.shape;
        if (net.Length > mem.Length || !net.SequenceEqual(mem[^net.Length..]))
        {
            throw new ArgumentException(
                $"netProbabilities [{string.Join(", ", net)}] and memoryProbabilities " +
                $"[{string.Join(", ", mem)}] differ in shape.", nameof(memoryProbabilities));
        }

        using var scope = NewDisposeScope();
        var dtype = netProbabilities.dtype == ScalarType.Float64 || memoryProbabilities.dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
        var pNet = netProbabilities.to_type(dtype);
        var pMem = memoryProbabilities.to(dtype, pNet.device);
        var mixed = lambda switch
        {
            0 => pNet.expand(mem).clone(),
            1 => pMem.clone(),
            _ => pMem.mul(lambda).add_(pNet, 1 - lambda),
        };
        return mixed.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// <c>p(y|x)</c> <c>[b, C]</c> for queries <c>[b, d]</c> given the network's probabilities <c>[b, C]</c>, on the device of
    /// <paramref name="netProbabilities"/>. A query of an empty memory has <c>p_mem = 0</c>. At λ = 0 the memory is not queried.
    /// </summary>
    public static Tensor Probabilities(ICacheMemory memory, Tensor queries, Tensor netProbabilities, double theta, double lambda)
    {
        ArgumentNullException.ThrowIfNull(memory);
        ArgumentNullException.ThrowIfNull(queries);
        ArgumentNullException.ThrowIfNull(netProbabilities);
        CheckLambda(lambda);
        CheckBatch(memory, queries, netProbabilities, null);
        using var scope = NewDisposeScope();
        if (lambda == 0)
        {
            return netProbabilities.to_type(ScalarType.Float32).clone().MoveToOuterDisposeScope();
        }

        var pMem = memory.MemoryProbabilities(queries, theta);
        return Mix(netProbabilities, pMem, lambda).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Predicted classes <c>[n]</c> (int64, CPU) of the mixture at (θ, λ), querying the memory in batches of
    /// <paramref name="batchSize"/>. Ties go to the smaller class index.
    /// </summary>
    public static Tensor Predict(
        ICacheMemory memory, Tensor queries, Tensor netProbabilities, double theta, double lambda, int batchSize = DefaultBatchSize)
    {
        ArgumentNullException.ThrowIfNull(memory);
        ArgumentNullException.ThrowIfNull(queries);
        ArgumentNullException.ThrowIfNull(netProbabilities);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        CheckLambda(lambda);
        CheckBatch(memory, queries, netProbabilities, null);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var n = queries.shape[0];
        var parts = new List<Tensor>();
        for (long start = 0; start < n; start += batchSize)
        {
            var rows = Math.Min(batchSize, n - start);
            var p = Probabilities(memory, queries.narrow(0, start, rows), netProbabilities.narrow(0, start, rows), theta, lambda);
            parts.Add(p.argmax(1).cpu());
        }

        var predictions = parts.Count switch
        {
            0 => empty(0, dtype: ScalarType.Int64),
            1 => parts[0],
            _ => cat(parts, 0),
        };
        return predictions.MoveToOuterDisposeScope();
    }

    internal static void CheckLambda(double lambda)
    {
        if (!(lambda >= 0 && lambda <= 1))
        {
            throw new ArgumentOutOfRangeException(nameof(lambda), lambda, "λ must lie in [0, 1].");
        }
    }

    internal static void CheckBatch(ICacheMemory memory, Tensor queries, Tensor netProbabilities, Tensor? labels)
    {
        CacheInputs.CheckQueryShape(queries, memory.Dimension);

        var n = queries.shape[0];
        if (netProbabilities.dim() != 2 || netProbabilities.shape[0] != n || netProbabilities.shape[1] != memory.ClassCount)
        {
            throw new ArgumentException(
                $"netProbabilities has shape [{string.Join(", ", netProbabilities.shape)}]; expected [{n}, {memory.ClassCount}].",
                nameof(netProbabilities));
        }

        if (labels is not null && (labels.dim() != 1 || labels.shape[0] != n))
        {
            throw new ArgumentException($"labels has shape [{string.Join(", ", labels.shape)}]; expected [{n}].", nameof(labels));
        }
    }
}
