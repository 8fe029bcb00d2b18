using System.Buffers.Binary;
using System.Globalization;
using ScalableCache.Core;
using ScalableCache.Core.Models;
using ScalableCache.Core.Persistence;
using ScalableCache.Exact;
using ScalableCache.Hnsw;
using ScalableCache.RandomProjection;
using Xunit;
using static ScalableCache.Tests.PersistenceTestSupport;

namespace ScalableCache.Tests;

/// <summary>
/// A cache file is untrusted input. Seeded mutants of small real files of each provider — truncations, bit flips, and
/// resealed mutants (a header field, a state property, a blob byte, a chunk or the trailer changed, then every digest and
/// the checksum recomputed, see <see cref="CacheFileFrames"/>) — are loaded in-process (a native crash would kill the test
/// host). Each must end in one of these outcomes:
/// <list type="bullet">
/// <item><b>rejected</b>: a <see cref="CacheFileException"/>;</item>
/// <item><b>identical</b>: the memory answers the fixed queries bit-identically to the original on every class both have,
/// and any class only one of them has holds no mass (−∞) — the mutation touched something that does not change answers
/// (metadata, θ, λ, an unused neighbour slot, a class count that leaves the labels valid);</item>
/// <item><b>as stored</b>: the answers differ, but the memory holds exactly what the mutated file says — exporting its state
/// gives the file's properties and blob bytes — and its answers are well formed (no NaN, no +∞): the mutation changed
/// data the format cannot tell from genuine (a key's value, a label to another valid label, a valid neighbour id).</item>
/// </list>
/// Anything else — another exception, or different answers from a memory that is not what the file says — is a failure.
/// </summary>
public sealed class PersistenceMutationTests(ITestOutputHelper output)
{
    private const int Classes = 3;
    private static readonly double[] Thetas = [1, 10, 50];

    private enum Family
    {
        Truncation,
        RawBitFlip,
        HeaderField,
        StateField,
        HeaderBitFlip,
        PayloadBitFlip,
        PayloadWord,
        Chunk,
        Trailer,
    }

    [Fact]
    public void ExactMutantsAreRejectedOrLoadFaithfully()
    {
        const int d = 8;
        var exact = new ExactCacheMemoryFactory(new ExactCacheOptions());
        var (keys, labels) = UnitKeys(seed: 31, n: 60, d, Classes);
        Run("Exact", d, () => exact.Create(d, Classes), memory =>
        {
            Add(memory, keys, labels, 0, 40); // two storage chunks: the views property is "40,20"
            Add(memory, keys, labels, 40, 20);
        }, [exact], seed: 1);
    }

    [Fact]
    public void HnswMutantsAreRejectedOrLoadFaithfully()
    {
        const int d = 8;
        var hnsw = new HnswCacheMemoryFactory(new HnswCacheOptions { Connectivity = 4, ExpansionAdd = 16, ExpansionSearch = 16, TopK = 10, Threads = 1 });
        var (keys, labels) = UnitKeys(seed: 32, n: 120, d, Classes);
        Run("Hnsw", d, () => hnsw.CreateHnsw(d, Classes), memory => Add(memory, keys, labels, 0, 120), [hnsw], seed: 2);
    }

    [Fact]
    public void RandomProjectionMutantsAreRejectedOrLoadFaithfully()
    {
        const int d = 16;
        var exact = new ExactCacheMemoryFactory(new ExactCacheOptions());
        var rp = new RandomProjectionCacheMemoryFactory(
            new RandomProjectionCacheOptions { Inner = "Exact", OutputDimension = 6, Kind = RandomProjectionKind.Gaussian, Seed = 5 }, [exact]);
        var (keys, labels) = UnitKeys(seed: 33, n: 50, d, Classes);
        Run("RandomProjection", d, () => rp.CreateProjected(d, Classes), memory => Add(memory, keys, labels, 0, 50), [exact, rp], seed: 3);
    }

    private void Run(
        string provider, int dimension, Func<ICacheMemory> create, Action<ICacheMemory> fill, IReadOnlyList<ICacheMemoryFactory> factories, int seed)
    {
        using var folder = new PersistenceTempFolder();
        var path = folder.File("original.scache");
        byte[] original;
        using (var memory = create())
        {
            fill(memory);
            Save(path, Header() with { Recipe = new KeyRecipe(Header().Layers, InputNormalization.ImageNet, InputShape.Cifar) }, memory);
            original = File.ReadAllBytes(path);
        }

        // The helper decodes and re-encodes every record of an unchanged file to the very same bytes, so a resealed mutant
        // differs from the original only where it was changed.
        var unchanged = CacheFileFrames.Parse(original);
        unchanged.SetHeader(unchanged.Header);
        unchanged.SetTrailer(unchanged.Trailer);
        for (var i = 0; i < unchanged.ChunkBodies.Count; i++)
        {
            unchanged.SetChunk(i, unchanged.Chunk(i));
        }

        Assert.Equal(original, unchanged.Seal());
        var (queries, _) = UnitKeys(seed: 99, n: 9, dimension, Classes);
        Fingerprint expected;
        float[] projected;
        using (var loaded = Load(path, factories).Memory)
        {
            projected = loaded is IRandomProjectionCacheMemory rp ? Project(rp, queries) : queries;
            expected = Fingerprint.Of(loaded, projected);
        }

        var mutants = Mutants(original, new Random(seed));
        var outcomes = new Dictionary<(Family Family, string Outcome), int>();
        var failures = new List<string>();
        var graphRejections = 0;
        for (var i = 0; i < mutants.Count; i++)
        {
            var (family, name, bytes) = mutants[i];
            var file = folder.File($"mutant-{i}.scache");
            File.WriteAllBytes(file, bytes);
            var outcome = Classify(file, bytes, factories, projected, expected, out var detail);
            if (outcome is "escaped" or "violation")
            {
                failures.Add($"{family} '{name}': {outcome}: {detail}");
            }

            if (detail.Contains("USearch index", StringComparison.Ordinal))
            {
                graphRejections++;
            }

            outcomes[(family, outcome)] = outcomes.GetValueOrDefault((family, outcome)) + 1;
            File.Delete(file);
        }

        output.WriteLine($"{provider}: {mutants.Count} mutants of a {original.Length}-byte file");
        foreach (var family in Enum.GetValues<Family>())
        {
            var row = outcomes.Where(o => o.Key.Family == family).OrderBy(o => o.Key.Outcome, StringComparer.Ordinal).Select(o => $"{o.Key.Outcome} {o.Value}");
            output.WriteLine($"  {family,-15} {string.Join(", ", row)}");
        }

        foreach (var (outcome, count) in outcomes.GroupBy(o => o.Key.Outcome).Select(g => (g.Key, g.Sum(o => o.Value))).OrderBy(o => o.Key, StringComparer.Ordinal))
        {
            output.WriteLine($"  total {outcome}: {count}");
        }

        Assert.True(failures.Count == 0, string.Join(Environment.NewLine, failures));
        Assert.Equal(mutants.Count, outcomes.Values.Sum());

        // Resealed mutants pass every digest, so they exercise the checks behind them: none may fail on a checksum.
        Assert.DoesNotContain(outcomes, o => o.Key.Family is not (Family.Truncation or Family.RawBitFlip or Family.Trailer)
            && o.Key.Outcome == $"rejected {CacheFileProblem.ChecksumMismatch}");
        Assert.Contains(outcomes, o => o.Key.Outcome == "identical");
        Assert.Contains(outcomes, o => o.Key.Outcome == $"rejected {CacheFileProblem.Inconsistent}");
        if (provider == "Hnsw")
        {
            Assert.True(graphRejections > 0, "no mutant was rejected by the graph's structure check");
        }
    }

    /// <summary>Loads a mutant and names its outcome (see the class remarks); <paramref name="detail"/> says why.</summary>
    private static string Classify(
        string file, byte[] bytes, IReadOnlyList<ICacheMemoryFactory> factories, float[] queries, Fingerprint expected, out string detail)
    {
        LoadedCacheFile loaded;
        try
        {
            loaded = Load(file, factories);
        }
        catch (CacheFileException e)
        {
            detail = e.Detail;
            return $"rejected {e.Problem}";
        }
        catch (Exception e)
        {
            detail = e.ToString();
            return "escaped";
        }

        using var memory = loaded.Memory;
        try
        {
            // Whatever loads has a header Save would write, describing the memory it came with.
            var header = loaded.Header;
            var invalid = header.Validate();
            if (invalid.Count > 0 || (header.Provider, header.Dimension, header.Count, header.ClassCount) != (memory.Provider, memory.Dimension, memory.Count, memory.ClassCount))
            {
                detail = $"loaded with an invalid header ({string.Join(" ", invalid)}) or one that describes another memory " +
                    $"({header.Provider} {header.Dimension} × {header.Count}, {header.ClassCount} classes; the memory is {memory.Provider} " +
                    $"{memory.Dimension} × {memory.Count}, {memory.ClassCount} classes)";
                return "violation";
            }

            var actual = Fingerprint.Of(memory, queries);
            if (actual.SameAnswers(expected))
            {
                detail = "";
                return "identical";
            }

            if (!actual.WellFormed)
            {
                detail = "the answers hold NaN or +∞";
                return "violation";
            }

            var frames = CacheFileFrames.Parse(bytes);
            var blob = 0;
            detail = StoredStateDiffers(((IPersistentCacheMemory)memory).ExportState(), (object?[])frames.Header[18]!, frames, ref blob) ?? "";
            return detail.Length == 0 ? "as stored" : "violation";
        }
        catch (Exception e)
        {
            detail = "the loaded memory failed: " + e;
            return "escaped";
        }
    }

    /// <summary>How an exported state differs from the state a file stores (null when it does not).</summary>
    private static string? StoredStateDiffers(CacheState exported, object?[] stored, CacheFileFrames frames, ref int blob)
    {
        if (exported.Provider != (string?)stored[0] || exported.Dimension != Convert.ToInt32(stored[1], CultureInfo.InvariantCulture)
            || exported.Count != Convert.ToInt64(stored[2], CultureInfo.InvariantCulture))
        {
            return $"the memory is {exported.Provider} {exported.Dimension} × {exported.Count}; the file stores {stored[0]} {stored[1]} × {stored[2]}";
        }

        var properties = ((IDictionary<object, object>)stored[3]!).ToDictionary(p => (string)p.Key, p => (string)p.Value);
        if (properties.Count != exported.Properties.Count
            || exported.Properties.Any(p => !properties.TryGetValue(p.Key, out var s) || !SameValue(p.Value, s)))
        {
            return $"properties {Describe(exported.Properties)} were stored as {Describe(properties)}";
        }

        var blobs = ((object?[])stored[4]!).Select(b => (string?)((object?[])b!)[0]).ToList();
        if (!blobs.SequenceEqual(exported.Blobs.Select(b => b.Name)))
        {
            return $"blobs [{string.Join(", ", exported.Blobs.Select(b => b.Name))}] were stored as [{string.Join(", ", blobs)}]";
        }

        foreach (var b in exported.Blobs)
        {
            if (!b.ReadAllBytes().AsSpan().SequenceEqual(frames.Blob(blob++).Bytes))
            {
                return $"blob '{b.Name}' differs from the stored bytes";
            }
        }

        var children = (object?[])stored[5]!;
        if (children.Length != exported.Children.Count)
        {
            return $"{exported.Children.Count} children were stored as {children.Length}";
        }

        for (var i = 0; i < children.Length; i++)
        {
            if (StoredStateDiffers(exported.Children[i], (object?[])children[i]!, frames, ref blob) is { } problem)
            {
                return problem;
            }
        }

        return null;

        static bool SameValue(string a, string b) =>
            a == b || (double.TryParse(a, NumberStyles.Float, CultureInfo.InvariantCulture, out var x)
                && double.TryParse(b, NumberStyles.Float, CultureInfo.InvariantCulture, out var y) && x.Equals(y));

        static string Describe(IEnumerable<KeyValuePair<string, string>> p) => "{" + string.Join(", ", p.Select(kv => $"{kv.Key}={kv.Value}")) + "}";
    }

    private static float[] Project(IRandomProjectionCacheMemory memory, float[] queries)
    {
        using var scope = TorchSharp.torch.NewDisposeScope();
        return memory.Projection.Apply(TorchSharp.torch.tensor(queries, [queries.Length / memory.Dimension, memory.Dimension])).data<float>().ToArray();
    }

    // ----- Mutants -----------------------------------------------------------------------------------------------------

    private static List<(Family Family, string Name, byte[] Bytes)> Mutants(byte[] original, Random rng)
    {
        var list = new List<(Family, string, byte[])>();
        var frames = CacheFileFrames.Parse(original);
        var header = frames.Header;
        var state = (object?[])header[18]!;
        var dimension = Convert.ToInt32(header[4], CultureInfo.InvariantCulture);
        var count = Convert.ToInt64(header[5], CultureInfo.InvariantCulture);
        var payload = Convert.ToInt64(header[17], CultureInfo.InvariantCulture);

        foreach (var length in new[] { 0, 5, 8, 13, 40, original.Length - 1 }.Concat(Enumerable.Range(0, 8).Select(_ => rng.Next(original.Length))))
        {
            list.Add((Family.Truncation, $"first {length} bytes", original[..length]));
        }

        for (var i = 0; i < 20; i++)
        {
            var bytes = (byte[])original.Clone();
            var position = rng.Next(bytes.Length);
            bytes[position] ^= (byte)(1 << rng.Next(8));
            list.Add((Family.RawBitFlip, $"byte {position}", bytes));
        }

        // Header fields (by key), given wrong, out-of-range, boundary, other valid and wrongly typed values.
        object?[][] fields =
        [
            [1, 0], [1, 2], [2, 0], [2, 2], [2, -1],
            [3, "Other"], [3, ""], [3, null], [3, 5],
            [4, 0], [4, -1], [4, dimension + 1], [4, int.MaxValue], [4, (1 << 20) + 1], [4, 8.5],
            [5, -1], [5, count + 1], [5, int.MaxValue], [5, long.MaxValue],
            [6, 0], [6, -1], [6, Classes - 1], [6, Classes + 1], [6, 1 << 16], [6, (1 << 16) + 1], [6, int.MaxValue],
            [7, ""], [7, "resnet56"], [7, null],
            [8, new string('z', 64)], [8, new string('A', 64)], [8, "abc"], [8, null], [8, 7],
            [9, "../../etc/passwd"], [9, "folder/file.th"], [9, ""], [9, null],
            [10, Array.Empty<object>()], [10, new object?[] { "" }], [10, new object?[] { null }], [10, null],
            [11, false], [11, 1],
            [12, null], [12, "other"],
            [13, 0.0], [13, -1.0], [13, double.NaN], [13, double.PositiveInfinity], [13, double.Epsilon], [13, 5.0], [13, null], [13, "40"],
            [14, -0.1], [14, 1.5], [14, double.NaN], [14, double.NegativeInfinity], [14, 0.0], [14, 1.0], [14, null],
            [15, new DateTime(2000, 1, 1, 0, 0, 0, DateTimeKind.Utc)], [15, "yesterday"],
            [16, new Dictionary<object, object?> { ["x"] = null }], [16, new Dictionary<object, object?>()], [16, null],
            [17, payload + 1], [17, payload - 1], [17, -1L], [17, long.MaxValue / 2],
            [18, null], [18, "state"],
        ];
        foreach (var field in fields)
        {
            list.Add((Family.HeaderField, $"key {field[0]} = {Show(field[1])}", WithHeader(original, h => h[(int)field[0]!] = field[1])));
        }

        // The key recipe's fields: [0 layers, 1 key normalisation, 2 mean, 3 std, 4 channels, 5 height, 6 width].
        object?[][] recipe =
        [
            [0, new object?[] { "other" }], [0, Array.Empty<object>()], [0, new object?[] { "layer3.2", "layer3.2" }], [0, null],
            [1, 1], [1, 7], [1, -1],
            [2, new object?[] { double.NaN, 0.0, 0.0 }], [2, Array.Empty<object>()], [2, new object?[] { 0.5, 0.5 }],
            [3, new object?[] { 0.0, 1.0, 1.0 }], [3, new object?[] { 1.0, 1.0, double.PositiveInfinity }],
            [4, 1], [4, 0], [4, int.MaxValue],
            [5, 0], [5, -1], [5, 1 << 13], [5, 1 << 20], [5, int.MaxValue],
            [6, int.MaxValue], [6, 7.5],
        ];
        foreach (var field in recipe)
        {
            list.Add((Family.HeaderField, $"key 19.{field[0]} = {Show(field[1])}", WithHeader(original, h => ((object?[])h[19]!)[(int)field[0]!] = field[1])));
        }

        foreach (var value in new object?[] { null, "recipe", Array.Empty<object>() })
        {
            list.Add((Family.HeaderField, $"key 19 = {Show(value)}", WithHeader(original, h => h[19] = value)));
        }

        var future = header.Concat(new object?[12]).ToArray();
        future[^1] = "a field of a later version";
        list.Add((Family.HeaderField, "an unknown trailing key", CacheFileFrames.Forge(original, f => f.SetHeader(future))));

        AddStateMutants(list, original, state, []);
        for (var i = 0; i < 40; i++)
        {
            var position = rng.Next(frames.HeaderBody.Length);
            var bit = rng.Next(8);
            list.Add((Family.HeaderBitFlip, $"header byte {position} bit {bit}", CacheFileFrames.Forge(original, f => f.HeaderBody[position] ^= (byte)(1 << bit))));
        }

        AddPayloadMutants(list, original, frames, state, rng);
        AddChunkAndTrailerMutants(list, original, frames);
        return list;
    }

    /// <summary>A state's provider, shape, each property, its blob list and its children, recursively.</summary>
    private static void AddStateMutants(List<(Family, string, byte[])> list, byte[] original, object?[] state, int[] path)
    {
        var where = "state " + string.Join(".", path);
        void Add(string name, Action<object?[]> change) => list.Add((Family.StateField, $"{where}: {name}", WithHeader(original, header =>
        {
            var target = (object?[])header[18]!;
            foreach (var index in path)
            {
                target = (object?[])((object?[])target[5]!)[index]!;
            }

            change(target);
        })));

        var dimension = Convert.ToInt32(state[1], CultureInfo.InvariantCulture);
        var count = Convert.ToInt64(state[2], CultureInfo.InvariantCulture);
        Add("provider Other", s => s[0] = "Other");
        Add("dimension + 1", s => s[1] = dimension + 1);
        Add("dimension 2^31 − 1", s => s[1] = int.MaxValue);
        Add("count + 1", s => s[2] = count + 1);
        Add("count −1", s => s[2] = -1);
        Add("no properties", s => s[3] = null);
        foreach (var name in ((IDictionary<object, object>)state[3]!).Keys.Cast<string>().ToList())
        {
            var value = (string)((IDictionary<object, object>)state[3]!)[name];
            var values = new List<string?> { "", "x", "-1", "99999999999999999999", "NaN", null };
            if (double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var number))
            {
                values.Add((number + 1).ToString("R", CultureInfo.InvariantCulture));
                values.Add((number * (1 + 1e-9)).ToString("R", CultureInfo.InvariantCulture));
            }

            if (value.Contains(',', StringComparison.Ordinal))
            {
                values.Add(string.Join(",", value.Split(',').Reverse()));
            }

            foreach (var v in values)
            {
                Add($"property {name} = {Show(v)}", s => ((IDictionary<object, object?>)s[3]!)[name] = v);
            }

            Add($"property {name} removed", s => ((IDictionary<object, object?>)s[3]!).Remove(name));
        }

        var blobs = (object?[])state[4]!;
        for (var b = 0; b < blobs.Length; b++)
        {
            var index = b;
            var length = Convert.ToInt64(((object?[])blobs[b]!)[1], CultureInfo.InvariantCulture);
            Add($"blob {b} length + 1", s => ((object?[])((object?[])s[4]!)[index]!)[1] = length + 1);
            Add($"blob {b} length − 1", s => ((object?[])((object?[])s[4]!)[index]!)[1] = length - 1);
            Add($"blob {b} length 2^40", s => ((object?[])((object?[])s[4]!)[index]!)[1] = 1L << 40);
            Add($"blob {b} renamed", s => ((object?[])((object?[])s[4]!)[index]!)[0] = "other");
            Add($"blob {b} nil", s => ((object?[])s[4]!)[index] = null);
        }

        if (blobs.Length > 1)
        {
            Add("blobs swapped", s => s[4] = ((object?[])s[4]!).Reverse().ToArray());
        }

        Add("an extra empty blob", s => s[4] = ((object?[])s[4]!).Append(new object?[] { "extra", 0 }).ToArray());
        var children = (object?[])state[5]!;
        Add("an extra child", s => s[5] = children.Append(new object?[] { "Exact", 1, 0, new Dictionary<object, object?>(), Array.Empty<object>(), Array.Empty<object>() }).ToArray());
        if (children.Length > 0)
        {
            Add("no child", s => s[5] = Array.Empty<object>());
        }

        for (var i = 0; i < children.Length; i++)
        {
            AddStateMutants(list, original, (object?[])children[i]!, [.. path, i]);
        }
    }

    /// <summary>Bit flips anywhere in the blobs, and 32-bit words set to boundary values where structure lives.</summary>
    private static void AddPayloadMutants(List<(Family, string, byte[])> list, byte[] original, CacheFileFrames frames, object?[] state, Random rng)
    {
        var names = BlobNames(state).ToList();
        var count = Convert.ToInt64(state[2], CultureInfo.InvariantCulture);
        for (var i = 0; i < 50; i++)
        {
            var blob = rng.Next(names.Count);
            var bytes = frames.Blob(blob).Bytes;
            if (bytes.Length == 0)
            {
                continue;
            }

            var offset = rng.Next(bytes.Length);
            var bit = rng.Next(8);
            list.Add((Family.PayloadBitFlip, $"{names[blob]} byte {offset} bit {bit}", Payload(original, blob, offset, data => data[0] ^= (byte)(1 << bit))));
        }

        uint[] words = [0, 1, (uint)count - 1, (uint)count, (uint)count + 1, int.MaxValue, uint.MaxValue, 0x7FC00000 /* NaN */];
        for (var blob = 0; blob < names.Count; blob++)
        {
            var bytes = frames.Blob(blob).Bytes;
            if (bytes.Length < 4)
            {
                continue;
            }

            // An HNSW index's head and graph follow its vectors; elsewhere any word is data.
            var start = names[blob] == "graph" ? HnswTestData.GraphOffset(bytes) - 64 : 0;
            var n = names[blob] == "graph" ? 60 : 10;
            for (var i = 0; i < n; i++)
            {
                var offset = (int)(start + rng.NextInt64(bytes.Length - 3 - start));
                var word = words[rng.Next(words.Length)];
                list.Add((Family.PayloadWord, $"{names[blob]} word at {offset} = {word}",
                    Payload(original, blob, offset, data => BinaryPrimitives.WriteUInt32LittleEndian(data, word), width: 4)));
            }
        }
    }

    private static void AddChunkAndTrailerMutants(List<(Family, string, byte[])> list, byte[] original, CacheFileFrames frames)
    {
        void Chunks(string name, Action<CacheFileFrames> change) => list.Add((Family.Chunk, name, CacheFileFrames.Forge(original, change)));

        void Field(int index, object? value) => Chunks($"chunk 0 field {index} = {Show(value)}", f =>
        {
            var chunk = f.Chunk(0);
            chunk[index] = value;
            f.SetChunk(0, chunk);
        });

        Chunks("first chunk dropped", f => f.ChunkBodies.RemoveAt(0));
        Chunks("last chunk repeated", f => f.ChunkBodies.Add(f.ChunkBodies[^1]));
        if (frames.ChunkBodies.Count > 1)
        {
            Chunks("first two chunks swapped", f => (f.ChunkBodies[0], f.ChunkBodies[1]) = (f.ChunkBodies[1], f.ChunkBodies[0]));
        }

        Field(0, 1);
        Field(1, 1);
        Field(1, -1);
        Field(2, 1);
        Field(3, null);
        Field(3, Array.Empty<byte>());
        Chunks("chunk 0 one byte short", f =>
        {
            var chunk = f.Chunk(0);
            chunk[3] = ((byte[])chunk[3]!)[..^1];
            f.SetChunk(0, chunk);
        });
        Chunks("chunk 0 one byte long", f =>
        {
            var chunk = f.Chunk(0);
            chunk[3] = ((byte[])chunk[3]!).Append((byte)0).ToArray();
            f.SetChunk(0, chunk);
        });
        Chunks("chunk 0 not an array", f => f.ChunkBodies[0] = [0xA1, 0x78]);

        void Trailer(string name, Func<object?[], object?[]> change, bool reseal = true) =>
            list.Add((Family.Trailer, name, CacheFileFrames.Forge(original, f => f.SetTrailer(change(f.Trailer)), reseal)));

        Trailer("chunk count + 1", t => [Convert.ToInt32(t[0], CultureInfo.InvariantCulture) + 1, t[1], t[2]]);
        Trailer("payload bytes + 1", t => [t[0], Convert.ToInt64(t[1], CultureInfo.InvariantCulture) + 1, t[2]]);
        Trailer("checksum flipped", t => [t[0], t[1], ((byte[])t[2]!).Select((b, i) => i == 0 ? (byte)(b ^ 1) : b).ToArray()], reseal: false);
        Trailer("empty trailer", _ => [], reseal: false);
    }

    /// <summary>The file with blob <paramref name="blob"/>'s bytes from <paramref name="offset"/> changed by <paramref name="change"/>, resealed.</summary>
    private static byte[] Payload(byte[] original, int blob, long offset, CacheFileFrames.BytesChange change, int width = 1) =>
        CacheFileFrames.Forge(original, f => f.ChangeBlob(blob, offset, width, change));

    /// <summary>The file with its header changed by <paramref name="change"/>, resealed.</summary>
    private static byte[] WithHeader(byte[] original, Action<object?[]> change) => CacheFileFrames.Forge(original, f => f.ChangeHeader(change));

    private static IEnumerable<string> BlobNames(object?[] state) =>
        ((object?[])state[4]!).Select(b => (string)((object?[])b!)[0]!)
            .Concat(((object?[])state[5]!).SelectMany(c => BlobNames((object?[])c!)));

    private static string Show(object? value) => value switch
    {
        null => "nil",
        string s => $"\"{s}\"",
        double x => x.ToString("R", CultureInfo.InvariantCulture),
        object?[] a => $"[{string.Join(", ", a.Select(Show))}]",
        IDictionary<object, object?> m => "{" + string.Join(", ", m.Select(kv => $"{kv.Key}: {Show(kv.Value)}")) + "}",
        _ => Convert.ToString(value, CultureInfo.InvariantCulture) ?? "?",
    };

    /// <summary>What the oracle compares: the memory's shape, its projection (if any) and its log-masses on fixed queries.</summary>
    private sealed record Fingerprint(string Provider, int Dimension, long Count, int Classes, byte[] Projection, float[] Answers)
    {
        public bool WellFormed => Answers.All(v => !float.IsNaN(v) && !float.IsPositiveInfinity(v));

        public static Fingerprint Of(ICacheMemory memory, float[] queries)
        {
            var answering = memory;
            var projection = Array.Empty<byte>();
            if (memory is IRandomProjectionCacheMemory rp)
            {
                // End to end the projection's matrix multiply may round differently wherever the matrix lands in memory,
                // so compare the matrix itself and the inner store's answers on the original's projected queries.
                projection = [.. rp.Projection.ExportMatrix(), rp.Renormalize ? (byte)1 : (byte)0];
                answering = rp.Inner;
            }

            return new Fingerprint(
                memory.Provider, memory.Dimension, memory.Count, memory.ClassCount, projection, PersistenceTestSupport.LogMass(answering, queries, Thetas));
        }

        /// <summary>The same answers on every class both have, and no mass in any class only one of them has.</summary>
        public bool SameAnswers(Fingerprint other)
        {
            if ((Provider, Dimension, Count) != (other.Provider, other.Dimension, other.Count) || !Projection.AsSpan().SequenceEqual(other.Projection))
            {
                return false;
            }

            var rows = Answers.Length / Classes;
            if (rows != other.Answers.Length / other.Classes)
            {
                return false;
            }

            for (var row = 0; row < rows; row++)
            {
                for (var c = 0; c < Math.Max(Classes, other.Classes); c++)
                {
                    var mine = c < Classes ? Answers[(row * Classes) + c] : float.NegativeInfinity;
                    var theirs = c < other.Classes ? other.Answers[(row * other.Classes) + c] : float.NegativeInfinity;
                    if (BitConverter.SingleToInt32Bits(mine) != BitConverter.SingleToInt32Bits(theirs))
                    {
                        return false;
                    }
                }
            }

            return true;
        }
    }
}
