namespace ScalableCache.Core.Data;

/// <summary>
/// SplitMix64 (Steele, Lea &amp; Flood 2014) with Lemire's unbiased bounded integers and a Fisher–Yates shuffle.
/// Fixed here (not <see cref="Random"/>) so that every seeded selection is identical across runs, machines and .NET versions.
/// </summary>
internal sealed class SplitMix64
{
    private ulong _state;

    /// <summary>Starts the stream at the seed's 64-bit two's-complement value (<c>(ulong)(long)seed</c>).</summary>
    public SplitMix64(int seed) => _state = unchecked((ulong)(long)seed);

    public ulong Next()
    {
        unchecked
        {
            var z = _state += 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }
    }

    /// <summary>Uniform integer in <c>[0, bound)</c> (Lemire 2019, multiply-and-reject).</summary>
    public int NextInt(int bound)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bound);
        var s = (ulong)bound;
        var high = Math.BigMul(Next(), s, out var low);
        if (low < s)
        {
            var threshold = unchecked(0UL - s) % s;
            while (low < threshold)
            {
                high = Math.BigMul(Next(), s, out low);
            }
        }

        return (int)high;
    }

    /// <summary>Fisher–Yates, from the last position down: swap <c>i</c> with <c>NextInt(i + 1)</c> for <c>i = n−1 … 1</c>.</summary>
    public void Shuffle(Span<int> values)
    {
        for (var i = values.Length - 1; i > 0; i--)
        {
            var j = NextInt(i + 1);
            (values[i], values[j]) = (values[j], values[i]);
        }
    }

    /// <summary>A seeded permutation of <c>0 … n−1</c>: the identity shuffled by <see cref="Shuffle"/>.</summary>
    public static int[] Permutation(int n, int seed)
    {
        var result = new int[n];
        for (var i = 0; i < n; i++)
        {
            result[i] = i;
        }

        new SplitMix64(seed).Shuffle(result);
        return result;
    }
}
