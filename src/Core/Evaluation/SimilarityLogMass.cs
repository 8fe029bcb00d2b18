using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Evaluation;

/// <summary>
/// The per-class log-mass kernel shared by every store that has explicit similarities:
/// <c>L_c = log Σ_{k: y_k = c} exp(θ s_k)</c> for a block of similarities <c>s [b, n]</c>, for several θ at once.
/// </summary>
/// <remarks>
/// Stable for any θ &gt; 0: per row and class the largest similarity <c>m_c</c> is factored out
/// (<c>L_c = θ m_c + log Σ exp(θ (s_k − m_c))</c>), so every class that has keys gets a finite value, even at θ = 200
/// with cosine similarity 1. The class max is θ-independent, so one pass over <c>s</c> serves every θ.
/// </remarks>
public static class SimilarityLogMass
{
    /// <summary>
    /// Log-mass <c>[thetas.Length, b, classCount]</c> of the similarities <paramref name="similarities"/>
    /// <c>[b, n]</c> whose columns carry <paramref name="labels"/> <c>[n]</c> (int64), in float32 — or float64 when the similarities
    /// are float64 (finite-difference checks of gradients). Classes absent from <paramref name="labels"/> get −∞ (with zero, not NaN,
    /// gradients). Differentiable with respect to <paramref name="similarities"/>.
    /// </summary>
    public static Tensor Compute(Tensor similarities, Tensor labels, int classCount, ReadOnlySpan<double> thetas)
    {
        ArgumentNullException.ThrowIfNull(similarities);
        ArgumentNullException.ThrowIfNull(labels);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(classCount);
        foreach (var theta in thetas)
        {
            if (!(theta > 0) || double.IsInfinity(theta))
            {
                throw new ArgumentOutOfRangeException(nameof(thetas), theta, "θ must be finite and positive.");
            }
        }

        using var scope = NewDisposeScope();
        var dtype = similarities.dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
        var s = similarities.to_type(dtype);
        var b = s.shape[0];
        var n = s.shape[1];
        if (labels.shape.Length != 1 || labels.shape[0] != n)
        {
            throw new ArgumentException($"labels has shape [{string.Join(", ", labels.shape)}]; expected [{n}].", nameof(labels));
        }

        var (y, order) = labels.to(s.device).to_type(ScalarType.Int64).sort();
        if (n > 0 && (y[0].item<long>() < 0 || y[n - 1].item<long>() >= classCount))
        {
            throw new ArgumentException($"labels must lie in [0, {classCount}).", nameof(labels));
        }

        if (n == 0)
        {
            return full(thetas.Length, b, classCount, double.NegativeInfinity, dtype: dtype, device: s.device)
                .MoveToOuterDisposeScope();
        }

        // Columns grouped by class, then the per-row, per-class maximum similarity (θ-independent since θ > 0);
        // classes without keys stay −∞.
        var grouped = s.index_select(1, order);
        var counts = bincount(y, minlength: classCount).cpu().data<long>().ToArray();
        var maxima = new Tensor[classCount];
        long start = 0;
        for (var c = 0; c < classCount; c++)
        {
            maxima[c] = counts[c] > 0
                ? grouped.detach().narrow(1, start, counts[c]).amax([1])
                : full(b, double.NegativeInfinity, dtype: dtype, device: s.device);
            start += counts[c];
        }

        var classMax = stack(maxima, 1);
        var present = isfinite(classMax);
        var safeMax = where(present, classMax, zeros_like(classMax));
        var track = grouped.requires_grad;
        Tensor shifted; // ≤ 0; 0 at each class maximum
        if (track)
        {
            shifted = grouped - safeMax.index_select(1, y);
        }
        else
        {
            // Without gradients the same subtractions run in place, class by class, and one buffer serves every θ: the values are
            // those of the expressions above (elementwise IEEE arithmetic, the exponential over the same [b, n] layout), without
            // allocating three [b, n] tensors per θ (which cost a page fault per 4 KiB).
            start = 0;
            for (var c = 0; c < classCount; c++)
            {
                if (counts[c] > 0)
                {
                    grouped.narrow(1, start, counts[c]).sub_(safeMax.narrow(1, c, 1));
                }

                start += counts[c];
            }

            shifted = grouped;
        }

        var oneHot = nn.functional.one_hot(y, classCount).to_type(dtype);
        var buffer = track ? null : empty_like(shifted);

        var negInf = full_like(safeMax, float.NegativeInfinity);
        var perTheta = new Tensor[thetas.Length];
        for (var t = 0; t < thetas.Length; t++)
        {
            var theta = thetas[t];
            var weights = track ? (shifted * theta).exp() : buffer!.copy_(shifted).mul_(theta).exp_();
            var mass = weights.mm(oneHot); // ≥ 1 for present classes, 0 for absent ones (whose log would give NaN gradients)
            var logMass = where(present, mass, ones_like(mass)).log() + safeMax * theta;
            perTheta[t] = where(present, logMass, negInf);
        }

        return stack(perTheta).MoveToOuterDisposeScope();
    }
}
