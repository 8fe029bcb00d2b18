using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using ScalableCache.Core.Persistence;

namespace ScalableCache.Orleans;

/// <summary>
/// The files of one persisted cache, in <c>{StateDirectory}/{cacheId}/</c>:
/// <list type="bullet">
/// <item><c>manifest.json</c> — written by the coordinator at creation, at every commit and at every checkpoint (temporary
/// file, flush, rename): provider, inner provider, shards, dimension, classes, the committed version, keys per shard, and
/// per shard its checkpoint file, the version it holds, its key count and SHA-256.</item>
/// <item><c>shard-NNN/part-VVVVVVVVVVVV.bin</c> — a shard's part of add V, written before the shard acknowledges staging
/// it (so a committed add is on disk on every shard): magic <c>SCPART02</c>, shard, version, attempt, rows, dimension, the
/// cache-wide id of the first row (little-endian integers), the labels (int32), the keys (float32, row-major), then the
/// SHA-256 of everything before it. <c>SCPART01</c> files (no first-row id) are still read.</item>
/// <item><c>shard-NNN/checkpoint-VVVVVVVVVVVV.scache</c> — a shard's store at version V as a regular cache file
/// (<c>CacheFile</c>), its metadata naming the cache, shard and version, and the cache-wide ids of its keys as runs
/// (<c>orleans.ids</c>: <c>local:id:count</c>, comma-separated).</item>
/// </list>
/// A shard restores by loading its checkpoint (checked against the manifest's digest, then by the cache-file reader) and
/// replaying its parts after it up to the committed version; parts beyond it stay staged.
/// </summary>
internal sealed class CacheStateFolder
{
    public const string ManifestFile = "manifest.json";
    private static readonly byte[] PartMagic = "SCPART02"u8.ToArray();
    private static readonly byte[] PartMagicV1 = "SCPART01"u8.ToArray();
    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    public CacheStateFolder(string stateDirectory, string cacheId)
    {
        CacheId = cacheId;
        Root = Path.Combine(Path.GetFullPath(stateDirectory), cacheId);
    }

    public string CacheId { get; }

    public string Root { get; }

    public string ManifestPath => Path.Combine(Root, ManifestFile);

    public string ShardFolder(int shard) => Path.Combine(Root, $"shard-{shard:D3}");

    public string PartPath(int shard, long version) => Path.Combine(ShardFolder(shard), $"part-{version:D12}.bin");

    /// <summary>A checkpoint's file name relative to <see cref="Root"/>.</summary>
    public static string CheckpointName(int shard, long version) => $"shard-{shard:D3}/checkpoint-{version:D12}.scache";

    public CacheManifest? ReadManifest()
    {
        if (!File.Exists(ManifestPath))
        {
            return null;
        }

        try
        {
            var manifest = JsonSerializer.Deserialize<CacheManifest>(File.ReadAllBytes(ManifestPath), Json)
                ?? throw new InvalidDataException("it is empty.");
            manifest.Check(CacheId);
            return manifest;
        }
        catch (Exception e) when (e is JsonException or InvalidDataException or NotSupportedException)
        {
            throw new InvalidDataException($"The manifest '{ManifestPath}' of cache '{CacheId}' is not valid: {e.Message}", e);
        }
    }

    public void WriteManifest(CacheManifest manifest)
    {
        Directory.CreateDirectory(Root);
        WriteAtomically(ManifestPath, JsonSerializer.SerializeToUtf8Bytes(manifest, Json));
    }

    /// <summary>Writes a shard's part of one add (see the class remarks for the layout).</summary>
    public void WritePart(int shard, long version, long attempt, ShardRows rows)
    {
        using var buffer = new MemoryStream();
        using (var writer = new BinaryWriter(buffer, System.Text.Encoding.UTF8, leaveOpen: true))
        {
            writer.Write(PartMagic);
            writer.Write(shard);
            writer.Write(version);
            writer.Write(attempt);
            writer.Write(rows.Count);
            writer.Write(rows.Keys.Shape[1]);
            writer.Write(rows.FirstId);
            foreach (var label in rows.Labels)
            {
                writer.Write(label);
            }

            writer.Write(rows.Keys.Data);
        }

        var body = buffer.ToArray();
        if (!Directory.Exists(ShardFolder(shard)))
        {
            Directory.CreateDirectory(ShardFolder(shard));
            MemoryLog.FlushFolder(Root);
        }

        WriteAtomically(PartPath(shard, version), [.. body, .. SHA256.HashData(body)]);
    }

    /// <summary>Reads and checks a part file; any damage is an <see cref="InvalidDataException"/> naming the file.</summary>
    public (long Attempt, ShardRows Rows) ReadPart(int shard, long version, int dimension)
    {
        var path = PartPath(shard, version);
        var bytes = File.ReadAllBytes(path);
        if (bytes.Length < PartMagic.Length + 32 || !SHA256.HashData(bytes.AsSpan(0, bytes.Length - 32)).AsSpan().SequenceEqual(bytes.AsSpan(bytes.Length - 32)))
        {
            throw new InvalidDataException($"The part file '{path}' fails its SHA-256 check (damaged or truncated).");
        }

        using var reader = new BinaryReader(new MemoryStream(bytes, 0, bytes.Length - 32));
        var magic = reader.ReadBytes(PartMagic.Length);
        var v1 = magic.AsSpan().SequenceEqual(PartMagicV1);
        if (!v1 && !magic.AsSpan().SequenceEqual(PartMagic))
        {
            throw new InvalidDataException($"'{path}' is not a shard part file.");
        }

        var (fileShard, fileVersion, attempt, count, fileDimension) = (reader.ReadInt32(), reader.ReadInt64(), reader.ReadInt64(), reader.ReadInt32(), reader.ReadInt32());
        var firstId = v1 ? -1 : reader.ReadInt64();
        if (firstId < -1)
        {
            throw new InvalidDataException($"The part file '{path}' gives its first row the id {firstId}.");
        }

        if (fileShard != shard || fileVersion != version || fileDimension != dimension || count < 0
            || reader.BaseStream.Length - reader.BaseStream.Position != (4L * count) + (4L * count * dimension))
        {
            throw new InvalidDataException(
                $"The part file '{path}' holds shard {fileShard}, version {fileVersion}, {count} rows of dimension {fileDimension}; expected shard " +
                $"{shard}, version {version}, dimension {dimension}, and a length that matches.");
        }

        var labels = new int[count];
        for (var i = 0; i < count; i++)
        {
            labels[i] = reader.ReadInt32();
        }

        var keys = reader.ReadBytes(4 * count * dimension);
        return (attempt, new ShardRows(new TensorData { Shape = [count, dimension], Data = keys }, labels, firstId));
    }

    /// <summary>Versions of the part files a shard has on disk, ascending.</summary>
    public IReadOnlyList<long> PartVersions(int shard)
    {
        var folder = ShardFolder(shard);
        if (!Directory.Exists(folder))
        {
            return [];
        }

        return [.. Directory.EnumerateFiles(folder, "part-*.bin")
            .Select(f => Path.GetFileNameWithoutExtension(f)["part-".Length..])
            .Select(v => long.TryParse(v, NumberStyles.None, CultureInfo.InvariantCulture, out var version) ? version : -1)
            .Where(v => v >= 0)
            .Order()];
    }

    /// <summary>Deletes part files up to <paramref name="version"/> and checkpoint files other than <paramref name="keep"/>.</summary>
    public void Compact(int shard, long version, string? keep)
    {
        foreach (var v in PartVersions(shard).Where(v => v <= version))
        {
            File.Delete(PartPath(shard, v));
        }

        var folder = ShardFolder(shard);
        if (Directory.Exists(folder))
        {
            foreach (var file in Directory.EnumerateFiles(folder, "checkpoint-*.scache"))
            {
                if (keep is null || !string.Equals(Path.GetFullPath(file), Path.GetFullPath(Path.Combine(Root, keep)), StringComparison.Ordinal))
                {
                    File.Delete(file);
                }
            }
        }
    }

    public static string Sha256Of(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    private static void WriteAtomically(string path, byte[] bytes)
    {
        var temp = path + ".tmp-" + Guid.NewGuid().ToString("N");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None))
            {
                stream.Write(bytes);
                stream.Flush(flushToDisk: true);
            }

            File.Move(temp, path, overwrite: true);
            MemoryLog.FlushFolder(Path.GetDirectoryName(path)!); // the rename survives a power loss before the write is acknowledged
        }
        finally
        {
            File.Delete(temp);
        }
    }
}

/// <summary>The manifest of a persisted cache (see <see cref="CacheStateFolder"/>).</summary>
internal sealed class CacheManifest
{
    public const int CurrentFormat = 1;

    public int Format { get; set; } = CurrentFormat;

    public string Provider { get; set; } = OrleansCacheMemory.ProviderName;

    public string CacheId { get; set; } = "";

    public string Inner { get; set; } = "";

    public int Shards { get; set; }

    public int Dimension { get; set; }

    public int ClassCount { get; set; }

    /// <summary>The committed version: adds up to it are part of the cache.</summary>
    public long Version { get; set; }

    public long[] ShardCounts { get; set; } = [];

    /// <summary>Each shard's latest checkpoint (absent for a shard never checkpointed).</summary>
    public List<ShardCheckpoint> Checkpoints { get; set; } = [];

    [System.Text.Json.Serialization.JsonIgnore]
    public ShardSpec Spec => new(CacheId, Shards, Dimension, ClassCount, Inner);

    public CacheManifest Clone()
    {
        var copy = (CacheManifest)MemberwiseClone();
        copy.ShardCounts = [.. ShardCounts];
        copy.Checkpoints = [.. Checkpoints];
        return copy;
    }

    public static CacheManifest For(ShardSpec spec) => new()
    {
        CacheId = spec.CacheId,
        Inner = spec.Inner,
        Shards = spec.ShardCount,
        Dimension = spec.Dimension,
        ClassCount = spec.ClassCount,
        ShardCounts = new long[spec.ShardCount],
    };

    public void Check(string cacheId)
    {
        if (Format != CurrentFormat)
        {
            throw new InvalidDataException($"its format is {Format}; this build reads format {CurrentFormat}.");
        }

        if (Provider != OrleansCacheMemory.ProviderName || CacheId != cacheId || Shards < 1 || Dimension < 1 || ClassCount < 1 || Version < 0
            || ShardCounts.Length != Shards || Checkpoints.Any(c => c.Shard < 0 || c.Shard >= Shards || c.Version > Version))
        {
            throw new InvalidDataException(
                $"it describes provider '{Provider}', cache '{CacheId}', {Shards} shards, dimension {Dimension}, {ClassCount} classes, version " +
                $"{Version}, {ShardCounts.Length} shard counts and checkpoints of shards [{string.Join(", ", Checkpoints.Select(c => c.Shard))}]; " +
                $"expected cache '{cacheId}' and values that agree.");
        }
    }
}
