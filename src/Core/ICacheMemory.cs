using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core;

/// <summary>
/// A key–value cache memory (Orhan 2018): keys are L2-normalised feature vectors μ_k, values are class labels y_k.
/// Every backend answers the same query: the per-class log-mass
/// <c>L_c(x) = log Σ_{k : y_k = c} exp(θ · φ(x)·μ_k)</c> for a batch of queries and one or several θ at once.
/// Then <c>p_mem(y|x) = softmax_c(L_c(x))</c>; a class without keys has <c>L_c = −∞</c>; two shards of one cache merge
/// exactly by log-add-exp of their log-masses.
/// </summary>
/// <remarks>
/// <para><b>Tensor ownership.</b> Inputs are never disposed and never retained: <see cref="Add"/> copies the keys and labels
/// into storage the memory owns (on its configured device), so the caller may dispose its tensors right after the call.
/// Tensors returned by <see cref="ClassLogMass"/> are new tensors owned by the caller (they join the caller's active
/// <c>torch.NewDisposeScope()</c> if one is open).</para>
/// <para><b>Thread-safety.</b> Any number of threads may query concurrently with each other and with one thread calling
/// <see cref="Add"/>. A query sees a consistent snapshot: either all rows of a given <see cref="Add"/> call or none of them.
/// Concurrent <see cref="Add"/> calls are serialised. <see cref="IDisposable.Dispose"/> must not race with any other call.</para>
/// <para><b>Keys.</b> The caller's extractor L2-normalises keys and queries; memories do not re-normalise them (a projecting
/// decorator documents what it does). <see cref="Add"/> rejects non-finite values, a wrong dimension and labels outside
/// <c>[0, ClassCount)</c> with an <see cref="ArgumentException"/> that names the offending row.</para>
/// </remarks>
public interface ICacheMemory : IDisposable
{
    /// <summary>The provider name this memory was built by (e.g. <c>Exact</c>, <c>RandomProjection</c>, <c>Hnsw</c>).</summary>
    string Provider { get; }

    /// <summary>Dimension d of the keys and queries this memory accepts.</summary>
    int Dimension { get; }

    /// <summary>Number of classes C; labels lie in <c>[0, C)</c>.</summary>
    int ClassCount { get; }

    /// <summary>Number of keys stored.</summary>
    long Count { get; }

    /// <summary>Appends keys <c>[n, d]</c> (float32) with labels <c>[n]</c> (int64). All rows or none are added.</summary>
    void Add(Tensor keys, Tensor labels);

    /// <summary>
    /// Per-class log-mass for a batch of queries <c>[b, d]</c> (float32, L2-normalised) at each θ in <paramref name="thetas"/>.
    /// Returns a float32 tensor <c>[thetas.Length, b, ClassCount]</c> on the CPU, owned by the caller. Classes with no keys
    /// (or, for approximate stores, no retrieved keys) hold <c>−∞</c>. One similarity pass serves every θ.
    /// </summary>
    Tensor ClassLogMass(Tensor queries, ReadOnlySpan<double> thetas);
}
