using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Robustness;

/// <summary>What the attacks share: predictions, loss gradients, and the batched "first candidate that flips the label" search.</summary>
internal static class AttackEngine
{
    /// <summary>Added to <c>p_label</c> before the log so a vanishing probability keeps a finite gradient of the right sign.</summary>
    private const double LogFloor = 1e-30;

    public static void CheckInputs(Tensor pixels, Tensor labels)
    {
        ArgumentNullException.ThrowIfNull(pixels);
        ArgumentNullException.ThrowIfNull(labels);
        if (pixels.dim() != 4)
        {
            throw new ArgumentException($"Expected images [n, C, H, W]; got [{string.Join(", ", pixels.shape)}].", nameof(pixels));
        }

        if (!pixels.is_floating_point())
        {
            throw new ArgumentException($"Expected floating-point pixels in [0, 1]; got {pixels.dtype}.", nameof(pixels));
        }

        if (labels.dim() != 1 || labels.shape[0] != pixels.shape[0])
        {
            throw new ArgumentException($"labels has shape [{string.Join(", ", labels.shape)}]; expected [{pixels.shape[0]}].", nameof(labels));
        }
    }

    public static long[] Labels(Tensor labels) => labels.detach().cpu().to_type(ScalarType.Int64).data<long>().ToArray();

    /// <summary>argmax of the classifier's probabilities, under <c>no_grad</c>.</summary>
    public static long[] Predict(Func<Tensor, Tensor> classifier, Tensor pixels)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        return classifier(pixels).argmax(1).cpu().data<long>().ToArray();
    }

    /// <summary>
    /// ∇ₓ(−log p_label(x)) for a batch (one backward pass; rows are independent), detached, and the batch's predictions.
    /// </summary>
    public static (Tensor Gradient, long[] Predictions) LossGradient(Func<Tensor, Tensor> classifier, Tensor pixels, Tensor labels)
    {
        using var scope = NewDisposeScope();
        using var grad = enable_grad();
        var x = pixels.detach().clone().requires_grad_(true);
        var p = classifier(x);
        var y = labels.to(p.device).to_type(ScalarType.Int64).unsqueeze(1);
        var loss = -(p.gather(1, y) + LogFloor).log().sum();
        var gradient = autograd.grad([loss], [x])[0].detach();
        var predictions = p.detach().argmax(1).cpu().data<long>().ToArray();
        return (gradient.MoveToOuterDisposeScope(), predictions);
    }

    /// <summary>
    /// For every image, the index of the first of its ordered candidates whose prediction differs from its label, or −1.
    /// Candidates of all unfinished images are classified together, about <paramref name="budget"/> per forward pass; an
    /// image with few others left takes a longer run of its own candidates per pass (so at most <c>budget − 1</c> of them are
    /// evaluated past its first success).
    /// </summary>
    /// <param name="classifier">pixels → probabilities.</param>
    /// <param name="labels">Reference label per image.</param>
    /// <param name="candidateCounts">Number of candidates per image.</param>
    /// <param name="build">(image, first candidate, count) → the candidates <c>[count, C, H, W]</c>, clipped to [0, 1].</param>
    /// <param name="budget">Candidates per forward pass.</param>
    /// <param name="cancellationToken">Checked between passes.</param>
    public static int[] FirstSuccess(
        Func<Tensor, Tensor> classifier, IReadOnlyList<long> labels, IReadOnlyList<int> candidateCounts, Func<int, int, int, Tensor> build,
        int budget, CancellationToken cancellationToken)
    {
        var n = labels.Count;
        var found = Enumerable.Repeat(-1, n).ToArray();
        var cursor = new int[n];
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var active = Enumerable.Range(0, n).Where(i => found[i] < 0 && cursor[i] < candidateCounts[i]).ToList();
            if (active.Count == 0)
            {
                return found;
            }

            var per = Math.Max(1, budget / active.Count);
            var segments = new List<(int Image, int Start, int Count)>();
            var taken = 0;
            foreach (var i in active)
            {
                if (taken >= budget && segments.Count > 0)
                {
                    break;
                }

                var k = Math.Min(per, candidateCounts[i] - cursor[i]);
                segments.Add((i, cursor[i], k));
                taken += k;
            }

            using var scope = NewDisposeScope();
            var batch = cat(segments.Select(s => build(s.Image, s.Start, s.Count)).ToArray(), 0);
            var predictions = Predict(classifier, batch);
            var offset = 0;
            foreach (var (image, start, count) in segments)
            {
                for (var j = 0; j < count; j++)
                {
                    if (predictions[offset + j] != labels[image])
                    {
                        found[image] = start + j;
                        break;
                    }
                }

                cursor[image] = start + count;
                offset += count;
            }
        }
    }

    /// <summary><c>linspace(0, max, count + 1)[1:]</c> (Foolbox's grids; the last value is exactly <paramref name="max"/>).</summary>
    public static double[] Grid(double max, int count) =>
        [.. Enumerable.Range(1, count).Select(i => i == count ? max : max * i / count)];
}
