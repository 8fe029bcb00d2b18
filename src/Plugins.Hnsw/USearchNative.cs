using System.Runtime.InteropServices;

namespace ScalableCache.Hnsw;

/// <summary>
/// P/Invoke bindings for the subset of the USearch C API (<c>usearch.h</c>, 2.26) this backend uses. The native library
/// <c>libusearch_c</c> ships in the <c>Cloud.Unum.USearch</c> package (<c>runtimes/&lt;rid&gt;/native</c>).
/// </summary>
/// <remarks>
/// Every function reports failure through its last argument, a <c>char const**</c> that stays <c>NULL</c> on success and
/// otherwise points at a static message (never freed). <see cref="Check"/> turns it into a <see cref="USearchException"/>.
/// Threading: the C++ index keeps a fixed pool of per-thread search contexts sized by the thread limits
/// (<see cref="ChangeThreadsAdd"/> / <see cref="ChangeThreadsSearch"/>); each <c>usearch_add</c>/<c>usearch_search</c>
/// call borrows one and fails when none is free, so callers bound their concurrency to that pool.
/// <see cref="Reserve"/> reallocates and resets both limits to <c>std::thread::hardware_concurrency()</c>; it must not
/// run concurrently with any other call.
/// </remarks>
internal static unsafe partial class USearchNative
{
    public const string Library = "libusearch_c";

    /// <summary><c>usearch_metric_kind_t</c>.</summary>
    public enum MetricKind
    {
        Unknown = 0,
        Cos = 1,
        /// <summary>Inner product; distance = 1 − a·b.</summary>
        InnerProduct = 2,
        L2Squared = 3,
    }

    /// <summary><c>usearch_scalar_kind_t</c> (values as in the 2.26 header).</summary>
    public enum ScalarKind
    {
        Unknown = 0,
        Float32 = 1,
        Float64 = 2,
        Float16 = 3,
        Int8 = 4,
        Bits1 = 5,
        BFloat16 = 6,
    }

    /// <summary><c>usearch_init_options_t</c>: enum fields are C ints, sizes are <c>size_t</c>, <c>multi</c> is a C <c>bool</c>.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct InitOptions
    {
        public MetricKind MetricKind;
        public nint Metric;
        public ScalarKind Quantization;
        public nuint Dimensions;
        public nuint Connectivity;
        public nuint ExpansionAdd;
        public nuint ExpansionSearch;
        public byte Multi;
    }

    [LibraryImport(Library, EntryPoint = "usearch_init")]
    public static partial nint Init(ref InitOptions options, ref nint error);

    [LibraryImport(Library, EntryPoint = "usearch_free")]
    public static partial void Free(nint index, ref nint error);

    [LibraryImport(Library, EntryPoint = "usearch_reserve")]
    public static partial void Reserve(nint index, nuint capacity, ref nint error);

    [LibraryImport(Library, EntryPoint = "usearch_change_threads_add")]
    public static partial void ChangeThreadsAdd(nint index, nuint threads, ref nint error);

    [LibraryImport(Library, EntryPoint = "usearch_change_threads_search")]
    public static partial void ChangeThreadsSearch(nint index, nuint threads, ref nint error);

    [LibraryImport(Library, EntryPoint = "usearch_change_expansion_search")]
    public static partial void ChangeExpansionSearch(nint index, nuint expansion, ref nint error);

    [LibraryImport(Library, EntryPoint = "usearch_size")]
    public static partial nuint Size(nint index, ref nint error);

    [LibraryImport(Library, EntryPoint = "usearch_capacity")]
    public static partial nuint Capacity(nint index, ref nint error);

    [LibraryImport(Library, EntryPoint = "usearch_dimensions")]
    public static partial nuint Dimensions(nint index, ref nint error);

    [LibraryImport(Library, EntryPoint = "usearch_memory_usage")]
    public static partial nuint MemoryUsage(nint index, ref nint error);

    /// <summary>
    /// Replaces the index's distance function. With a non-null <paramref name="state"/> USearch calls
    /// <c>float metric(void const* a, void const* b, void* state)</c>; <paramref name="kind"/> is what a saved index records.
    /// A loaded index gets its built-in metric back, so this is applied again after every <see cref="LoadBuffer"/>.
    /// </summary>
    [LibraryImport(Library, EntryPoint = "usearch_change_metric")]
    public static partial void ChangeMetric(nint index, nint metric, nint state, MetricKind kind, ref nint error);

    /// <summary>The SIMD target of the index's metric kernel (e.g. <c>genoa</c>, <c>haswell</c>, <c>serial</c>); a static C string.</summary>
    [LibraryImport(Library, EntryPoint = "usearch_hardware_acceleration")]
    public static partial nint HardwareAcceleration(nint index, ref nint error);

    [LibraryImport(Library, EntryPoint = "usearch_add")]
    public static partial void Add(nint index, ulong key, void* vector, ScalarKind vectorKind, ref nint error);

    /// <summary>Copies up to <paramref name="count"/> vectors stored under <paramref name="key"/>, converted to <paramref name="vectorKind"/>.</summary>
    [LibraryImport(Library, EntryPoint = "usearch_get")]
    public static partial nuint Get(nint index, ulong key, nuint count, void* vector, ScalarKind vectorKind, ref nint error);

    [LibraryImport(Library, EntryPoint = "usearch_remove")]
    public static partial nuint Remove(nint index, ulong key, ref nint error);

    [LibraryImport(Library, EntryPoint = "usearch_search")]
    public static partial nuint Search(
        nint index, void* query, ScalarKind queryKind, nuint count, ulong* keys, float* distances, ref nint error);

    /// <summary><c>filter(key, state)</c> returns non-zero for keys that may be returned.</summary>
    [LibraryImport(Library, EntryPoint = "usearch_filtered_search")]
    public static partial nuint FilteredSearch(
        nint index, void* query, ScalarKind queryKind, nuint count,
        delegate* unmanaged[Cdecl]<ulong, void*, int> filter, void* filterState,
        ulong* keys, float* distances, ref nint error);

    [LibraryImport(Library, EntryPoint = "usearch_serialized_length")]
    public static partial nuint SerializedLength(nint index, ref nint error);

    [LibraryImport(Library, EntryPoint = "usearch_save_buffer")]
    public static partial void SaveBuffer(nint index, void* buffer, nuint length, ref nint error);

    [LibraryImport(Library, EntryPoint = "usearch_load_buffer")]
    public static partial void LoadBuffer(nint index, void* buffer, nuint length, ref nint error);

    /// <summary>Makes the index a read-only view of serialized bytes, which must outlive it (nothing is copied).</summary>
    [LibraryImport(Library, EntryPoint = "usearch_view_buffer")]
    public static partial void ViewBuffer(nint index, void* buffer, nuint length, ref nint error);

    [LibraryImport(Library, EntryPoint = "usearch_version")]
    public static partial nint Version();

    /// <summary>Throws when <paramref name="error"/> was set by the previous call.</summary>
    public static void Check(nint error, string operation)
    {
        if (error != 0)
        {
            throw new USearchException($"USearch {operation} failed: {Marshal.PtrToStringUTF8(error) ?? "(no message)"}");
        }
    }
}

/// <summary>The native USearch library reported an error.</summary>
public sealed class USearchException : Exception
{
    /// <summary>Creates the exception.</summary>
    public USearchException()
    {
    }

    /// <summary>Creates the exception with a message.</summary>
    public USearchException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and an inner exception.</summary>
    public USearchException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>Owns one native <c>usearch_index_t</c>; releasing it calls <c>usearch_free</c>.</summary>
internal sealed class USearchIndexHandle : SafeHandle
{
    private USearchIndexHandle()
        : base(0, ownsHandle: true)
    {
    }

    public override bool IsInvalid => handle == 0;

    /// <summary>Creates an empty index with <paramref name="options"/>.</summary>
    public static USearchIndexHandle Create(USearchNative.InitOptions options)
    {
        var result = new USearchIndexHandle();
        nint error = 0;
        var index = USearchNative.Init(ref options, ref error);
        if (error != 0)
        {
            if (index != 0)
            {
                nint ignored = 0;
                USearchNative.Free(index, ref ignored);
            }

            USearchNative.Check(error, "init");
        }

        if (index == 0)
        {
            throw new USearchException("USearch init failed: usearch_init returned no index.");
        }

        result.SetHandle(index);
        return result;
    }

    protected override bool ReleaseHandle()
    {
        nint error = 0;
        USearchNative.Free(handle, ref error);
        return error == 0;
    }
}
