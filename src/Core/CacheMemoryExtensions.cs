using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core;

/// <summary>Convenience operations on <see cref="ICacheMemory"/> results.</summary>
public static class CacheMemoryExtensions
{
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
