using System.Globalization;
using ScalableCache.Core;
using ScalableCache.Core.Persistence;

namespace ScalableCache.RandomProjection;

/// <summary>Saving a random-projection memory (<see cref="IPersistentCacheMemory"/>).</summary>
/// <remarks>
/// State: properties <c>kind</c>, <c>seed</c>, <c>inputDimension</c>, <c>outputDimension</c>, <c>generatorVersion</c> (the
/// <see cref="RandomProjectionDefinition"/>) and <c>renormalize</c>; blob <c>matrix</c> (<see cref="RandomProjectionMatrix.ExportMatrix"/>:
/// float32 little-endian, row-major <c>[k, d]</c>, so a restore never depends on regenerating it); one child, the inner
/// store's state. The inner store must itself be persistent.
/// </remarks>
internal sealed partial class RandomProjectionCacheMemory : IPersistentCacheMemory
{
    internal const string MatrixBlob = "matrix";
    internal const string KindProperty = "kind";
    internal const string SeedProperty = "seed";
    internal const string InputDimensionProperty = "inputDimension";
    internal const string OutputDimensionProperty = "outputDimension";
    internal const string GeneratorVersionProperty = "generatorVersion";
    internal const string RenormalizeProperty = "renormalize";

    /// <summary>Wraps a restored, possibly non-empty, inner memory (<paramref name="restored"/> only tells this constructor apart).</summary>
    private RandomProjectionCacheMemory(RandomProjectionMatrix projection, ICacheMemory inner, bool renormalize, bool restored)
    {
        _ = restored;
        if (inner.Dimension != projection.OutputDimension)
        {
            throw new ArgumentException(
                $"The inner memory has dimension {inner.Dimension}; the projection outputs {projection.OutputDimension}.", nameof(inner));
        }

        _projection = projection;
        _inner = inner;
        Renormalize = renormalize;
    }

    /// <inheritdoc />
    public CacheState ExportState()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_inner is not IPersistentCacheMemory inner)
        {
            throw new NotSupportedException($"The inner '{_inner.Provider}' memory of this random projection cannot export its state.");
        }

        var innerState = inner.ExportState();
        var definition = _projection.Definition;
        var state = new CacheState(ProviderName, Dimension, innerState.Count);
        state.Properties[KindProperty] = definition.Kind.ToString();
        state.SetProperty(SeedProperty, definition.Seed);
        state.SetProperty(InputDimensionProperty, definition.InputDimension);
        state.SetProperty(OutputDimensionProperty, definition.OutputDimension);
        state.SetProperty(GeneratorVersionProperty, definition.GeneratorVersion);
        state.Properties[RenormalizeProperty] = Renormalize ? "true" : "false";
        state.Blobs.Add(CacheBlob.FromBytes(MatrixBlob, _projection.ExportMatrix()));
        state.Children.Add(innerState);
        return state;
    }

    /// <summary>A memory over a restored inner memory; disposes both arguments if it fails.</summary>
    internal static RandomProjectionCacheMemory Restored(RandomProjectionMatrix projection, ICacheMemory inner, bool renormalize)
    {
        try
        {
            return new RandomProjectionCacheMemory(projection, inner, renormalize, restored: true);
        }
        catch
        {
            inner.Dispose();
            projection.Dispose();
            throw;
        }
    }
}

/// <summary>Restores random-projection memories saved with <see cref="IPersistentCacheMemory.ExportState"/>.</summary>
public sealed partial class RandomProjectionCacheMemoryFactory : IPersistentCacheMemoryFactory
{
    /// <summary>
    /// Restores the memory <paramref name="state"/> describes: the saved matrix (imported, not regenerated) and renormalisation,
    /// over the inner store restored through <paramref name="context"/> by its own provider (whatever
    /// <see cref="RandomProjectionCacheOptions.Inner"/> says). The matrix lives on this factory's <see cref="Device"/>.
    /// </summary>
    /// <exception cref="ArgumentException">The state is of another provider or inconsistent (dimensions, matrix length, children).</exception>
    public ICacheMemory Restore(CacheState state, CacheRestoreContext context)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(context);
        state.EnsureProvider(ProviderName);
        if (!Enum.TryParse<RandomProjectionKind>(state.Property(RandomProjectionCacheMemory.KindProperty), ignoreCase: false, out var kind)
            || !Enum.IsDefined(kind))
        {
            throw new ArgumentException($"Unknown projection kind '{state.Property(RandomProjectionCacheMemory.KindProperty)}'.", nameof(state));
        }

        if (!ulong.TryParse(state.Property(RandomProjectionCacheMemory.SeedProperty), NumberStyles.None, CultureInfo.InvariantCulture, out var seed))
        {
            throw new ArgumentException($"The projection seed '{state.Property(RandomProjectionCacheMemory.SeedProperty)}' is not an unsigned integer.", nameof(state));
        }

        var definition = new RandomProjectionDefinition(
            kind,
            seed,
            checked((int)state.Int64Property(RandomProjectionCacheMemory.InputDimensionProperty)),
            checked((int)state.Int64Property(RandomProjectionCacheMemory.OutputDimensionProperty)))
        {
            GeneratorVersion = checked((int)state.Int64Property(RandomProjectionCacheMemory.GeneratorVersionProperty)),
        };
        var renormalize = state.Property(RandomProjectionCacheMemory.RenormalizeProperty) switch
        {
            "true" => true,
            "false" => false,
            var other => throw new ArgumentException($"The renormalize property '{other}' is neither true nor false.", nameof(state)),
        };
        if (definition.InputDimension != state.Dimension)
        {
            throw new ArgumentException($"The projection takes dimension {definition.InputDimension}; the state has dimension {state.Dimension}.", nameof(state));
        }

        if (state.Children.Count != 1 || state.Children[0].Dimension != definition.OutputDimension || state.Children[0].Count != state.Count)
        {
            throw new ArgumentException(
                $"A random-projection state needs one inner state of {state.Count} keys of dimension {definition.OutputDimension}; it has " +
                string.Join(", ", state.Children.Select(c => $"{c.Provider} ({c.Count} keys of dimension {c.Dimension})")) +
                (state.Children.Count == 0 ? "none." : "."), nameof(state));
        }

        var matrix = state.Blob(RandomProjectionCacheMemory.MatrixBlob);
        RandomProjectionMatrix.ThrowIfNotImportable(definition, matrix.Length); // before its bytes are read
        var projection = RandomProjectionMatrix.Import(definition, matrix.ReadAllBytes(), Device);
        ICacheMemory inner;
        try
        {
            inner = context.Restore(state.Children[0]);
        }
        catch
        {
            projection.Dispose();
            throw;
        }

        return RandomProjectionCacheMemory.Restored(projection, inner, renormalize);
    }
}
