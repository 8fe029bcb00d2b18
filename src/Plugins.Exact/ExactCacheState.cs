using System.Globalization;
using System.Runtime.InteropServices;
using ScalableCache.Core;
using ScalableCache.Core.Persistence;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Exact;

/// <summary>
/// Saving and restoring an exact memory (<see cref="IPersistentCacheMemory"/>).
/// </summary>
/// <remarks>
/// <para><b>State.</b> Blobs, in this order: <c>labels</c> (int32 little-endian, one per key) and <c>keys</c> (float32
/// little-endian, row-major <c>[N, d]</c>, whatever the storage type). Properties: <c>views</c> (the rows of each storage
/// chunk, comma-separated), <c>maxKeyNorm</c> (round-trip double) and <c>storage</c> (<c>Float32</c>/<c>Float16</c>, how
/// the saving store held its keys).</para>
/// <para><b>Restore.</b> Storage chunks are recreated with exactly the saved rows, so a restored memory on the same device with
/// the same block sizes and storage type computes bit-identical log-masses. Keys stream in from the blob one slice at a time
/// straight into the storage chunks. Device, block sizes and storage type come from the restoring factory's options.</para>
/// </remarks>
public sealed partial class ExactCacheMemory : IPersistentCacheMemory
{
    private const string ViewsProperty = "views";
    private const string MaxKeyNormProperty = "maxKeyNorm";
    private const string StorageProperty = "storage";
    private const string LabelsBlob = "labels";
    private const string KeysBlob = "keys";
    private const string KeyFileProperty = "keyFile";
    private const string KeyFileChecksumProperty = "keyFileChecksum";
    private const string KeyFileRowsProperty = "keyFileRows";

    /// <summary>Bytes of float32 keys moved between device and host per step.</summary>
    private const long SliceBytes = 16L << 20;

    /// <summary>Relative difference allowed between the saved largest key norm and the one recomputed on restore.</summary>
    private const double NormTolerance = 1e-5;

    /// <inheritdoc />
    public CacheState ExportState()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var snapshot = _snapshot;
        var state = new CacheState(ProviderName, Dimension, snapshot.Count);
        if (_saveKeyFileByReference && _keyFile is { } file)
        {
            // The key file's chunks come first in every snapshot; only the rows added since are copied.
            var mapped = file.Chunks.Count;
            state.Properties[KeyFileProperty] = Path.GetFileName(file.Path);
            state.Properties[KeyFileChecksumProperty] = file.Checksum;
            state.Properties[KeyFileRowsProperty] = file.Count.ToString(CultureInfo.InvariantCulture);
            var tail = snapshot.Views[mapped..];
            snapshot = new Snapshot(tail, tail.Sum(v => (long)v.Rows), snapshot.ClassCounts, snapshot.MaxKeyNorm);
        }

        state.Properties[ViewsProperty] = string.Join(",", snapshot.Views.Select(v => v.Rows.ToString(CultureInfo.InvariantCulture)));
        state.SetProperty(MaxKeyNormProperty, snapshot.MaxKeyNorm);
        state.Properties[StorageProperty] = StorageName(_storageType);
        state.Blobs.Add(CacheBlob.FromPieces(LabelsBlob, 4 * snapshot.Count, () => Slices(snapshot, labels: true)));
        state.Blobs.Add(CacheBlob.FromPieces(KeysBlob, 4L * Dimension * snapshot.Count, () => Slices(snapshot, labels: false)));
        return state;
    }

    /// <summary>
    /// Restores a state that references a key file beside its cache file: maps the file (checked against the recorded name, rows
    /// and checksum), then adds the rows saved after it. Answers equal the saved memory's up to the float32 summation order of
    /// those added rows' blocks.
    /// </summary>
    private static ExactCacheMemory RestoreReferenced(
        CacheState state, string name, int classCount, Device device, ExactCacheOptions options, string? cacheFile)
    {
        if (cacheFile is null)
        {
            throw new ArgumentException($"The state references the key file '{name}'; it restores only from a cache file on disk.", nameof(state));
        }

        if (name.Length == 0 || name != Path.GetFileName(name) || name is "." or ".." || name.IndexOfAny(Path.GetInvalidFileNameChars()) >= 0)
        {
            throw new ArgumentException($"The referenced key file name '{name}' is not a plain file name.", nameof(state));
        }

        var path = Path.Combine(Path.GetDirectoryName(cacheFile)!, name);
        if (!File.Exists(path))
        {
            throw new ArgumentException($"The key file '{path}' it references is missing (it must stay beside the cache file).", nameof(state));
        }

        var rows = long.TryParse(state.Property(KeyFileRowsProperty), NumberStyles.None, CultureInfo.InvariantCulture, out var r) ? r : -1;
        var checksum = state.Property(KeyFileChecksumProperty);
        var tail = state.Count - rows;
        var labelsBlob = state.Blob(LabelsBlob);
        var keysBlob = state.Blob(KeysBlob);
        if (rows < 0 || tail < 0 || labelsBlob.Length != 4 * tail || keysBlob.Length != 4L * state.Dimension * tail || tail > int.MaxValue / 2)
        {
            throw new ArgumentException(
                $"The state's {state.Count} keys, {rows} of them in the key file, do not fit its {labelsBlob.Length} label and {keysBlob.Length} key bytes.", nameof(state));
        }

        var memory = OpenKeyFile(path, device, options, null);
        try
        {
            if (memory.Dimension != state.Dimension || memory.ClassCount != classCount || memory.Count != rows
                || !string.Equals(memory._keyFile?.Checksum ?? "", checksum, StringComparison.Ordinal))
            {
                throw new ArgumentException(
                    $"The key file '{path}' holds {memory.Count} {memory.Dimension}-d keys of {memory.ClassCount} classes with checksum " +
                    $"{memory._keyFile?.Checksum}; the state expects {rows} {state.Dimension}-d keys of {classCount} classes with checksum {checksum}.", nameof(state));
            }

            if (tail > 0)
            {
                using var scope = NewDisposeScope();
                var labels = labelsBlob.ReadInt32s();
                var keys = new float[tail * state.Dimension];
                using (var stream = keysBlob.OpenRead())
                {
                    stream.ReadExactly(MemoryMarshal.AsBytes(keys.AsSpan()));
                }

                memory.Add(tensor(keys, [tail, state.Dimension]), tensor(Array.ConvertAll(labels, l => (long)l)));
            }

            return memory;
        }
        catch
        {
            memory.Dispose();
            throw;
        }
    }

    /// <summary>Rebuilds a memory from <paramref name="state"/>; see the remarks.</summary>
    internal static ExactCacheMemory Restore(CacheState state, int classCount, Device device, ExactCacheOptions options, string? cacheFile = null)
    {
        ArgumentNullException.ThrowIfNull(state);
        state.EnsureProvider(ProviderName);
        if (state.Properties.TryGetValue(KeyFileProperty, out var keyFile))
        {
            return RestoreReferenced(state, keyFile, classCount, device, options, cacheFile);
        }

        var dimension = state.Dimension;
        var count = state.Count;
        var views = ParseViews(state.Property(ViewsProperty), count);
        var savedNorm = state.DoubleProperty(MaxKeyNormProperty);
        if (!(savedNorm >= 0) || !double.IsFinite(savedNorm))
        {
            throw new ArgumentException($"The saved largest key norm {savedNorm} is not a finite non-negative number.", nameof(state));
        }

        if (state.Properties.TryGetValue(StorageProperty, out var storage)
            && storage is not (nameof(ExactStorageType.Float32) or nameof(ExactStorageType.Float16) or nameof(ExactStorageType.BFloat16)))
        {
            throw new ArgumentException($"The saved storage type '{storage}' is not Float32, Float16 or BFloat16.", nameof(state));
        }

        var labelsBlob = state.Blob(LabelsBlob);
        var keysBlob = state.Blob(KeysBlob);
        if (labelsBlob.Length != 4 * count || keysBlob.Length != 4L * dimension * count)
        {
            throw new ArgumentException(
                $"{count} keys of dimension {dimension} need {4 * count} label bytes and {4L * dimension * count} key bytes; the state has " +
                $"{labelsBlob.Length} and {keysBlob.Length}.", nameof(state));
        }

        var labels = labelsBlob.ReadInt32s();
        var classCounts = new long[classCount];
        for (var row = 0; row < labels.Length; row++)
        {
            if ((uint)labels[row] >= (uint)classCount)
            {
                throw new ArgumentException($"Label {labels[row]} of key {row} is outside [0, {classCount}).", nameof(state));
            }

            classCounts[labels[row]]++;
        }

        var memory = new ExactCacheMemory(dimension, classCount, device, options);
        try
        {
            var sameStorage = state.Properties.TryGetValue(StorageProperty, out var saved) && saved == StorageName(memory._storageType);
            memory.Fill(views, labels, keysBlob, classCounts, savedNorm, sameStorage);
            return memory;
        }
        catch
        {
            memory.Dispose();
            throw;
        }
    }

    private static string StorageName(ScalarType type) => ExactCacheOptions.FromScalarType(type).ToString();

    private static int[] ParseViews(string text, long count)
    {
        var parts = text.Length == 0 ? [] : text.Split(',');
        var views = new int[parts.Length];
        long total = 0;
        for (var i = 0; i < parts.Length; i++)
        {
            if (!int.TryParse(parts[i], NumberStyles.None, CultureInfo.InvariantCulture, out views[i]) || views[i] < 1)
            {
                throw new ArgumentException($"Storage chunk {i} has '{parts[i]}' rows; expected a positive integer.");
            }

            total += views[i];
        }

        return total == count
            ? views
            : throw new ArgumentException($"The storage chunks hold {total} rows in all, but the state has {count} keys.");
    }

    /// <summary>Labels (int32) or keys (float32) of a snapshot, in row order, a slice at a time, copied to the host.</summary>
    private IEnumerable<ReadOnlyMemory<byte>> Slices(Snapshot snapshot, bool labels)
    {
        var rowBytes = labels ? 4L : 4L * Dimension;
        var step = (int)Math.Clamp(SliceBytes / rowBytes, 1, int.MaxValue);
        foreach (var view in snapshot.Views)
        {
            for (var offset = 0; offset < view.Rows; offset += step)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                var rows = Math.Min(step, view.Rows - offset);
                yield return labels
                    ? HostBytes(view.Chunk.Labels, offset, rows, ScalarType.Int32)
                    : view.Chunk.Keys is { } keys
                        ? HostBytes(keys, offset, rows, ScalarType.Float32)
                        : MappedBytes(view.Chunk, offset, rows);
            }
        }
    }

    /// <summary>Rows <c>[offset, offset + rows)</c> of <paramref name="storage"/> as host bytes of <paramref name="type"/>.</summary>
    /// <remarks>The slice is taken inside the scope: a view made by the caller, outside any scope, would outlive the call.</remarks>
    private static byte[] HostBytes(Tensor storage, int offset, int rows, ScalarType type)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var host = storage.narrow(0, offset, rows).to(type, CPU).contiguous();
        return host.bytes.ToArray();
    }

    /// <summary>Rows of a mapped chunk as float32 host bytes.</summary>
    private byte[] MappedBytes(Chunk chunk, int offset, int rows)
    {
        using var scope = NewDisposeScope();
        var stage = empty(rows, Dimension, dtype: _storageType);
        chunk.Mapped!.CopyKeys(chunk.FileChunk, offset, rows, stage.bytes);
        return stage.to_type(ScalarType.Float32).contiguous().bytes.ToArray();
    }

    /// <summary>Allocates one storage chunk per saved view, streams the keys into them and publishes the snapshot.</summary>
    /// <remarks>
    /// Float32 keys on the CPU are read from the blob straight into the storage chunk; other storage goes through a host
    /// buffer and is converted and copied to the device.
    /// </remarks>
    private void Fill(int[] views, int[] labels, CacheBlob keys, long[] classCounts, double savedNorm, bool sameStorage)
    {
        var step = (int)Math.Clamp(SliceBytes / (4L * Dimension), 1, int.MaxValue);
        var direct = _device.type == DeviceType.CPU && _storageType == ScalarType.Float32;
        var buffer = direct ? [] : new float[(long)Math.Min(step, views.Length == 0 ? 1 : views.Max()) * Dimension];
        var published = new ChunkView[views.Length];
        double maxNorm = 0;
        long row = 0;
        using var stream = keys.OpenRead();
        using var noGrad = no_grad();
        lock (_writeGate)
        {
            for (var v = 0; v < views.Length; v++)
            {
                var chunk = Chunk.Allocate(views[v], Dimension, _storageType, _device);
                _owned.Add(chunk);
                using (var scope = NewDisposeScope())
                {
                    var chunkLabels = tensor(Array.ConvertAll(labels[(int)row..(int)(row + views[v])], l => (long)l), ScalarType.Int64);
                    chunk.Labels.copy_(chunkLabels.to(_device));
                }

                // The fused CPU kernel reads labels from the managed copy; it must match the tensor.
                if (chunk.HostLabels is { } hostLabels)
                {
                    labels.AsSpan((int)row, views[v]).CopyTo(hostLabels);
                }

                for (var offset = 0; offset < views[v]; offset += step)
                {
                    using var scope = NewDisposeScope();
                    var rows = Math.Min(step, views[v] - offset);
                    var target = chunk.Keys!.narrow(0, offset, rows);
                    Tensor stored;
                    if (direct)
                    {
                        var bytes = target.bytes;
                        stream.ReadExactly(bytes);
                        ThrowIfNonFinite(MemoryMarshal.Cast<byte, float>(bytes), row);
                        stored = target;
                    }
                    else
                    {
                        var values = buffer.AsSpan(0, rows * Dimension);
                        stream.ReadExactly(MemoryMarshal.AsBytes(values));
                        ThrowIfNonFinite(values, row);
                        var host = empty(rows, Dimension, dtype: ScalarType.Float32);
                        host.bytes = MemoryMarshal.AsBytes(values);
                        stored = host.to(_storageType, _device);
                        target.copy_(stored);
                    }

                    // As Add computes it: the norm of the stored (possibly rounded) keys, in float32.
                    maxNorm = Math.Max(maxNorm, stored.to_type(ScalarType.Float32).norm(1).max().item<float>());
                    row += rows;
                }

                published[v] = new ChunkView(chunk, views[v]);
            }

            if (_device.type == DeviceType.CUDA)
            {
                cuda.synchronize(_device);
            }

            // The saved norm keeps answers bit-identical; a recomputed one that disagrees means the keys do not match it.
            if (sameStorage && Math.Abs(savedNorm - maxNorm) > NormTolerance * Math.Max(maxNorm, 1e-30))
            {
                throw new ArgumentException($"The saved largest key norm {savedNorm:R} does not match the keys' ({maxNorm:R}).");
            }

            _snapshot = new Snapshot(published, row, classCounts, sameStorage ? savedNorm : maxNorm);
        }
    }

    private void ThrowIfNonFinite(ReadOnlySpan<float> values, long firstRow)
    {
        for (var i = 0; i < values.Length; i++)
        {
            if (!float.IsFinite(values[i]))
            {
                throw new ArgumentException($"Key {firstRow + (i / Dimension)} has a non-finite value.");
            }
        }
    }
}

/// <summary>Restores exact memories saved with <see cref="ExactCacheMemory.ExportState"/>.</summary>
public sealed partial class ExactCacheMemoryFactory : IPersistentCacheMemoryFactory
{
    /// <inheritdoc />
    public ICacheMemory Restore(CacheState state, CacheRestoreContext context)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(context);
        return ExactCacheMemory.Restore(state, context.ClassCount, _device, _options, context.CacheFilePath);
    }

    /// <summary>
    /// A memory over a finished key file, on this factory's device with its block sizes
    /// (<see cref="ExactCacheMemory.OpenKeyFile(string, ExactCacheOptions?, KeyFileOpenOptions?)"/>).
    /// </summary>
    public ExactCacheMemory OpenKeyFile(string path, KeyFileOpenOptions? open = null) => ExactCacheMemory.OpenKeyFile(path, _device, _options, open);

    /// <summary>
    /// A writer of key files in this factory's storage type (<c>Cache:Exact:StorageType</c>) and chunk size
    /// (<c>Cache:Exact:KeyFileRowsPerChunk</c>), for keys of <paramref name="dimension"/> (see <see cref="KeyFileWriter.Open"/>).
    /// </summary>
    public KeyFileWriter CreateKeyFile(string path, int dimension, int classCount, string? identity = null, bool resume = false) =>
        KeyFileWriter.Open(path, new KeyFileLayout(dimension, classCount, _options.StorageScalarType, _options.KeyFileRowsPerChunk), identity, resume);
}
