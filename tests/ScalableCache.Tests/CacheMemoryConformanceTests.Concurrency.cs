using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using ScalableCache.Core;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>
/// The contract's thread-safety promises, checked on every store: queries and saves running while one thread adds see a
/// whole number of adds and exactly their answers. One harness (<see cref="RunDuringAdds"/>) serves the query test, the
/// save test and the soak (<see cref="SoakAsync"/>, run by <see cref="CacheMemorySoakTests"/>).
/// </summary>
/// <remarks>
/// <para><b>Identifiable adds.</b> Add j holds the keys of class j only, clustered around a centre of their own, and query j
/// lies near that centre (<see cref="AddSequence"/>). An exact answer for any query therefore shows how many adds p it saw
/// (the number of finite classes), must be −∞ from class p on and must give class c &lt; p the log-mass of all of add c's
/// keys: at θ = 1 one missing key of 8 lowers it by ≈ 0.1, far beyond the tolerance. And p times the rows per add must lie
/// between <see cref="ICacheMemory.Count"/> read before and after the observation. Approximate stores get weaker checks
/// (<see cref="ExactSnapshots"/>). Reads take one query at a time, so they are cheap and many of them land inside an add.</para>
/// <para><b>Proof of overlap.</b> The writer waits after each add until an observation that began after the add returned has
/// finished, so every intermediate state is observed (unless the run hits its time cap); an epoch counter, odd while an
/// add runs, counts the observations that overlapped an add call. A run without such an observation is repeated with twice
/// as many, half as large adds, at most <see cref="OverlapAttempts"/> times; content failures are never retried.</para>
/// <para><b>Tensors.</b> Every observer thread counts the tensors it creates and disposes
/// (<c>DisposeScopeManager.Statistics</c>, kept per thread); the observations must leave none behind.</para>
/// </remarks>
public abstract partial class CacheMemoryConformanceTests
{
    /// <summary>θ of the snapshot checks: at 1 every key of an add counts, at 30 the closest ones dominate.</summary>
    private static readonly double[] SnapshotThetas = [1.0, 30.0];

    /// <summary>How long one run of a test scenario may take before its writer and observers stop (the run then fails).</summary>
    private static readonly TimeSpan RunTimeCap = TimeSpan.FromSeconds(45);

    /// <summary>The same for the soak's 10,000 reads (2 to 4 s per store on a busy 2-core machine).</summary>
    private static readonly TimeSpan SoakTimeCap = TimeSpan.FromSeconds(120);

    /// <summary>Runs of a scenario before a test gives up on seeing observations overlap the adds.</summary>
    private const int OverlapAttempts = 3;

    /// <summary>Growth of the resident set a soak may leave (allocator and runtime caches).</summary>
    private const long SoakResidentSlack = 32L << 20;

    /// <summary>
    /// Whether results observed during adds (and memories reloaded from files saved during adds) are compared value by
    /// value with the brute-force reference over <see cref="ScoredVectors"/>, within <see cref="ScoreTolerance"/>. An
    /// approximate store returns <see langword="false"/>; then an answer must have no finite class of an add that was not
    /// yet published when it returned, no class more log-mass than all of its add's keys give (within the tolerance: no key
    /// counted twice, none of another add), and, when no add ran during the query, query j must find class j (its own
    /// cluster, the nearest keys) if add j is visible. Neither a class's full log-mass (HNSW graphs of tight clusters need
    /// not reach every key) nor finding its own cluster while an add runs (then the store searches again, filtered to its
    /// snapshot, and that search can miss) is required.
    /// </summary>
    protected virtual bool ExactSnapshots => ExactScores;

    /// <summary>
    /// The vectors the store scores for the rows it is given (row-major), and their dimension: the rows themselves unless the
    /// store transforms them (a projection overrides this with an independent computation of its transform).
    /// </summary>
    protected virtual (float[] Rows, int Dimension) ScoredVectors(ICacheMemory memory, float[] rows)
    {
        ArgumentNullException.ThrowIfNull(memory);
        return (rows, memory.Dimension);
    }

    /// <summary>The factories that restore files saved from this store's memories (nested providers included).</summary>
    protected abstract IReadOnlyList<ICacheMemoryFactory> RestoreFactories { get; }

    /// <summary>
    /// Whether the store saves to one cache file (<see cref="Core.Persistence.IPersistentCacheMemory"/>); a store that persists
    /// otherwise (a sharded cluster's manifest) turns this off, and then saving must fail with <see cref="NotSupportedException"/>.
    /// </summary>
    protected virtual bool SavesToCacheFiles => true;

    /// <summary>Store-specific counters printed after a concurrent run (empty by default).</summary>
    protected virtual string Diagnostics(ICacheMemory memory) => string.Empty;

    [Fact]
    public async Task QueriesDuringAddsSeeWholeAddsAndTheirExactAnswers()
    {
        var report = await RunUntilOverlapAsync(adds: 48, rowsPerAdd: 4, observers: 3, (memory, _) => query => Read(memory, query));
        Assert.Equal(report.Sequence.Adds - 1, report.IntermediateStates);
    }

    [Fact]
    public async Task FilesSavedDuringAddsReloadToAWholePrefixOfTheAdds()
    {
        using var folder = new PersistenceTempFolder();
        if (!SavesToCacheFiles)
        {
            using var memory = CreateMemory(4, 2);
            Assert.Throws<NotSupportedException>(() => PersistenceTestSupport.Save(folder.File("unsupported.scache"), PersistenceTestSupport.Header(), memory));
            return;
        }

        await RunUntilOverlapAsync(adds: 8, rowsPerAdd: 16, observers: 2, (memory, sequence) => _ =>
        {
            var path = folder.File($"during-adds-{Environment.CurrentManagedThreadId}.scache");
            var header = PersistenceTestSupport.Save(path, PersistenceTestSupport.Header(), memory);
            var (_, restored) = PersistenceTestSupport.Load(path, RestoreFactories);
            using (restored)
            using (var all = sequence.AllQueries())
            {
                Assert.Equal(header.Count, restored.Count);
                return Read(restored, all) with { Count = header.Count, Source = $"a file of {header.Count} keys saved during the adds" };
            }
        });
    }

    /// <summary>
    /// Soak: three readers check every answer against the reference while one writer makes 25 adds spread over 10,000 reads
    /// (the writer waits for 400 more reads after each add). A warm-up run of 500 reads on another memory first pays for what
    /// is allocated once (code compiled on first use, libtorch's thread pools, allocator arenas of new threads). Asserts:
    /// every read correct, overlap with the adds observed, no tensor created by a reader left undisposed (per reader thread:
    /// created minus disposed, from <c>DisposeScopeManager.Statistics</c>), and the resident set after the memory is disposed
    /// within <see cref="SoakResidentSlack"/> of what it was before it was created. Prints the figures.
    /// </summary>
    internal async Task SoakAsync()
    {
        const int adds = 25, rowsPerAdd = 8, readers = 3, reads = 10_000, warmUpReads = 500;
        var sequence = new AddSequence(adds, rowsPerAdd, seed: 907);
        async Task<OverlapReport> Run(int observations)
        {
            using var memory = CreateMemory(Dim, adds);
            return await RunDuringAdds(memory, CreateChecker(memory, sequence), readers, observations / adds, SoakTimeCap, query => Read(memory, query));
        }

        var warmUp = await Run(warmUpReads);
        var residentBefore = ProcessMemory.ResidentBytes();
        var report = await Run(reads);
        var residentAfter = ProcessMemory.ResidentBytes();
        var output = TestContext.Current.TestOutputHelper;
        output?.WriteLine($"warm-up: {warmUp}");
        output?.WriteLine($"soak: {report}");
        output?.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"resident: {residentBefore / 1048576.0:F1} MiB before, {residentAfter / 1048576.0:F1} MiB after " +
            $"({(residentAfter - residentBefore) / 1048576.0:+0.0;-0.0} MiB; bound +{SoakResidentSlack >> 20} MiB)"));
        AssertCorrectAndOverlapping(warmUp);
        AssertCorrectAndOverlapping(report);
        Assert.True(report.Observations >= reads, $"{report.Observations} reads, fewer than {reads}");
        Assert.True(report.TensorsCreated >= report.Observations, $"the readers' statistics saw {report.TensorsCreated} tensors for {report.Observations} reads");
        Assert.True(residentAfter - residentBefore <= SoakResidentSlack,
            $"resident memory grew by {(residentAfter - residentBefore) / 1048576.0:F1} MiB over the soak");
    }

    /// <summary>The answer of <paramref name="memory"/> to <paramref name="queries"/>, as an observation to check.</summary>
    private static Observation Read(ICacheMemory memory, QuerySet queries)
    {
        using var logMass = memory.ClassLogMass(queries.Queries, SnapshotThetas);
        long[] shape = [SnapshotThetas.Length, queries.Rows.Length, memory.ClassCount];
        Assert.Equal(shape, logMass.shape);
        return new Observation(logMass.data<float>().ToArray(), queries.Rows, null, "a query during the adds");
    }

    /// <summary>
    /// Runs the scenario on a fresh memory until its observations overlapped an add call (at most
    /// <see cref="OverlapAttempts"/> times, each with twice as many adds of half the rows), asserting every attempt's checks.
    /// Prints each attempt's figures.
    /// </summary>
    private async Task<OverlapReport> RunUntilOverlapAsync(
        int adds, int rowsPerAdd, int observers, Func<ICacheMemory, AddSequence, Func<QuerySet, Observation>> observe)
    {
        OverlapReport? report = null;
        for (var attempt = 0; attempt < OverlapAttempts && report?.DuringAdds is null or 0; attempt++)
        {
            var sequence = new AddSequence(adds << attempt, Math.Max(2, rowsPerAdd >> attempt), seed: 701 + attempt);
            using var memory = CreateMemory(Dim, sequence.Adds);
            report = await RunDuringAdds(memory, CreateChecker(memory, sequence), observers, 1, RunTimeCap, observe(memory, sequence));
            TestContext.Current.TestOutputHelper?.WriteLine($"attempt {attempt + 1}: {report}{Diagnostics(memory)}");
            Assert.True(report.Failures.Count == 0, string.Join(Environment.NewLine, report.Failures));
        }

        AssertCorrectAndOverlapping(report!);
        return report!;
    }

    private static void AssertCorrectAndOverlapping(OverlapReport report)
    {
        Assert.True(report.Failures.Count == 0, string.Join(Environment.NewLine, report.Failures));
        Assert.True(report.TensorsCreated > 0, "the observer threads' tensor statistics counted nothing");
        Assert.True(report.TensorsLeft == 0, $"the observations left {report.TensorsLeft} tensors undisposed: {report}");
        Assert.False(report.TimedOut, $"the run hit its time cap: {report}");
        Assert.True(report.Intermediate > 0, $"no observation saw a state strictly between empty and all adds: {report}");
        Assert.True(report.DuringAdds > 0, $"no observation overlapped an add call: {report}");
    }

    /// <summary>The reference for <paramref name="sequence"/> as <paramref name="memory"/> scores it.</summary>
    private SnapshotChecker CreateChecker(ICacheMemory memory, AddSequence sequence)
    {
        var (keys, dimension) = ScoredVectors(memory, sequence.Keys);
        var (queries, _) = ScoredVectors(memory, sequence.Queries);
        var perAdd = new double[sequence.Adds][][];
        var labels = new long[sequence.RowsPerAdd];
        for (var add = 0; add < sequence.Adds; add++)
        {
            Array.Fill(labels, add);
            var rows = keys.AsSpan(add * sequence.RowsPerAdd * dimension, sequence.RowsPerAdd * dimension).ToArray();
            var reference = BruteForce.LogMass(rows, labels, queries, dimension, sequence.Adds, SnapshotThetas);
            perAdd[add] = reference.Select(t => t.Select(q => q[add]).ToArray()).ToArray();
        }

        return new SnapshotChecker(sequence, perAdd, ExactSnapshots, ScoreTolerance);
    }

    /// <summary>
    /// One writer makes every add of the sequence while <paramref name="observers"/> threads call <paramref name="observe"/>
    /// (with one query at a time, in turn, from tensors made for the thread) until the writer is done; then every
    /// observation is checked (<see cref="SnapshotChecker.Check"/>) against <see cref="ICacheMemory.Count"/> read before and
    /// after it. After add j the writer waits (within <paramref name="cap"/>, after which everything stops) until an
    /// observation that started after the add has finished and, in all, <paramref name="observationsPerAdd"/> · j have.
    /// </summary>
    private static async Task<OverlapReport> RunDuringAdds(
        ICacheMemory memory, SnapshotChecker checker, int observers, int observationsPerAdd, TimeSpan cap, Func<QuerySet, Observation> observe)
    {
        var sequence = checker.Sequence;
        var total = (long)sequence.Adds * sequence.RowsPerAdd;
        var clock = Stopwatch.StartNew();
        long epoch = 0, published = 0, finishedGeneration = 0, observations = 0, duringAdds = 0, intermediate = 0;
        long created = 0, left = 0;
        var done = 0;
        var timedOut = 0;
        var states = new int[sequence.Adds + 1];

        void Observe()
        {
            var queries = Enumerable.Range(0, sequence.Adds).Select(sequence.OneQuery).ToArray();
            var turn = 0;
            var statistics = TorchSharp.DisposeScopeManager.Statistics; // this thread's
            var created0 = statistics.CreatedInScopeCount + statistics.CreatedOutsideScopeCount;
            var disposed0 = statistics.DisposedInScopeCount + statistics.DisposedOutsideScopeCount;
            while (Volatile.Read(ref done) == 0)
            {
                if (clock.Elapsed > cap)
                {
                    Volatile.Write(ref timedOut, 1);
                    break;
                }

                var generation = Interlocked.Read(ref published);
                var e0 = Interlocked.Read(ref epoch);
                var before = memory.Count;
                try
                {
                    var observation = observe(queries[turn++ % queries.Length]);
                    var after = memory.Count;
                    var e1 = Interlocked.Read(ref epoch);
                    var (low, high) = observation.Count is { } count ? (count, count) : (before, after);
                    if (low < before || high > after)
                    {
                        checker.Fail($"{observation.Source}: it holds {observation.Count} keys while Count went from {before} to {after}");
                    }

                    var quiet = observation.Count.HasValue || (e0 == e1 && (e0 & 1) == 0);
                    checker.Check(observation, low, high, quiet);
                    if (low == high)
                    {
                        Interlocked.Increment(ref states[low / sequence.RowsPerAdd]);
                    }

                    if (low > 0 && high < total)
                    {
                        Interlocked.Increment(ref intermediate);
                    }

                    if ((e0 & 1) == 1 || e1 != e0)
                    {
                        Interlocked.Increment(ref duringAdds);
                    }
                }
                catch (Exception e)
                {
                    checker.Fail($"an observation threw {e}");
                }

                InterlockedMax(ref finishedGeneration, generation);
                Interlocked.Increment(ref observations);
            }

            var createdHere = statistics.CreatedInScopeCount + statistics.CreatedOutsideScopeCount - created0;
            Interlocked.Add(ref created, createdHere);
            Interlocked.Add(ref left, createdHere - (statistics.DisposedInScopeCount + statistics.DisposedOutsideScopeCount - disposed0));
            foreach (var query in queries)
            {
                query.Dispose();
            }
        }

        void Write()
        {
            try
            {
                for (var add = 0; add < sequence.Adds && clock.Elapsed < cap; add++)
                {
                    Interlocked.Increment(ref epoch);
                    using (var keys = sequence.KeysOf(add))
                    using (var labels = sequence.LabelsOf(add))
                    {
                        memory.Add(keys, labels);
                    }

                    Interlocked.Increment(ref epoch);
                    Interlocked.Exchange(ref published, add + 1);
                    var target = (long)observationsPerAdd * (add + 1);
                    var remaining = cap - clock.Elapsed;
                    SpinWait.SpinUntil(
                        () => Interlocked.Read(ref finishedGeneration) > add && Interlocked.Read(ref observations) >= target,
                        remaining > TimeSpan.Zero ? remaining : TimeSpan.Zero);
                }
            }
            catch (Exception e)
            {
                checker.Fail($"the writer threw {e}");
            }
            finally
            {
                Volatile.Write(ref done, 1);
            }
        }

        var tasks = Enumerable.Range(0, observers)
            .Select(_ => Task.Factory.StartNew(Observe, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default))
            .Append(Task.Factory.StartNew(Write, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default))
            .ToArray();
        await Task.WhenAll(tasks);
        if (memory.Count != total)
        {
            checker.Fail($"after the adds Count is {memory.Count}, not {total}");
        }

        return new OverlapReport(
            sequence, observations, duringAdds, intermediate, states.Skip(1).SkipLast(1).Count(n => n > 0), created, left,
            checker.Misses, clock.Elapsed, timedOut != 0 || clock.Elapsed > cap, checker.Failures);
    }

    private static void InterlockedMax(ref long target, long value)
    {
        var current = Interlocked.Read(ref target);
        while (value > current)
        {
            var seen = Interlocked.CompareExchange(ref target, value, current);
            if (seen == current)
            {
                return;
            }

            current = seen;
        }
    }

    /// <summary>
    /// Adds whose visible part a result reveals: add j holds <see cref="RowsPerAdd"/> keys of class j (one class per add),
    /// drawn around centre j at noise 0.1 (cosine ≈ 0.995 to it, ≈ 0 to other centres); query j is drawn around centre j too.
    /// </summary>
    private sealed class AddSequence
    {
        public AddSequence(int adds, int rowsPerAdd, int seed)
        {
            Adds = adds;
            RowsPerAdd = rowsPerAdd;
            var data = TestData.Clustered(Dim, adds, rowsPerAdd, queriesPerClass: 1, seed);

            // TestData interleaves classes (key i has label i mod adds); regroup them add by add.
            Keys = new float[data.Keys.Length];
            for (var add = 0; add < adds; add++)
            {
                for (var row = 0; row < rowsPerAdd; row++)
                {
                    data.Keys.AsSpan(((row * adds) + add) * Dim, Dim).CopyTo(Keys.AsSpan(((add * rowsPerAdd) + row) * Dim));
                }
            }

            Queries = data.Queries;
        }

        public int Adds { get; }

        public int RowsPerAdd { get; }

        /// <summary>Every key, add by add, row-major.</summary>
        public float[] Keys { get; }

        /// <summary>Query j (near centre j), row-major.</summary>
        public float[] Queries { get; }

        public Tensor KeysOf(int add) => tensor(Keys.AsSpan(add * RowsPerAdd * Dim, RowsPerAdd * Dim).ToArray(), [RowsPerAdd, Dim]);

        public Tensor LabelsOf(int add) => full(RowsPerAdd, (long)add, ScalarType.Int64);

        /// <summary>Every query, in order.</summary>
        public QuerySet AllQueries() => new(tensor(Queries, [Adds, Dim]), [.. Enumerable.Range(0, Adds)]);

        /// <summary>Query <paramref name="row"/> alone.</summary>
        public QuerySet OneQuery(int row) => new(tensor(Queries.AsSpan(row * Dim, Dim).ToArray(), [1, Dim]), [row]);
    }

    /// <summary>Some of an <see cref="AddSequence"/>'s queries: <see cref="Queries"/> row i is query <c>Rows[i]</c>.</summary>
    private sealed record QuerySet(Tensor Queries, int[] Rows) : IDisposable
    {
        public void Dispose() => Queries.Dispose();
    }

    /// <summary>
    /// An answer to check: log-masses <c>[θ, Rows.Length, adds]</c> (flattened) for the queries <see cref="Rows"/>; for a
    /// memory nobody adds to (a reloaded file), the number of keys it holds.
    /// </summary>
    private sealed record Observation(float[] LogMass, int[] Rows, long? Count, string Source);

    /// <summary>Checks answers against the per-add reference and collects failures (the first 20, and a count).</summary>
    private sealed class SnapshotChecker(AddSequence sequence, double[][][] perAdd, bool exact, double tolerance)
    {
        private readonly ConcurrentQueue<string> _failures = new();
        private int _count;
        private long _misses;

        public AddSequence Sequence => sequence;

        /// <summary>Approximate stores: answers, given while an add ran, in which query j missed the visible class j.</summary>
        public long Misses => Interlocked.Read(ref _misses);

        public IReadOnlyCollection<string> Failures =>
            _count <= _failures.Count ? _failures : [.. _failures, $"… {_count - _failures.Count} more failures"];

        public void Fail(string message)
        {
            if (Interlocked.Increment(ref _count) <= 20)
            {
                _failures.Enqueue(message);
            }
        }

        /// <summary>
        /// Checks an answer given by a memory holding between <paramref name="low"/> and <paramref name="high"/> keys while
        /// it answered (<paramref name="quiet"/>: no add ran meanwhile). Exact: the answer shows p adds, the number of finite
        /// classes of its first query, with <c>p · rows</c> in <c>[low, high]</c>, and every value is the reference's for p.
        /// Approximate: see <see cref="ExactSnapshots"/>.
        /// </summary>
        public void Check(Observation observation, long low, long high, bool quiet)
        {
            var (values, rows, source) = (observation.LogMass, observation.Rows, observation.Source);
            var adds = sequence.Adds;
            var perRow = sequence.RowsPerAdd;
            var shown = exact
                ? values.AsSpan(0, adds).ToArray().Count(float.IsFinite)
                : Enumerable.Range(0, values.Length).Where(i => float.IsFinite(values[i])).Select(i => (i % adds) + 1).DefaultIfEmpty(0).Max();
            if ((long)shown * perRow > high || (exact && (long)shown * perRow < low))
            {
                Fail($"{source}: the answer shows {shown} adds ({shown * perRow} keys) while the memory held {low} to {high} keys");
                return;
            }

            var visible = (int)(low / perRow); // adds certainly visible
            for (var t = 0; t < SnapshotThetas.Length; t++)
            {
                var theta = SnapshotThetas[t];
                for (var i = 0; i < rows.Length; i++)
                {
                    var q = rows[i];
                    for (var c = 0; c < adds; c++)
                    {
                        var got = values[(((t * rows.Length) + i) * adds) + c];
                        var expected = c < shown ? perAdd[c][t][q] : double.NegativeInfinity;
                        var limit = tolerance * (1 + theta + Math.Abs(c < shown ? expected : 0));
                        var missed = !exact && c == q && c < visible && float.IsNegativeInfinity(got);
                        if (missed && !quiet && t == 0)
                        {
                            Interlocked.Increment(ref _misses);
                        }

                        var matches = c >= shown ? float.IsNegativeInfinity(got)
                            : exact ? Math.Abs(got - expected) <= limit
                            : got <= expected + limit && !(missed && quiet);
                        if (!matches)
                        {
                            Fail($"{source}: with {shown} adds shown ({low} to {high} keys held{(quiet ? ", no add running" : string.Empty)}), query {q} " +
                                $"finds {got} for class {c} at θ = {theta}; all of add {c} gives {expected} (tolerance {limit:G2}" +
                                $"{(exact ? string.Empty : ", as an upper bound")})");
                            return;
                        }
                    }
                }
            }
        }
    }

    /// <summary>What one run of <see cref="RunDuringAdds"/> saw.</summary>
    /// <param name="Sequence">The adds made.</param>
    /// <param name="Observations">Observations (reads or saves) checked.</param>
    /// <param name="DuringAdds">Observations that overlapped an add call.</param>
    /// <param name="Intermediate">Observations made while the memory held more than none and fewer than all adds.</param>
    /// <param name="IntermediateStates">Distinct intermediate numbers of adds observed with no add published meanwhile.</param>
    /// <param name="TensorsCreated">Tensors the observer threads created.</param>
    /// <param name="TensorsLeft">Of those, how many were not disposed when the observers finished.</param>
    /// <param name="Misses">See <see cref="SnapshotChecker.Misses"/>.</param>
    /// <param name="Elapsed">Wall time of the run.</param>
    /// <param name="TimedOut">Whether the run hit its time cap.</param>
    /// <param name="Failures">Content and snapshot failures.</param>
    private sealed record OverlapReport(
        AddSequence Sequence, long Observations, long DuringAdds, long Intermediate, int IntermediateStates, long TensorsCreated,
        long TensorsLeft, long Misses, TimeSpan Elapsed, bool TimedOut, IReadOnlyCollection<string> Failures)
    {
        public override string ToString() => string.Create(CultureInfo.InvariantCulture,
            $"{Sequence.Adds} adds of {Sequence.RowsPerAdd} keys; {Observations} observations checked, {DuringAdds} overlapping an add " +
            $"call, {Intermediate} of an intermediate state ({IntermediateStates} of the {Sequence.Adds - 1} states); observer " +
            $"threads created {TensorsCreated} tensors and left {TensorsLeft}; {Failures.Count} failures; {Elapsed.TotalSeconds:F1} s{(TimedOut ? " (time cap hit)" : string.Empty)}" +
            $"{(Misses > 0 ? $"; {Misses} answers during adds missed the query's own visible class" : string.Empty)}");
    }
}

/// <summary>Runs alone: the soak measures the resident set, which other tests would move.</summary>
[CollectionDefinition(nameof(CacheMemorySoakTests), DisableParallelization = true)]
public sealed class CacheMemorySoakCollection;

/// <summary>
/// The soak (<see cref="CacheMemoryConformanceTests.SoakAsync"/>) of each store in its main conformance configuration (the
/// variants — tensor path, float16, exhaustive HNSW, CUDA — run the shorter concurrency tests only; the soak of all three
/// takes about 10 s on a busy 2-core machine).
/// </summary>
[Collection(nameof(CacheMemorySoakTests))]
[Trait("Category", "Soak")]
public sealed class CacheMemorySoakTests
{
    [Fact]
    public Task ExactStore() => new ExactConformanceTests().SoakAsync();

    [Fact]
    public Task RandomProjectionStore() => new RandomProjectionConformanceTests().SoakAsync();

    [Fact]
    public Task HnswStore() => new HnswConformanceTests().SoakAsync();
}
