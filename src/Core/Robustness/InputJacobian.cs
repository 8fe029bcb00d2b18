using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Robustness;

/// <summary>The input Jacobian of one image's class probabilities (Figure 4 of the paper).</summary>
/// <param name="FrobeniusNorm"><c>‖J‖_F</c> of the full <c>C × D</c> Jacobian <c>J = ∂p(·|x)/∂x</c> (x: pixels in [0, 1], D = C·H·W).</param>
/// <param name="SingularValues">All <c>min(C, D)</c> singular values of J, descending.</param>
/// <param name="PredictedClass">argmax of <c>p(·|x)</c>.</param>
/// <param name="PredictedClassGradientNorm"><c>‖∂p(ŷ|x)/∂x‖₂</c> for the predicted class ŷ (one row of J).</param>
public sealed record JacobianStats(double FrobeniusNorm, IReadOnlyList<double> SingularValues, int PredictedClass, double PredictedClassGradientNorm);

/// <summary>The full input Jacobian of a classifier's probability vector, by one backward pass per class.</summary>
public static class InputJacobian
{
    /// <summary>
    /// <c>J(x) = ∂p(·|x)/∂x</c> <c>[n, C, D]</c> (detached, the input's precision) for pixels <c>[n, …]</c>, from
    /// <c>C</c> backward passes over the batch (rows of a batch are independent). The result joins the caller's scope.
    /// </summary>
    public static Tensor Compute(Func<Tensor, Tensor> classifier, Tensor pixels)
    {
        ArgumentNullException.ThrowIfNull(classifier);
        ArgumentNullException.ThrowIfNull(pixels);
        using var scope = NewDisposeScope();
        using var grad = enable_grad();
        var x = pixels.detach().clone().requires_grad_(true);
        var p = classifier(x);
        var classes = (int)p.shape[1];
        var rows = new Tensor[classes];
        for (var c = 0; c < classes; c++)
        {
            var g = autograd.grad([p[.., c].sum()], [x], retain_graph: c < classes - 1)[0];
            rows[c] = g.detach().flatten(1);
        }

        return stack(rows, 1).MoveToOuterDisposeScope();
    }

    /// <summary>Norms and singular values of the Jacobian at each image, in batches of <paramref name="batchSize"/>.</summary>
    public static IReadOnlyList<JacobianStats> Analyze(
        Func<Tensor, Tensor> classifier, Tensor pixels, int batchSize = 16, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(classifier);
        ArgumentNullException.ThrowIfNull(pixels);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        var results = new List<JacobianStats>();
        for (long start = 0; start < pixels.shape[0]; start += batchSize)
        {
            cancellationToken.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            var batch = pixels.narrow(0, start, Math.Min(batchSize, pixels.shape[0] - start));
            long[] predicted;
            using (no_grad())
            {
                predicted = classifier(batch.detach()).argmax(1).cpu().data<long>().ToArray();
            }

            var j = Compute(classifier, batch).to_type(ScalarType.Float64).cpu();
            var frobenius = j.flatten(1).norm(1).data<double>().ToArray();
            var singular = linalg.svdvals(j);
            var rowNorms = j.norm(2);
            for (var i = 0; i < predicted.Length; i++)
            {
                results.Add(new JacobianStats(
                    frobenius[i], singular[i].data<double>().ToArray(), (int)predicted[i], rowNorms[i, predicted[i]].item<double>()));
            }
        }

        return results;
    }
}
