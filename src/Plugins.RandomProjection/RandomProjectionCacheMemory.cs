using ScalableCache.Core;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.RandomProjection;

/// <summary>
/// Decorator that projects keys and queries <c>d → k</c> and delegates storage and search to an inner memory of
/// dimension k.
/// </summary>
/// <remarks>
/// <para><b>Validation.</b> <see cref="Add"/> and <see cref="ClassLogMass"/> check the caller's d-dimensional input
/// against the contract with <see cref="CacheInputs"/> (shape, element type, finiteness, label range and θ, naming the
/// offending row) before projecting, so errors speak of the caller's rows and dimension; the inner memory then checks the
/// projected input again.</para>
/// <para><b>Projection.</b> Both sides go through the same matrix: <c>x ↦ R x</c>, then (with
/// <see cref="Renormalize"/>) <c>R x · ‖x‖ / ‖R x‖</c>, so the inner memory scores <c>‖q‖‖μ‖ · cos(Rq, Rμ)</c>, which is
/// the cosine of the projections for the contract's unit vectors (see <see cref="RandomProjectionCacheOptions.Renormalize"/>).</para>
/// <para><b>Snapshots and threads.</b> The matrix is immutable, and each call makes exactly one call on the inner memory,
/// so the inner memory's guarantees carry over unchanged: an <see cref="Add"/> becomes visible to queries all at once,
/// concurrent adds are serialised by the inner memory, and queries may run concurrently with each other and with one add.</para>
/// <para><b>Autograd.</b> When gradients are enabled and the queries require them, the projection is recorded (it is a
/// matrix multiply and a rescale), so gradients flow through to the d-dimensional queries if the inner memory supports it.</para>
/// </remarks>
internal sealed partial class RandomProjectionCacheMemory : IRandomProjectionCacheMemory
{
    /// <summary>Provider name registered by this backend.</summary>
    public const string ProviderName = "RandomProjection";

    private readonly RandomProjectionMatrix _projection;
    private readonly ICacheMemory _inner;
    private volatile bool _disposed;

    /// <summary>Wraps <paramref name="inner"/> (dimension k); takes ownership of both <paramref name="projection"/> and <paramref name="inner"/>.</summary>
    public RandomProjectionCacheMemory(RandomProjectionMatrix projection, ICacheMemory inner, bool renormalize)
    {
        ArgumentNullException.ThrowIfNull(projection);
        ArgumentNullException.ThrowIfNull(inner);
        if (inner.Dimension != projection.OutputDimension)
        {
            throw new ArgumentException(
                $"The inner memory has dimension {inner.Dimension}; the projection outputs {projection.OutputDimension}.", nameof(inner));
        }

        if (inner.Count != 0)
        {
            throw new ArgumentException($"The inner memory must be empty (it holds {inner.Count} keys).", nameof(inner));
        }

        _projection = projection;
        _inner = inner;
        Renormalize = renormalize;
    }

    public string Provider => ProviderName;

    public int Dimension => _projection.InputDimension;

    public int ClassCount => _inner.ClassCount;

    public long Count => _inner.Count;

    public RandomProjectionMatrix Projection => _projection;

    public ICacheMemory Inner => _inner;

    public bool Renormalize { get; }

    public void Add(Tensor keys, Tensor labels)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var n = CacheInputs.CheckAddShapes(keys, labels, Dimension);

        if (n == 0)
        {
            return;
        }

        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var x = keys.detach();
        CacheInputs.ThrowIfNonFinite(x, nameof(keys), "; nothing was added");
        var y = CacheInputs.CheckedLabels(labels, ClassCount);

        _inner.Add(Project(x), y);
    }

    public Tensor ClassLogMass(Tensor queries, ReadOnlySpan<double> thetas)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CacheInputs.CheckQuery(queries, Dimension, thetas);
        var track = is_grad_enabled() && queries.requires_grad;
        using var scope = NewDisposeScope();
        using var gradGuard = track ? null : no_grad();
        if (queries.shape[0] > 0)
        {
            CacheInputs.ThrowIfNonFinite(queries, nameof(queries));
        }

        var projected = Project(track ? queries : queries.detach());
        return _inner.ClassLogMass(projected, thetas).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The keys the inner memory retrieves for the projected queries (an inner HNSW store's top-k in the k-dimensional space). Key
    /// ids are the same on both sides: the row in insertion order, which this decorator passes through unchanged.
    /// </summary>
    /// <exception cref="NotSupportedException">The inner memory sums over every key (e.g. <c>Exact</c>).</exception>
    public IReadOnlyList<long[]> RetrievedKeys(Tensor queries)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CacheInputs.CheckQueryShape(queries, Dimension);
        if (_inner is not IKeyRetrievingCacheMemory retrieving)
        {
            throw new NotSupportedException(
                $"The random projection's inner {_inner.Provider} memory sums over every key: it retrieves none. Use a retrieving inner store " +
                "(Cache:RandomProjection:Inner = Hnsw) to list retrieved keys.");
        }

        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        if (queries.shape[0] > 0)
        {
            CacheInputs.ThrowIfNonFinite(queries, nameof(queries));
        }

        return retrieving.RetrievedKeys(Project(queries.detach()));
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _inner.Dispose();
        _projection.Dispose();
    }

    /// <summary><c>R x</c>, rescaled to <c>‖x‖</c> per row when <see cref="Renormalize"/> is set; <c>[n, k]</c> on the projection's device.</summary>
    private Tensor Project(Tensor x)
    {
        var projected = _projection.Apply(x);
        if (!Renormalize)
        {
            return projected;
        }

        var inputNorm = x.norm(1, keepdim: true).to(projected.device);
        var outputNorm = projected.norm(1, keepdim: true).clamp_min(1e-30f);
        return projected * (inputNorm / outputNorm);
    }
}
