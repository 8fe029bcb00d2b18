namespace ScalableCache.Core.Persistence;

/// <summary>
/// A memory that can describe its whole state as a <see cref="CacheState"/>, for <see cref="CacheFile.Save"/>. Its
/// provider's factory implements <see cref="IPersistentCacheMemoryFactory"/> to rebuild it.
/// </summary>
/// <remarks>
/// <para><b>Consistency.</b> The state covers one published snapshot of the memory: an <see cref="ICacheMemory.Add"/> running
/// at the same time is either wholly in it or wholly absent, whatever is added after <see cref="ExportState"/> returns is
/// not in it. Large data is not copied up front: <see cref="CacheBlob"/>s produce their bytes when read, so the memory must
/// not be disposed until the state has been written.</para>
/// </remarks>
public interface IPersistentCacheMemory : ICacheMemory
{
    /// <summary>The memory's state: provider, dimension, count, small properties, binary blobs and nested states.</summary>
    /// <exception cref="NotSupportedException">Part of the memory (e.g. a wrapped store) cannot export its state.</exception>
    CacheState ExportState();
}

/// <summary>A factory that rebuilds memories of its provider from a <see cref="CacheState"/>.</summary>
/// <remarks>
/// The restored memory answers queries exactly as the exported one did (same keys, labels and, where the store keeps one,
/// the same index structure: nothing is rebuilt); run-time settings that do not change answers (device, block sizes,
/// threads) come from this factory's options. A state of another provider, or one whose parts contradict each other
/// (lengths, dimensions, labels outside <c>[0, ClassCount)</c>), is an <see cref="ArgumentException"/> that says what is wrong.
/// </remarks>
public interface IPersistentCacheMemoryFactory : ICacheMemoryFactory
{
    /// <summary>
    /// Rebuilds the memory <paramref name="state"/> describes, for <see cref="CacheRestoreContext.ClassCount"/> classes.
    /// Nested states (a wrapped store's) are restored through <paramref name="context"/>.
    /// </summary>
    ICacheMemory Restore(CacheState state, CacheRestoreContext context);
}

/// <summary>What a restore needs beyond the state itself: the class count, and the factories nested states are restored with.</summary>
public sealed class CacheRestoreContext
{
    private readonly Func<string, ICacheMemoryFactory> _find;

    /// <summary>A context that finds nested providers among <paramref name="factories"/> (case-insensitively, the last registration wins).</summary>
    public CacheRestoreContext(int classCount, IEnumerable<ICacheMemoryFactory> factories)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(classCount, 1);
        ArgumentNullException.ThrowIfNull(factories);
        var list = factories.ToList();
        ClassCount = classCount;
        _find = provider => CacheProviderSelector.Find(list, provider);
    }

    /// <summary>A context that finds providers with <paramref name="providers"/>.</summary>
    public CacheRestoreContext(int classCount, CacheProviderSelector providers)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(classCount, 1);
        ArgumentNullException.ThrowIfNull(providers);
        ClassCount = classCount;
        _find = providers.Find;
    }

    /// <summary>Number of classes C of the memory being restored (labels lie in <c>[0, C)</c>).</summary>
    public int ClassCount { get; }

    /// <summary>
    /// The full path of the cache file being loaded, or null when the state does not come from a file; a state that references
    /// files beside its cache file (the exact store's key file) resolves them against its folder.
    /// </summary>
    public string? CacheFilePath { get; init; }

    /// <summary>The registered factory of <paramref name="provider"/>.</summary>
    /// <exception cref="UnknownProviderException">No factory is registered under that name.</exception>
    public ICacheMemoryFactory Find(string provider)
    {
        ArgumentNullException.ThrowIfNull(provider);
        return _find(provider);
    }

    /// <summary>Restores <paramref name="state"/> with the factory registered under its provider name.</summary>
    /// <exception cref="UnknownProviderException">The provider is not registered.</exception>
    /// <exception cref="NotSupportedException">The provider's factory cannot restore saved states.</exception>
    public ICacheMemory Restore(CacheState state)
    {
        ArgumentNullException.ThrowIfNull(state);
        return Find(state.Provider) is IPersistentCacheMemoryFactory factory
            ? factory.Restore(state, this)
            : throw new NotSupportedException($"The '{state.Provider}' cache provider cannot restore a saved state.");
    }
}
