using System.Collections;
using System.Globalization;
using System.Numerics;
using System.Runtime.CompilerServices;
using Razorvine.Pickle;
using Razorvine.Pickle.Objects;
using static TorchSharp.torch;

namespace ScalableCache.Core.Checkpoints;

/// <summary>
/// Razorvine.Pickle unpickler for <c>torch.save</c> streams (legacy and zip). Storages arrive as persistent ids
/// <c>('storage', torch.XxxStorage, key, location, numel[, view_metadata])</c>; tensors as
/// <c>torch._utils._rebuild_tensor[_v2](storage, offset, size, stride, …)</c>. Neither is materialised here: the unpickler returns
/// <see cref="PickledTensor"/> descriptors and records every storage, and the reader fills the storages' bytes afterwards
/// (in the legacy format they follow the pickle; in the zip format they are archive entries).
/// </summary>
/// <remarks>
/// Razorvine's constructor table is process-wide and TorchSharp.PyBridge registers the same torch names in its static
/// constructor. This type runs PyBridge's registration first and then installs routers that handle this reader's descriptors and
/// hand everything else to PyBridge's constructors, so both readers work in one process in either order.
/// </remarks>
internal sealed class TorchUnpickler : Unpickler
{
    private static readonly BigInteger LegacyMagic = BigInteger.Parse("1950a86a20f9469cfc6c", NumberStyles.HexNumber, CultureInfo.InvariantCulture);

    static TorchUnpickler()
    {
        RuntimeHelpers.RunClassConstructor(typeof(TorchSharp.PyBridge.PyTorchUnpickler).TypeHandle);
        Route("torch._utils", "_rebuild_tensor", RebuildTensor);
        Route("torch._utils", "_rebuild_tensor_v2", RebuildTensor);
        Route("torch._utils", "_rebuild_parameter", RebuildParameter);
        Route("torch.nn.parameter", "Parameter", RebuildParameter);
        registerConstructor("collections", "OrderedDict", new OrderedDictConstructor());
    }

    /// <summary>Storages referenced so far, by key, in first-reference order.</summary>
    public Dictionary<string, PickledStorage> Storages { get; } = new(StringComparer.Ordinal);

    /// <summary>The magic number that opens a legacy <c>torch.save</c> file.</summary>
    public static bool IsLegacyMagic(object? value) => value switch
    {
        BigInteger b => b == LegacyMagic,
        _ => false,
    };

    public static long ToInt64(object? value, string what) => value switch
    {
        int i => i,
        long l => l,
        short s => s,
        byte b => b,
        BigInteger big when big >= long.MinValue && big <= long.MaxValue => (long)big,
        _ => throw new PickleException($"expected an integer for {what}, found {Describe(value)}."),
    };

    public static string Describe(object? value) => value switch
    {
        null => "None",
        ClassDictConstructor c => $"class {c.module}.{c.name}",
        ClassDict d => $"object of class {d.ClassName}",
        string s => $"'{s}'",
        _ => value.GetType().Name,
    };

    protected override object persistentLoad(object pid)
    {
        // A whole-model pickle names each module class once as ('module', class, source file, source text): the class is data
        // (a constructor of attribute dictionaries); its source is never run.
        if (pid is object[] { Length: >= 2 } module && module[0] is "module" && module[1] is IObjectConstructor moduleClass)
        {
            return moduleClass;
        }

        if (pid is not object[] tuple || tuple.Length < 5 || tuple[0] is not "storage")
        {
            throw new PickleException($"unsupported persistent id {Describe(pid)}; only ('storage', type, key, location, numel) and ('module', class, …) are understood.");
        }

        var typeName = tuple[1] switch
        {
            ClassDictConstructor c => c.name,
            string s => s,
            var other => throw new PickleException($"unsupported storage type {Describe(other)}."),
        };
        var (dtype, elementSize) = StorageType(typeName);
        var key = Convert.ToString(tuple[2], CultureInfo.InvariantCulture) ?? throw new PickleException("a storage has no key.");
        var elements = ToInt64(tuple[4], "a storage size");
        if (!Storages.TryGetValue(key, out var storage))
        {
            storage = new PickledStorage(key, dtype, elementSize, elements);
            Storages.Add(key, storage);
        }
        else if (storage.DType != dtype || storage.Elements != elements)
        {
            throw new PickleException($"storage '{key}' is referenced with two different types or sizes.");
        }

        // Legacy files may reference a view of a storage: (view_key, offset, view_size).
        if (tuple.Length > 5 && tuple[5] is object[] view && view.Length == 3)
        {
            return new PickledStorageView(storage, ToInt64(view[1], "a storage view offset"), ToInt64(view[2], "a storage view size"));
        }

        return new PickledStorageView(storage, 0, elements);
    }

    private static (ScalarType, long) StorageType(string name) => name switch
    {
        "DoubleStorage" => (ScalarType.Float64, 8),
        "FloatStorage" => (ScalarType.Float32, 4),
        "HalfStorage" => (ScalarType.Float16, 2),
        "BFloat16Storage" => (ScalarType.BFloat16, 2),
        "LongStorage" => (ScalarType.Int64, 8),
        "IntStorage" => (ScalarType.Int32, 4),
        "ShortStorage" => (ScalarType.Int16, 2),
        "CharStorage" => (ScalarType.Int8, 1),
        "ByteStorage" => (ScalarType.Byte, 1),
        "BoolStorage" => (ScalarType.Bool, 1),
        _ => throw new PickleException($"storage type torch.{name} is not supported."),
    };

    private static void Route(string module, string name, Func<object[], object> handle)
    {
        objectConstructors.TryGetValue(module + "." + name, out var previous);
        registerConstructor(module, name, new RoutingConstructor(module + "." + name, handle, previous));
    }

    private static object RebuildTensor(object[] args)
    {
        if (args.Length < 4)
        {
            throw new PickleException($"torch._utils._rebuild_tensor needs (storage, offset, size, stride); got {args.Length} arguments.");
        }

        var storage = (PickledStorageView)args[0];
        return new PickledTensor(storage, ToInt64(args[1], "a storage offset"), ToShape(args[2], "a tensor size"), ToShape(args[3], "a tensor stride"));
    }

    private static object RebuildParameter(object[] args) => args[0];

    private static long[] ToShape(object? value, string what) => value switch
    {
        object[] items => [.. items.Select(i => ToInt64(i, what))],
        ArrayList list => [.. list.Cast<object>().Select(i => ToInt64(i, what))],
        _ => [ToInt64(value, what)],
    };

    private sealed class RoutingConstructor(string name, Func<object[], object> handle, IObjectConstructor? previous) : IObjectConstructor
    {
        public object construct(object[] args)
        {
            if (args.Length > 0 && args[0] is PickledStorageView or PickledTensor)
            {
                return handle(args);
            }

            return previous?.construct(args) ?? throw new PickleException($"{name} called with unexpected arguments.");
        }
    }

    /// <summary><c>OrderedDict()</c>, or <c>OrderedDict([(key, value), …])</c> as older pickles build it.</summary>
    private sealed class OrderedDictConstructor : IObjectConstructor
    {
        public object construct(object[] args)
        {
            var dict = new PickledOrderedDict();
            if (args.Length > 0 && args[0] is IEnumerable pairs and not string)
            {
                foreach (var pair in pairs)
                {
                    var (key, value) = pair switch
                    {
                        object[] { Length: 2 } t => (t[0], t[1]),
                        IList { Count: 2 } l => (l[0], l[1]),
                        _ => throw new PickleException($"OrderedDict item {Describe(pair)} is not a (key, value) pair."),
                    };
                    dict[key ?? throw new PickleException("An OrderedDict key is None.")] = value;
                }
            }

            return dict;
        }
    }
}

/// <summary>A <c>collections.OrderedDict</c>; its pickled instance state (PyTorch's <c>_metadata</c>) is ignored.</summary>
internal sealed class PickledOrderedDict : Hashtable
{
#pragma warning disable CA1822, IDE1006 // Razorvine calls __setstate__ by name through reflection.
    public void __setstate__(Hashtable state)
    {
    }
#pragma warning restore CA1822, IDE1006
}

/// <summary>A storage referenced by the pickle: its key, element type and size; <see cref="Data"/> is filled by the reader.</summary>
internal sealed class PickledStorage(string key, ScalarType dtype, long elementSize, long elements)
{
    public string Key { get; } = key;

    public ScalarType DType { get; } = dtype;

    public long ElementSize { get; } = elementSize;

    public long Elements { get; } = elements;

    public byte[]? Data { get; set; }
}

/// <summary>A window of a storage (legacy view metadata), in elements.</summary>
internal sealed record PickledStorageView(PickledStorage Storage, long Offset, long Elements);

/// <summary>A tensor as described by <c>_rebuild_tensor[_v2]</c>: storage, element offset, size and stride.</summary>
internal sealed record PickledTensor(PickledStorageView Storage, long Offset, long[] Shape, long[] Stride)
{
#pragma warning disable CA1822, IDE1006, IDE0060 // Razorvine calls __setstate__ by name through reflection.
    /// <summary>The state a pickled <c>Parameter</c> is built with (<c>requires_grad</c>, hooks): not needed here.</summary>
    public void __setstate__(object[] state)
    {
    }
#pragma warning restore CA1822, IDE1006, IDE0060
}
