using Orleans;

namespace ScalableCache.Orleans;

/// <summary>
/// A call on the Orleans store failed because of one or more shards: unreachable, timed out, died during the call, or
/// holding a state that is lost or fails its checks. The message names every shard at fault and why; a query that throws
/// this returned nothing (never a partial sum), an add that throws it added nothing unless the message says it committed.
/// </summary>
[GenerateSerializer]
public sealed class CacheShardException : Exception
{
    /// <summary>Creates the exception.</summary>
    public CacheShardException()
    {
    }

    /// <summary>Creates the exception with a message.</summary>
    public CacheShardException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and its cause.</summary>
    public CacheShardException(string message, Exception? innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Creates the exception naming <paramref name="shards"/>.</summary>
    public CacheShardException(string message, IReadOnlyList<int> shards, Exception? innerException = null)
        : base(message, innerException)
    {
        ArgumentNullException.ThrowIfNull(shards);
        Shards = [.. shards];
    }

    /// <summary>Indices of the shards at fault (0-based).</summary>
    [Id(0)]
    public int[] Shards { get; init; } = [];
}
