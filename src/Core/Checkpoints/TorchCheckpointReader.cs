using System.Buffers.Binary;
using System.Collections;
using System.Globalization;
using System.IO.Compression;
using Razorvine.Pickle;
using Razorvine.Pickle.Objects;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Checkpoints;

/// <summary>
/// Reads <c>torch.save</c> files holding a state dict (or a dict with a <c>state_dict</c> entry), or a whole pickled module
/// (<c>torch.save(model)</c>), in both layouts. A whole module is walked as data — its <c>_modules</c>, <c>_parameters</c> and
/// <c>_buffers</c> dictionaries give the tensors under their dotted state-dict names and every module's class — and nothing in
/// the pickle is run: unknown globals become attribute dictionaries.
/// <para><b>Legacy (PyTorch &lt; 1.6):</b> five consecutive pickles — the magic number <c>0x1950a86a20f9469cfc6c</c>, the protocol
/// version 1001, a sys-info dict (<c>little_endian</c>, type sizes), the object itself with persistent storage references, and the
/// list of storage keys — then, for each key in that list, an 8-byte little-endian element count followed by the raw
/// little-endian elements.</para>
/// <para><b>Zip (PyTorch ≥ 1.6):</b> <c>&lt;archive&gt;/data.pkl</c> holds the object; storage <c>k</c> is the entry
/// <c>&lt;archive&gt;/data/k</c>; an optional <c>&lt;archive&gt;/byteorder</c> entry says <c>little</c> or <c>big</c>.</para>
/// </summary>
internal static class TorchCheckpointReader
{
    private const int LegacyProtocolVersion = 1001;
    private static readonly string[] StateDictKeys = ["state_dict", "model_state_dict", "model", "net"];

    public static (Dictionary<string, Tensor>, IReadOnlyDictionary<string, string>, IReadOnlyList<PickledModule>) ReadLegacy(string filePath)
    {
        using var stream = new FileStream(filePath, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        var magic = Unpickle(filePath, stream, "magic number", new Unpickler());
        if (!TorchUnpickler.IsLegacyMagic(magic))
        {
            throw new CheckpointException(
                filePath,
                $"is a pickle but not a legacy torch.save file: it opens with {TorchUnpickler.Describe(magic)} instead of the magic number 0x1950a86a20f9469cfc6c.");
        }

        var protocol = Unpickle(filePath, stream, "protocol version", new Unpickler());
        if (protocol is not int p || p != LegacyProtocolVersion)
        {
            throw new CheckpointException(filePath, $"has legacy protocol version {TorchUnpickler.Describe(protocol)}; only {LegacyProtocolVersion} is supported.");
        }

        var sysInfo = Unpickle(filePath, stream, "sys info", new Unpickler());
        if (sysInfo is IDictionary info && info["little_endian"] is false)
        {
            throw new CheckpointException(filePath, "was written on a big-endian machine; only little-endian checkpoints are supported.");
        }

        var unpickler = new TorchUnpickler();
        var root = Unpickle(filePath, stream, "checkpoint object", unpickler);
        var keys = Unpickle(filePath, stream, "storage key list", new Unpickler()) as IList
            ?? throw new CheckpointException(filePath, "is corrupt: the storage key list is not a list.");

        Span<byte> countBytes = stackalloc byte[8];
        foreach (var k in keys)
        {
            var key = Convert.ToString(k, CultureInfo.InvariantCulture) ?? string.Empty;
            if (!unpickler.Storages.TryGetValue(key, out var storage))
            {
                throw new CheckpointException(filePath, $"is corrupt: storage '{key}' is listed but never referenced by the pickle.");
            }

            if (stream.ReadAtLeast(countBytes, 8, throwOnEndOfStream: false) < 8)
            {
                throw Truncated(filePath, stream, $"the element count of storage '{key}'");
            }

            var count = BinaryPrimitives.ReadInt64LittleEndian(countBytes);
            if (count != storage.Elements)
            {
                throw new CheckpointException(
                    filePath, $"is corrupt: storage '{key}' holds {count} elements on disk but the pickle says {storage.Elements}.");
            }

            storage.Data = ReadStorage(filePath, stream, storage);
        }

        return Build(filePath, root);
    }

    public static (Dictionary<string, Tensor>, IReadOnlyDictionary<string, string>, IReadOnlyList<PickledModule>) ReadZip(string filePath)
    {
        using var stream = new FileStream(filePath, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        ZipArchive zip;
        try
        {
            zip = new ZipArchive(stream, ZipArchiveMode.Read, leaveOpen: true);
        }
        catch (InvalidDataException e)
        {
            throw new CheckpointException(filePath, $"is a truncated or corrupt zip archive (PyTorch zip format): {e.Message}", e);
        }

        using (zip)
        {
            var pkl = zip.Entries
                .Where(e => e.FullName == "data.pkl" || e.FullName.EndsWith("/data.pkl", StringComparison.Ordinal))
                .OrderBy(e => e.FullName.Length)
                .FirstOrDefault()
                ?? throw new CheckpointException(filePath, "is a zip archive without a data.pkl entry, so not a torch.save checkpoint.");
            var prefix = pkl.FullName[..^"data.pkl".Length];

            var byteOrder = zip.GetEntry(prefix + "byteorder");
            if (byteOrder is not null)
            {
                using var reader = new StreamReader(byteOrder.Open());
                var order = reader.ReadToEnd().Trim();
                if (order != "little")
                {
                    throw new CheckpointException(filePath, $"stores tensors in '{order}' byte order; only little-endian checkpoints are supported.");
                }
            }

            var unpickler = new TorchUnpickler();
            object root;
            try
            {
                using var pickle = new MemoryStream();
                using (var entry = pkl.Open())
                {
                    entry.CopyTo(pickle);
                }

                pickle.Position = 0;
                root = Unpickle(filePath, pickle, "checkpoint object", unpickler);
            }
            catch (InvalidDataException e)
            {
                throw new CheckpointException(filePath, $"has a corrupt {pkl.FullName} entry: {e.Message}", e);
            }

            foreach (var storage in unpickler.Storages.Values)
            {
                var name = prefix + "data/" + storage.Key;
                var entry = zip.GetEntry(name)
                    ?? throw new CheckpointException(filePath, $"is missing the archive entry {name} for storage '{storage.Key}'.");
                if (entry.Length < storage.Elements * storage.ElementSize)
                {
                    throw new CheckpointException(
                        filePath,
                        $"is corrupt: entry {name} has {entry.Length} bytes, fewer than the {storage.Elements * storage.ElementSize} its storage needs.");
                }

                try
                {
                    using var data = entry.Open();
                    storage.Data = ReadStorage(filePath, data, storage);
                }
                catch (InvalidDataException e)
                {
                    throw new CheckpointException(filePath, $"has a corrupt entry {name}: {e.Message}", e);
                }
            }

            return Build(filePath, root);
        }
    }

    private static object Unpickle(string filePath, Stream stream, string what, Unpickler unpickler)
    {
        var start = stream.CanSeek ? stream.Position : -1;
        try
        {
            return unpickler.load(stream);
        }
        catch (Exception e) when (e is PickleException or IOException or InvalidCastException or FormatException
                                       or ArgumentException or InvalidOperationException or IndexOutOfRangeException or NullReferenceException)
        {
            var where = start >= 0 ? $" (pickle starting at byte {start})" : string.Empty;
            var truncated = e is EndOfStreamException || (stream.CanSeek && stream.Position >= stream.Length);
            var problem = truncated
                ? $"is truncated: the file ended inside the {what}{where}."
                : $"is corrupt: cannot unpickle the {what}{where}: {e.Message}";
            throw new CheckpointException(filePath, problem, e);
        }
    }

    private static byte[] ReadStorage(string filePath, Stream stream, PickledStorage storage)
    {
        var bytes = storage.Elements * storage.ElementSize;
        if (bytes > Array.MaxLength)
        {
            throw new CheckpointException(filePath, $"storage '{storage.Key}' has {bytes} bytes; storages over 2 GiB are not supported.");
        }

        var data = new byte[bytes];
        var read = stream.ReadAtLeast(data, data.Length, throwOnEndOfStream: false);
        if (read < data.Length)
        {
            throw Truncated(filePath, stream, $"storage '{storage.Key}' ({read} of {data.Length} bytes present)");
        }

        return data;
    }

    private static CheckpointException Truncated(string filePath, Stream stream, string what) =>
        new(filePath, $"is truncated: the file ended inside {what}" + (stream.CanSeek ? $", at byte {stream.Length}." : "."));

    private static (Dictionary<string, Tensor>, IReadOnlyDictionary<string, string>, IReadOnlyList<PickledModule>) Build(string filePath, object root)
    {
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        var modules = new List<PickledModule>();
        var stateDict = root is ClassDict module && module.ContainsKey(ModulesKey)
            ? WalkModule(filePath, module, string.Empty, new Hashtable(), modules)
            : FindStateDict(filePath, root, metadata);
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var storages = new Dictionary<PickledStorage, Tensor>();
        try
        {
            using var scope = NewDisposeScope();
            foreach (DictionaryEntry entry in stateDict)
            {
                if (entry.Value is not PickledTensor pickled)
                {
                    continue;
                }

                var name = Convert.ToString(entry.Key, CultureInfo.InvariantCulture) ?? string.Empty;
                var tensor = Materialise(filePath, name, pickled, storages);
                tensor.DetachFromDisposeScope();
                tensors.Add(name, tensor);
            }
        }
        catch
        {
            foreach (var t in tensors.Values)
            {
                t.Dispose();
            }

            throw;
        }

        return (tensors, metadata, modules);
    }

    private const string ModulesKey = "_modules";

    /// <summary>Collects a pickled module's parameters and buffers under their dotted names, and every module's class, depth first.</summary>
    private static Hashtable WalkModule(string filePath, ClassDict module, string prefix, Hashtable tensors, List<PickledModule> modules)
    {
        var path = prefix.TrimEnd('.');
        modules.Add(new PickledModule(path, module.ClassName));
        foreach (var kind in new[] { "_parameters", "_buffers" })
        {
            if (!module.TryGetValue(kind, out var entries) || entries is null)
            {
                continue;
            }

            if (entries is not IDictionary dict)
            {
                throw new CheckpointException(filePath, $"module '{path}' ({module.ClassName}) has {kind} that is {TorchUnpickler.Describe(entries)}, not a dict.");
            }

            foreach (DictionaryEntry entry in dict)
            {
                var name = Convert.ToString(entry.Key, CultureInfo.InvariantCulture) ?? string.Empty;
                switch (entry.Value)
                {
                    case null:
                        continue; // e.g. a convolution without bias
                    case PickledTensor:
                        tensors[prefix + name] = entry.Value;
                        break;
                    default:
                        throw new CheckpointException(
                            filePath, $"module '{path}' ({module.ClassName}) holds {kind[1..^1]} '{name}' that is {TorchUnpickler.Describe(entry.Value)}, not a tensor.");
                }
            }
        }

        if (module.TryGetValue(ModulesKey, out var children) && children is IDictionary submodules)
        {
            foreach (DictionaryEntry entry in submodules)
            {
                var name = Convert.ToString(entry.Key, CultureInfo.InvariantCulture) ?? string.Empty;
                if (entry.Value is null)
                {
                    continue;
                }

                if (entry.Value is not ClassDict child || !child.ContainsKey(ModulesKey))
                {
                    throw new CheckpointException(filePath, $"submodule '{prefix}{name}' is {TorchUnpickler.Describe(entry.Value)}, not a pickled module.");
                }

                WalkModule(filePath, child, prefix + name + ".", tensors, modules);
            }
        }

        return tensors;
    }

    private static IDictionary FindStateDict(string filePath, object root, Dictionary<string, string> metadata)
    {
        if (root is not IDictionary top)
        {
            throw new CheckpointException(filePath, $"holds {TorchUnpickler.Describe(root)}, neither a dict of tensors nor a pickled module.");
        }

        if (HasTensors(top))
        {
            return top;
        }

        foreach (var key in StateDictKeys)
        {
            if (top[key] is IDictionary inner && HasTensors(inner))
            {
                foreach (DictionaryEntry entry in top)
                {
                    if (Scalar(entry.Value) is { } text)
                    {
                        metadata[Convert.ToString(entry.Key, CultureInfo.InvariantCulture) ?? string.Empty] = text;
                    }
                }

                return inner;
            }
        }

        var keys = string.Join(", ", top.Keys.Cast<object>().Select(k => Convert.ToString(k, CultureInfo.InvariantCulture)));
        throw new CheckpointException(
            filePath, $"holds no tensors: its top-level keys are [{keys}]; expected a state dict or a dict with 'state_dict'.");
    }

    private static bool HasTensors(IDictionary dict) => dict.Values.Cast<object?>().Any(v => v is PickledTensor);

    private static string? Scalar(object? value) => value switch
    {
        string s => s,
        double d => d.ToString("R", CultureInfo.InvariantCulture),
        float f => f.ToString("R", CultureInfo.InvariantCulture),
        int or long or bool or System.Numerics.BigInteger => Convert.ToString(value, CultureInfo.InvariantCulture),
        _ => null,
    };

    private static Tensor Materialise(string filePath, string name, PickledTensor pickled, Dictionary<PickledStorage, Tensor> storages)
    {
        var view = pickled.Storage;
        var storage = view.Storage;
        if (pickled.Shape.Length != pickled.Stride.Length)
        {
            throw new CheckpointException(filePath, $"tensor '{name}' has size {TensorShapeEntry.Format(pickled.Shape)} but stride {TensorShapeEntry.Format(pickled.Stride)}.");
        }

        var offset = view.Offset + pickled.Offset;
        var last = offset;
        var empty = false;
        for (var i = 0; i < pickled.Shape.Length; i++)
        {
            if (pickled.Shape[i] < 0 || pickled.Stride[i] < 0)
            {
                throw new CheckpointException(filePath, $"tensor '{name}' has a negative size or stride.");
            }

            empty |= pickled.Shape[i] == 0;
            last += (pickled.Shape[i] - 1) * pickled.Stride[i];
        }

        if (!empty && (offset < 0 || last >= view.Offset + view.Elements || view.Offset + view.Elements > storage.Elements))
        {
            throw new CheckpointException(
                filePath,
                $"tensor '{name}' {TensorShapeEntry.Format(pickled.Shape)} reaches element {last} of storage '{storage.Key}', which has {storage.Elements}.");
        }

        if (!storages.TryGetValue(storage, out var flat))
        {
            var data = storage.Data ?? throw new CheckpointException(filePath, $"is corrupt: storage '{storage.Key}' of tensor '{name}' has no data.");
            flat = torch.empty(storage.Elements, storage.DType);
            if (data.Length > 0)
            {
                flat.bytes = data;
            }

            storages.Add(storage, flat);
        }

        return empty
            ? torch.empty(pickled.Shape, storage.DType)
            : flat.as_strided(pickled.Shape, pickled.Stride, offset).clone();
    }
}
