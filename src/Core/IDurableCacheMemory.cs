namespace ScalableCache.Core;

/// <summary>
/// A memory that is durable by itself: when <see cref="PersistsAdds"/> holds, every <see cref="ICacheMemory.Add"/> is persisted
/// before it returns, and a later process reopens the memory by <see cref="DurableId"/> with its provider's
/// <see cref="IDurableCacheMemoryFactory.Reopen"/> (the Orleans cluster with a state folder is one). A
/// <see cref="DurableCacheClassifier"/> over such a memory keeps no log of its own: it acknowledges an add once the memory has it.
/// </summary>
/// <remarks>
/// <para><b>Failed adds.</b> An <see cref="ICacheMemory.Add"/> that throws <see cref="InvalidOperationException"/> may or may not
/// have been persisted (the memory cannot tell, e.g. the commit's answer was lost); any other exception means nothing was added.</para>
/// <para><b>Lifetime.</b> A memory that is not <see cref="Retain"/>ed may be deleted when disposed (a temporary one); once retained,
/// disposing only lets go of it.</para>
/// </remarks>
public interface IDurableCacheMemory : ICacheMemory
{
    /// <summary>
    /// Whether each <see cref="ICacheMemory.Add"/> is persisted before it returns (false, say, for an Orleans cluster whose silos keep
    /// no state: its adds live only in the silos' memory).
    /// </summary>
    bool PersistsAdds { get; }

    /// <summary>The id that reopens this memory (<see cref="IDurableCacheMemoryFactory.Reopen"/>).</summary>
    string DurableId { get; }

    /// <summary>Makes the memory outlive this object: <see cref="IDisposable.Dispose"/> leaves it in place to be reopened.</summary>
    void Retain();

    /// <summary>
    /// Compacts what the memory has persisted so that reopening is quick (its counterpart of a snapshot, e.g. a checkpoint of every
    /// shard); every add it acknowledged stays persisted whether or not this runs.
    /// </summary>
    /// <exception cref="NotSupportedException">The memory persists nothing (<see cref="PersistsAdds"/> is false).</exception>
    void Compact();
}

/// <summary>A factory whose memories are durable by themselves (<see cref="IDurableCacheMemory"/>) and can be reopened by id.</summary>
public interface IDurableCacheMemoryFactory : ICacheMemoryFactory
{
    /// <summary>Reopens the memory <paramref name="durableId"/> names (with every add it acknowledged), retained.</summary>
    /// <remarks>Fails, saying why, when there is no such memory or it cannot be restored (the provider's own exception).</remarks>
    IDurableCacheMemory Reopen(string durableId);
}
