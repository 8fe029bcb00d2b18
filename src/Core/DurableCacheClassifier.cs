using System.Diagnostics;
using System.Globalization;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using ScalableCache.Core.Persistence;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core;

/// <summary>Settings of a <see cref="DurableCacheClassifier"/>.</summary>
public sealed class DurableCacheOptions
{
    /// <summary>
    /// Time between periodic snapshots (taken only when keys were added since the last one). <see cref="TimeSpan.Zero"/> or
    /// <see cref="Timeout.InfiniteTimeSpan"/>: none. Default 5 minutes.
    /// </summary>
    public TimeSpan SnapshotInterval { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>A snapshot is also taken when the log outgrows this many bytes; 0: never for size. Default 256 MiB.</summary>
    public long SnapshotLogBytes { get; set; } = 256L << 20;

    /// <summary>Whether disposing takes a last snapshot when keys were added since the previous one (default), so the next start replays nothing.</summary>
    public bool SnapshotOnDispose { get; set; } = true;

    /// <summary>Add requests that may wait for the log writer; further ones wait for room (back-pressure). Default 1024.</summary>
    public int MaxPendingAdds { get; set; } = 1024;

    /// <summary>Rows one group commit takes at most (one write, one fsync, one memory add). Default 4096.</summary>
    public int MaxCommitRows { get; set; } = 4096;

    /// <summary>Whether each group commit is flushed to the disk (fsync) before its adds are acknowledged (default; see <see cref="MemoryLogOptions.FlushToDisk"/>).</summary>
    public bool FlushToDisk { get; set; } = true;

    /// <summary>
    /// Whether to serve a memory that keeps itself (<see cref="IDurableCacheMemory"/>) although it does not persist its adds
    /// (<see cref="IDurableCacheMemory.PersistsAdds"/> false: e.g. an Orleans cluster whose silos have no state folder): adds are then
    /// acknowledged once the memory holds them, and are lost with it. Default false: such a memory is refused.
    /// </summary>
    public bool AllowNonDurableMemory { get; set; }

    /// <summary>Checks the settings; returns the problems found (empty when valid).</summary>
    public IReadOnlyList<string> Validate()
    {
        var problems = new List<string>();
        if (SnapshotInterval < TimeSpan.Zero && SnapshotInterval != Timeout.InfiniteTimeSpan)
        {
            problems.Add($"SnapshotInterval must not be negative (got {SnapshotInterval}).");
        }

        if (SnapshotLogBytes < 0)
        {
            problems.Add($"SnapshotLogBytes must not be negative (got {SnapshotLogBytes}).");
        }

        if (MaxPendingAdds < 1)
        {
            problems.Add($"MaxPendingAdds must be at least 1 (got {MaxPendingAdds}).");
        }

        if (MaxCommitRows < 1)
        {
            problems.Add($"MaxCommitRows must be at least 1 (got {MaxCommitRows}).");
        }

        return problems;
    }
}

/// <summary>An acknowledged add: its rows are on disk (in the log, or persisted by a memory that keeps itself) and in the memory.</summary>
/// <param name="FirstKey">Index of the add's first row in the memory (its log offset; for a memory that keeps itself, as this object
/// counts its keys: other writers to the same memory shift it).</param>
/// <param name="Count">Rows added.</param>
/// <param name="KeyCount">Keys in the memory right after the add's group commit.</param>
public sealed record DurableAddResult(long FirstKey, int Count, long KeyCount);

/// <summary>What opening a <see cref="DurableCacheClassifier"/> found and did.</summary>
/// <param name="SnapshotKeys">Keys in the snapshot (cache file; for a memory that keeps itself, the keys the file last recorded).</param>
/// <param name="Log">What the log held, and any torn tail dropped (nothing, for a memory that keeps itself).</param>
/// <param name="ReplayedKeys">Log rows added on top of the snapshot (for a memory that keeps itself: the keys it holds beyond the
/// file's record, which it restored by itself).</param>
/// <param name="SkippedKeys">Log rows the snapshot already held (records from before it).</param>
public sealed record DurableCacheRecovery(long SnapshotKeys, MemoryLogRecovery Log, long ReplayedKeys, long SkippedKeys);

/// <summary>Counters of a <see cref="DurableCacheClassifier"/> since it was opened.</summary>
/// <param name="Keys">Keys in the memory.</param>
/// <param name="AddedKeys">Rows acknowledged since opening.</param>
/// <param name="Adds">Add calls acknowledged since opening.</param>
/// <param name="Commits">Group commits (each one write and one fsync of the log).</param>
/// <param name="LogBytes">Bytes in the log's segments.</param>
/// <param name="Snapshots">Snapshots written since opening.</param>
/// <param name="SnapshotFailures">Snapshots that failed (the log still holds every add).</param>
/// <param name="LastSnapshotUtc">When the newest snapshot on disk was written (or found at opening).</param>
/// <param name="LastSnapshotKeys">Keys in that snapshot.</param>
public sealed record DurableCacheStatistics(
    long Keys, long AddedKeys, long Adds, long Commits, long LogBytes, long Snapshots, long SnapshotFailures, DateTime LastSnapshotUtc, long LastSnapshotKeys);

/// <summary>
/// A <see cref="CacheClassifier"/> whose labelled memory grows while it serves, without losing an acknowledged add: every add is
/// appended to a checksummed <see cref="MemoryLog"/> (fsynced, batched across concurrent adds — group commit) before it is
/// acknowledged, and the memory is saved now and then as a snapshot (<see cref="CacheClassifier.Save"/>, atomic). Opening loads the
/// snapshot and replays the log over it: records the snapshot already holds are skipped (offsets), a torn tail is dropped with a
/// warning.
/// </summary>
/// <remarks>
/// <para><b>Files.</b> The snapshot is the cache file at <see cref="Path"/>; the log's segments are <c>PATH.log.000001</c>, … beside
/// it. The snapshot's metadata records the log's id (<c>memoryLog.id</c>), so a log is never replayed over another cache.</para>
/// <para><b>A memory that keeps itself</b> (<see cref="IDurableCacheMemory"/>, e.g. the Orleans cluster with a state folder, which
/// persists each add before it returns) needs no log: an add is acknowledged once the memory has it. The cache file then holds the
/// classifier's configuration (model, recipe, θ, λ, checkpoint digest) and the memory's id (metadata <c>memory.durableId</c>; the
/// keys stay in the memory), and opening it reopens that memory by id with its provider's <see cref="IDurableCacheMemoryFactory"/>.
/// A snapshot compacts the memory (<see cref="IDurableCacheMemory.Compact"/>) and rewrites the file with the key count. A memory that
/// does not persist its adds is refused unless <see cref="DurableCacheOptions.AllowNonDurableMemory"/> is set.</para>
/// <para><b>Thread-safety.</b> Any number of threads may predict and add at once; adds are acknowledged in log order, and a query
/// sees each add wholly or not at all. Adds are visible to queries only once durable. <see cref="DisposeAsync"/> must not race
/// with other calls.</para>
/// <para><b>Ownership.</b> Owns the classifier (and so its memory), the log and the background snapshot task.</para>
/// </remarks>
public sealed class DurableCacheClassifier : IDisposable, IAsyncDisposable
{
    /// <summary>The snapshot metadata key that names the log's id.</summary>
    public const string LogIdKey = "memoryLog.id";

    /// <summary>The cache file metadata key that names the id of a memory that keeps itself (<see cref="IDurableCacheMemory.DurableId"/>).</summary>
    public const string MemoryIdKey = "memory.durableId";

    private const string LogSegmentKey = "memoryLog.segment";
    private const int ReplayBatchRows = 4096;

    private readonly CacheClassifier _classifier;
    private readonly MemoryLog? _log;
    private readonly IDurableCacheMemory? _self;
    private readonly DurableCacheOptions _options;
    private readonly ILogger _logger;
    private readonly Dictionary<string, string> _metadata;
    private readonly Channel<PendingAdd> _pending;
    private readonly Lock _commitGate = new();
    private readonly SemaphoreSlim _snapshotGate = new(1, 1);
    private readonly SemaphoreSlim _snapshotWanted = new(0, 1);
    private readonly CancellationTokenSource _stopping = new();
    private readonly Task _committer;
    private readonly Task _snapshotter;
    private long _addedKeys;
    private long _adds;
    private long _commits;
    private long _snapshots;
    private long _snapshotFailures;
    private long _lastSnapshotKeys;
    private long _lastSnapshotTicks;
    private Exception? _fault;
    private DurableCacheStatistics? _final;
    private bool _disposed;

    private DurableCacheClassifier(
        string path, CacheClassifier classifier, MemoryLog? log, IReadOnlyDictionary<string, string> metadata, DateTime snapshotUtc, long snapshotKeys,
        DurableCacheRecovery recovery, DurableCacheOptions options, ILogger logger)
    {
        Path = path;
        _classifier = classifier;
        _log = log;
        _self = log is null ? (IDurableCacheMemory)classifier.Memory : null;
        _options = options;
        _logger = logger;
        _metadata = new Dictionary<string, string>(metadata, StringComparer.Ordinal);
        if (log is not null)
        {
            _metadata[LogIdKey] = log.Id.ToString("N");
        }

        _lastSnapshotTicks = snapshotUtc.Ticks;
        _lastSnapshotKeys = snapshotKeys;
        Recovery = recovery;
        _pending = Channel.CreateBounded<PendingAdd>(new BoundedChannelOptions(options.MaxPendingAdds)
        {
            SingleReader = true,
            FullMode = BoundedChannelFullMode.Wait,
        });
        _committer = Task.Run(CommitLoopAsync);
        _snapshotter = Task.Run(SnapshotLoopAsync);
    }

    /// <summary>The snapshot (cache file).</summary>
    public string Path { get; }

    /// <summary>The log's base path: <c>PATH.log</c> (segments <c>PATH.log.000001</c>, …); <see langword="null"/> for a memory that keeps itself.</summary>
    public string? LogPath => _log?.Path;

    /// <summary>The id of the memory that keeps itself (<see cref="IDurableCacheMemory"/>), or <see langword="null"/> when the log makes adds durable.</summary>
    public string? MemoryId => _self?.DurableId;

    /// <summary>Whether an acknowledged add is persisted: always with the log; for a memory that keeps itself, when it persists its adds.</summary>
    public bool AddsPersisted => _self?.PersistsAdds ?? true;

    /// <summary>What opening found (snapshot keys, log records, replayed and skipped rows, a dropped torn tail).</summary>
    public DurableCacheRecovery Recovery { get; }

    /// <summary>The key recipe.</summary>
    public KeyRecipe Recipe => _classifier.Recipe;

    /// <summary>θ, or <see langword="null"/> when the cache was never tuned.</summary>
    public double? Theta => _classifier.Theta;

    /// <summary>λ, or <see langword="null"/> when the cache was never tuned.</summary>
    public double? Lambda => _classifier.Lambda;

    /// <summary>The network and checkpoint the keys come from.</summary>
    public CacheModelId? Model => _classifier.Model;

    /// <summary>The key store's provider name.</summary>
    public string Provider => _classifier.Memory.Provider;

    /// <summary>Number of classes C.</summary>
    public int ClassCount => _classifier.ClassCount;

    /// <summary>Key dimension D.</summary>
    public int Dimension => _classifier.Dimension;

    /// <summary>Keys in the memory (every one of them durable).</summary>
    public long Count => _classifier.Count;

    /// <summary>Whether the memory holds flipped training images too.</summary>
    public bool Flip => _classifier.Flip;

    /// <summary>Metadata the snapshots carry (the cache file's own, and the log id).</summary>
    public IReadOnlyDictionary<string, string> Metadata => _metadata;

    /// <summary>Why adds are refused, or <see langword="null"/> while healthy: a commit reached the log but not the memory (reopen to replay it).</summary>
    public Exception? Fault => Volatile.Read(ref _fault);

    /// <summary>Counters since opening (after disposal: as they were at the end, the last snapshot included).</summary>
    public DurableCacheStatistics Statistics => _final ?? new(
        Count, Interlocked.Read(ref _addedKeys), Interlocked.Read(ref _adds), Interlocked.Read(ref _commits), _log?.Bytes ?? 0,
        Interlocked.Read(ref _snapshots), Interlocked.Read(ref _snapshotFailures),
        new DateTime(Interlocked.Read(ref _lastSnapshotTicks), DateTimeKind.Utc), Interlocked.Read(ref _lastSnapshotKeys));

    /// <summary>The log's base path for a snapshot at <paramref name="path"/>.</summary>
    public static string LogPathFor(string path) => System.IO.Path.GetFullPath(path) + ".log";

    /// <summary>
    /// Makes <paramref name="classifier"/> durable at <paramref name="path"/>: writes it as the first snapshot, then starts an empty
    /// log. A memory that keeps itself (<see cref="IDurableCacheMemory"/>) is retained instead and the file records its id (no log).
    /// Takes ownership of the classifier (disposed with this object, or on failure).
    /// </summary>
    /// <exception cref="IOException">A cache file or log already exists there (open it with <see cref="Open"/> instead).</exception>
    /// <exception cref="InvalidOperationException">The memory keeps itself but does not persist its adds, and
    /// <see cref="DurableCacheOptions.AllowNonDurableMemory"/> is not set.</exception>
    public static DurableCacheClassifier Create(
        string path, CacheClassifier classifier, DurableCacheOptions? options = null, IReadOnlyDictionary<string, string>? metadata = null,
        ILogger? logger = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentNullException.ThrowIfNull(classifier);
        try
        {
            options = Checked(options);
            var full = System.IO.Path.GetFullPath(path);
            if (File.Exists(full) || MemoryLog.FindSegments(LogPathFor(full)).Count > 0)
            {
                throw new IOException($"'{full}' or its memory log already exists: open it instead of creating it.");
            }

            if (classifier.Memory is IDurableCacheMemory self)
            {
                CheckPersists(self, options, full);
                self.Retain(); // from now on the file names it: disposing must not delete it
                var selfMeta = new Dictionary<string, string>(metadata ?? new Dictionary<string, string>(), StringComparer.Ordinal) { [MemoryIdKey] = self.DurableId };
                selfMeta.Remove(LogIdKey);
                var written = classifier.Save(full, selfMeta, cancellationToken);
                MemoryLog.FlushFolder(System.IO.Path.GetDirectoryName(full)!);
                return new DurableCacheClassifier(full, classifier, null, selfMeta, written.CreatedUtc, written.Count,
                    new DurableCacheRecovery(written.Count, NoLog, 0, 0), options, logger ?? NullLogger.Instance);
            }

            var id = Guid.NewGuid();
            var meta = new Dictionary<string, string>(metadata ?? new Dictionary<string, string>(), StringComparer.Ordinal) { [LogIdKey] = id.ToString("N") };
            meta.Remove(MemoryIdKey);
            var header = classifier.Save(full, meta, cancellationToken);
            MemoryLog.FlushFolder(System.IO.Path.GetDirectoryName(full)!);
            var log = MemoryLog.Open(LogPathFor(full), classifier.Dimension, classifier.ClassCount, null, LogOptions(options), logger, id);
            var recovery = new DurableCacheRecovery(header.Count, log.Recovery, 0, 0);
            return new DurableCacheClassifier(full, classifier, log, meta, header.CreatedUtc, header.Count, recovery, options, logger ?? NullLogger.Instance);
        }
        catch
        {
            classifier.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Opens the snapshot at <paramref name="path"/> for <paramref name="backbone"/> (checked as <see cref="CacheClassifier.Load"/>
    /// checks it) and replays its log: records the snapshot holds are skipped, the rest added; a torn tail is dropped with a warning,
    /// and so are the temporary files of snapshots a crash interrupted.
    /// </summary>
    /// <exception cref="CacheFileException">The snapshot is unreadable or does not fit the backbone.</exception>
    /// <exception cref="MemoryLogException">The log is damaged (other than a torn tail), belongs to another snapshot, or does not
    /// continue the snapshot (records missing).</exception>
    /// <remarks>A file that names a memory that keeps itself (<see cref="MemoryIdKey"/>) is opened by reopening that memory with its
    /// provider's <see cref="IDurableCacheMemoryFactory"/> among <see cref="CacheLoadOptions.Providers"/>; the memory must hold at least
    /// the keys the file last recorded.</remarks>
    public static DurableCacheClassifier Open(
        string path, nn.Module<Tensor, Tensor> backbone, CacheLoadOptions load, DurableCacheOptions? options = null, ILogger? logger = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentNullException.ThrowIfNull(backbone);
        ArgumentNullException.ThrowIfNull(load);
        options = Checked(options);
        logger ??= NullLogger.Instance;
        var full = System.IO.Path.GetFullPath(path);
        var header = CacheFile.ReadHeader(full);
        DeleteInterruptedSnapshots(full, logger);
        if (header.Metadata.TryGetValue(MemoryIdKey, out var memoryId))
        {
            return OpenSelfDurable(full, header, memoryId, backbone, load, options, logger);
        }

        var classifier = CacheClassifier.Load(full, backbone, load, cancellationToken);
        try
        {
            Guid? id = header.Metadata.TryGetValue(LogIdKey, out var text) && Guid.TryParseExact(text, "N", out var parsed) ? parsed : null;
            var logPath = LogPathFor(full);
            var snapshotKeys = classifier.Count;
            var replay = new Replay(classifier, snapshotKeys, logPath, adopt: id is null);
            var stopwatch = Stopwatch.StartNew();
            var log = MemoryLog.Open(logPath, classifier.Dimension, classifier.ClassCount, replay.Take, LogOptions(options), logger, id);
            try
            {
                replay.Flush();
                var recovery = new DurableCacheRecovery(snapshotKeys, log.Recovery, replay.Replayed, replay.Skipped);
                logger.LogInformation(
                    "Opened {Path}: {SnapshotKeys} snapshot keys, {Replayed} replayed and {Skipped} skipped from {Records} log records in {Seconds:0.00} s",
                    full, snapshotKeys, replay.Replayed, replay.Skipped, log.Recovery.Records, stopwatch.Elapsed.TotalSeconds);
                return new DurableCacheClassifier(full, classifier, log, header.Metadata, header.CreatedUtc, snapshotKeys, recovery, options, logger);
            }
            catch
            {
                log.Dispose();
                throw;
            }
        }
        catch
        {
            classifier.Dispose();
            throw;
        }
    }

    private static DurableCacheClassifier OpenSelfDurable(
        string full, CacheFileHeader header, string memoryId, nn.Module<Tensor, Tensor> backbone, CacheLoadOptions load, DurableCacheOptions options, ILogger logger)
    {
        if (MemoryLog.FindSegments(LogPathFor(full)).Count > 0)
        {
            throw new MemoryLogException(LogPathFor(full),
                $"'{full}' names a '{header.Provider}' memory that keeps itself (id '{memoryId}'), which is never logged, yet a memory log lies beside it.");
        }

        var stopwatch = Stopwatch.StartNew();
        var classifier = CacheClassifier.LoadWithMemory(full, backbone, load, h =>
        {
            if (CacheProviderSelector.Find([.. load.Providers], h.Provider) is not IDurableCacheMemoryFactory factory)
            {
                throw new CacheFileException(full, CacheFileProblem.UnknownProvider,
                    $"its keys live in a '{h.Provider}' memory (id '{memoryId}'), but that provider's factory cannot reopen a memory by id.");
            }

            IDurableCacheMemory memory;
            try
            {
                memory = factory.Reopen(memoryId);
            }
            catch (Exception e) when (e is not (OperationCanceledException or OutOfMemoryException))
            {
                throw new InvalidOperationException($"'{full}' keeps its keys in the '{h.Provider}' memory '{memoryId}', which cannot be reopened: {e.Message}", e);
            }

            if (memory.Count < h.Count)
            {
                memory.Dispose();
                throw new CacheFileException(full, CacheFileProblem.Mismatch,
                    $"the file last recorded {h.Count} keys in its '{h.Provider}' memory '{memoryId}', which now holds {memory.Count}: keys were lost.");
            }

            return memory;
        });
        try
        {
            var self = (IDurableCacheMemory)classifier.Memory;
            CheckPersists(self, options, full);
            var recovery = new DurableCacheRecovery(header.Count, NoLog, self.Count - header.Count, 0);
            logger.LogInformation(
                "Opened {Path}: reopened its '{Provider}' memory '{Id}' with {Keys} keys ({Recorded} when the file was written) in {Seconds:0.00} s",
                full, header.Provider, memoryId, self.Count, header.Count, stopwatch.Elapsed.TotalSeconds);
            return new DurableCacheClassifier(full, classifier, null, header.Metadata, header.CreatedUtc, header.Count, recovery, options, logger);
        }
        catch
        {
            classifier.Dispose();
            throw;
        }
    }

    private static readonly MemoryLogRecovery NoLog = new(0, 0, 0, 0, null);

    private static void CheckPersists(IDurableCacheMemory memory, DurableCacheOptions options, string path)
    {
        if (!memory.PersistsAdds && !options.AllowNonDurableMemory)
        {
            throw new InvalidOperationException(
                $"The '{memory.Provider}' memory '{memory.DurableId}' of '{path}' does not persist its adds (for Orleans: the silos have no " +
                "Cache:Orleans:StateDirectory), so an acknowledged add could be lost. Give the silos a state folder, or allow non-durable adds " +
                "(Serve:Durability:AllowNonDurableMemory=true).");
        }
    }

    /// <inheritdoc cref="CacheClassifier.Classify"/>
    public CacheOutputs Classify(Tensor images) => _classifier.Classify(images);

    /// <inheritdoc cref="CacheClassifier.Predict"/>
    public Tensor Predict(Tensor images) => _classifier.Predict(images);

    /// <inheritdoc cref="CacheClassifier.Features"/>
    public (Tensor Keys, Tensor NetworkProbabilities) Features(Tensor images) => _classifier.Features(images);

    /// <summary>
    /// Adds images <c>[n, C, H, W]</c> with labels <c>[n]</c>: their keys are computed here, then logged (group commit) and added to
    /// the memory; the task completes once they are durable. Invalid input fails before anything is written.
    /// </summary>
    /// <exception cref="ArgumentException">Bad shapes, labels outside <c>[0, ClassCount)</c>, or non-finite activations.</exception>
    /// <exception cref="InvalidOperationException">The classifier is faulted (<see cref="Fault"/>) or closing.</exception>
    public async Task<DurableAddResult> AddAsync(Tensor images, Tensor labels, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(images);
        ArgumentNullException.ThrowIfNull(labels);
        float[] keys;
        int[] rows;
        using (var scope = NewDisposeScope())
        {
            if (labels.dim() != 1 || images.dim() != 4 || labels.shape[0] != images.shape[0])
            {
                throw new ArgumentException(
                    $"labels has shape [{string.Join(", ", labels.shape)}]; expected one label per image ([{(images.dim() > 0 ? images.shape[0] : 0)}]).",
                    nameof(labels));
            }

            rows = CacheInputs.CheckedLabels(labels, ClassCount).to_type(ScalarType.Int32).data<int>().ToArray();
            var (k, _) = _classifier.Features(images);
            keys = k.contiguous().data<float>().ToArray();
        }

        return await AddKeysAsync(keys, rows, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Adds ready-made keys (row-major <c>[n × Dimension]</c>, L2-normalised as the recipe makes them) with labels: logged (group
    /// commit), added to the memory, acknowledged once durable. The arrays are not retained after the task completes.
    /// </summary>
    public async Task<DurableAddResult> AddKeysAsync(float[] keys, int[] labels, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(keys);
        ArgumentNullException.ThrowIfNull(labels);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (labels.Length == 0 || (long)labels.Length * Dimension != keys.Length)
        {
            throw new ArgumentException($"{keys.Length} key values and {labels.Length} labels: expected labels.Length × {Dimension} key values, at least one row.", nameof(keys));
        }

        for (var i = 0; i < labels.Length; i++)
        {
            if ((uint)labels[i] >= (uint)ClassCount)
            {
                throw new ArgumentException($"Row {i} has label {labels[i]}, outside [0, {ClassCount}); nothing was added.", nameof(labels));
            }
        }

        if (Array.Exists(keys, v => !float.IsFinite(v)))
        {
            throw new ArgumentException("The keys hold a non-finite value (NaN or ±∞); nothing was added.", nameof(keys));
        }

        if (Fault is { } fault)
        {
            throw new InvalidOperationException("Adds are refused: " + fault.Message, fault);
        }

        var pending = new PendingAdd(keys, labels);
        try
        {
            await _pending.Writer.WriteAsync(pending, cancellationToken).ConfigureAwait(false);
        }
        catch (ChannelClosedException e)
        {
            throw new InvalidOperationException("The durable cache is closing; the add was not taken.", e);
        }

        return await pending.Done.Task.ConfigureAwait(false);
    }

    /// <summary>
    /// Takes a snapshot now: starts a new log segment, saves the memory to <see cref="Path"/> (atomically) and deletes the segments
    /// it made redundant. One snapshot runs at a time; adds and queries go on meanwhile.
    /// </summary>
    public async Task SnapshotAsync(CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        await _snapshotGate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await Task.Run(() => SnapshotNow(cancellationToken), cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _snapshotGate.Release();
        }
    }

    /// <summary>Stops taking adds, commits the queued ones, takes the last snapshot (<see cref="DurableCacheOptions.SnapshotOnDispose"/>) and closes.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _pending.Writer.TryComplete();
        await _committer.ConfigureAwait(false);
        await _stopping.CancelAsync().ConfigureAwait(false);
        await _snapshotter.ConfigureAwait(false);
        try
        {
            if (_options.SnapshotOnDispose && Fault is null && Count != Interlocked.Read(ref _lastSnapshotKeys))
            {
                await _snapshotGate.WaitAsync().ConfigureAwait(false);
                try
                {
                    SnapshotNow(CancellationToken.None);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException or NotSupportedException)
                {
                    _logger.LogWarning(e, "The last snapshot of {Path} failed; the log (or the memory that keeps itself) still holds every add", Path);
                }
            }
        }
        finally
        {
            _final = Statistics;
            _log?.Dispose();
            _classifier.Dispose();
            _stopping.Dispose();
            _snapshotGate.Dispose();
            _snapshotWanted.Dispose();
        }
    }

    /// <summary>As <see cref="DisposeAsync"/>, blocking.</summary>
    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();

    private static DurableCacheOptions Checked(DurableCacheOptions? options)
    {
        options ??= new DurableCacheOptions();
        var problems = options.Validate();
        return problems.Count == 0 ? options : throw new ArgumentException("Invalid durable cache options: " + string.Join(" ", problems), nameof(options));
    }

    /// <summary>
    /// Deletes the temporary files of snapshots a crash interrupted (<c>.NAME.RANDOM.tmp</c> beside the cache file, as
    /// <see cref="CacheFile.Save"/> names them): the cache file and its log hold everything, and one process serves a cache at a time.
    /// </summary>
    private static void DeleteInterruptedSnapshots(string path, ILogger logger)
    {
        var folder = System.IO.Path.GetDirectoryName(path)!;
        foreach (var temp in Directory.EnumerateFiles(folder, $".{System.IO.Path.GetFileName(path)}.*.tmp"))
        {
            try
            {
                File.Delete(temp);
                logger.LogWarning("Deleted {File}, the temporary file of a snapshot that was interrupted", temp);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                logger.LogWarning(e, "Could not delete {File}, the temporary file of an interrupted snapshot", temp);
            }
        }
    }

    private static MemoryLogOptions LogOptions(DurableCacheOptions options) => new() { FlushToDisk = options.FlushToDisk };

    private void SnapshotNow(CancellationToken cancellationToken)
    {
        var stopwatch = Stopwatch.StartNew();
        if (_log is null)
        {
            CompactSelf(_self!, stopwatch, cancellationToken);
            return;
        }

        int segment;
        lock (_commitGate)
        {
            segment = _log.Rotate(); // every record before it is in the memory, so in the snapshot below
        }

        var metadata = new Dictionary<string, string>(_metadata, StringComparer.Ordinal)
        {
            [LogSegmentKey] = segment.ToString(CultureInfo.InvariantCulture),
        };
        var header = _classifier.Save(Path, metadata, cancellationToken);
        MemoryLog.FlushFolder(System.IO.Path.GetDirectoryName(Path)!); // the rename is durable before the segments it replaces go
        _log.DeleteSegmentsBefore(segment);
        Interlocked.Exchange(ref _lastSnapshotKeys, header.Count);
        Interlocked.Exchange(ref _lastSnapshotTicks, header.CreatedUtc.Ticks);
        Interlocked.Increment(ref _snapshots);
        _logger.LogInformation("Snapshot of {Keys} keys to {Path} in {Seconds:0.00} s", header.Count, Path, stopwatch.Elapsed.TotalSeconds);
    }

    /// <summary>The snapshot of a memory that keeps itself: compact it, then rewrite the cache file with its key count.</summary>
    private void CompactSelf(IDurableCacheMemory self, Stopwatch stopwatch, CancellationToken cancellationToken)
    {
        if (!self.PersistsAdds)
        {
            return; // nothing persisted to compact (AllowNonDurableMemory)
        }

        try
        {
            self.Compact();
        }
        catch (Exception e) when (e is not (OperationCanceledException or OutOfMemoryException or InvalidOperationException or NotSupportedException or IOException))
        {
            throw new InvalidOperationException($"Compacting the '{self.Provider}' memory '{self.DurableId}' failed: {e.Message}", e);
        }

        var header = _classifier.Save(Path, _metadata, cancellationToken);
        MemoryLog.FlushFolder(System.IO.Path.GetDirectoryName(Path)!);
        Interlocked.Exchange(ref _lastSnapshotKeys, header.Count);
        Interlocked.Exchange(ref _lastSnapshotTicks, header.CreatedUtc.Ticks);
        Interlocked.Increment(ref _snapshots);
        _logger.LogInformation("Compacted the '{Provider}' memory of {Path} at {Keys} keys in {Seconds:0.00} s", self.Provider, Path, header.Count, stopwatch.Elapsed.TotalSeconds);
    }

    private async Task CommitLoopAsync()
    {
        var reader = _pending.Reader;
        var batch = new List<PendingAdd>();
        while (await reader.WaitToReadAsync().ConfigureAwait(false))
        {
            batch.Clear();
            var rows = 0;
            while (rows < _options.MaxCommitRows && reader.TryRead(out var next))
            {
                batch.Add(next);
                rows += next.Labels.Length;
            }

            Commit(batch, rows);
            if (_options.SnapshotLogBytes > 0 && _log is not null && _log.Bytes > _options.SnapshotLogBytes)
            {
                WantSnapshot();
            }
        }
    }

    private void WantSnapshot()
    {
        try
        {
            if (_snapshotWanted.CurrentCount == 0)
            {
                _snapshotWanted.Release();
            }
        }
        catch (SemaphoreFullException)
        {
            // Already wanted.
        }
    }

    private void Commit(List<PendingAdd> batch, int rows)
    {
        if (Fault is { } fault)
        {
            Fail(batch, new InvalidOperationException("Adds are refused: " + fault.Message, fault));
            return;
        }

        var results = new DurableAddResult[batch.Count];
        lock (_commitGate)
        {
            var offset = _classifier.Count;
            var entries = new MemoryLogEntry[batch.Count];
            for (var i = 0; i < batch.Count; i++)
            {
                entries[i] = new MemoryLogEntry(offset, batch[i].Labels, batch[i].Keys);
                offset += batch[i].Labels.Length;
            }

            try
            {
                _log?.Append(entries);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or InvalidOperationException)
            {
                _logger.LogError(e, "A group commit of {Adds} adds ({Rows} rows) could not be written to the log; they were not acknowledged", batch.Count, rows);
                Fail(batch, e);
                return;
            }

            try
            {
                ApplyRows(_classifier.Memory, entries, rows);
            }
            catch (Exception e) when (_self is not null && e is not InvalidOperationException)
            {
                // A memory that keeps itself added nothing (its contract): the adds fail, later ones may succeed.
                _logger.LogError(e, "A group commit of {Adds} adds ({Rows} rows) could not be added to the '{Provider}' memory; they were not acknowledged",
                    batch.Count, rows, _self.Provider);
                Fail(batch, e);
                return;
            }
            catch (Exception e) when (_self is not null)
            {
                var error = new InvalidOperationException(
                    $"whether the '{_self.Provider}' memory '{_self.DurableId}' kept a commit is unknown ({e.Message}); reopen the cache to find out.", e);
                Volatile.Write(ref _fault, error);
                _logger.LogError(e, "A group commit may or may not have reached the memory; adds are refused until the cache is reopened");
                Fail(batch, error);
                return;
            }
            catch (Exception e)
            {
                // The log holds rows the memory lacks: further offsets would be wrong. Reopening replays them.
                var error = new InvalidOperationException($"a commit reached the log but not the memory ({e.Message}); reopen the cache to replay it.", e);
                Volatile.Write(ref _fault, error);
                _logger.LogError(e, "A group commit was logged but could not be added to the memory; adds are refused until the cache is reopened");
                Fail(batch, error);
                return;
            }

            var count = _classifier.Count;
            for (var i = 0; i < batch.Count; i++)
            {
                results[i] = new DurableAddResult(entries[i].Offset, entries[i].Count, count);
            }
        }

        Interlocked.Add(ref _addedKeys, rows);
        Interlocked.Add(ref _adds, batch.Count);
        Interlocked.Increment(ref _commits);
        for (var i = 0; i < batch.Count; i++)
        {
            batch[i].Done.TrySetResult(results[i]);
        }
    }

    private static void Fail(List<PendingAdd> batch, Exception error)
    {
        foreach (var add in batch)
        {
            add.Done.TrySetException(error);
        }
    }

    /// <summary>Adds log entries to a memory as one add (all rows or none).</summary>
    private static void ApplyRows(ICacheMemory memory, IReadOnlyList<MemoryLogEntry> entries, int rows)
    {
        using var scope = NewDisposeScope();
        var keys = new float[(long)rows * memory.Dimension];
        var labels = new int[rows];
        var at = 0;
        foreach (var entry in entries)
        {
            entry.Keys.CopyTo(keys, (long)at * memory.Dimension);
            entry.Labels.CopyTo(labels, at);
            at += entry.Count;
        }

        memory.Add(tensor(keys, new long[] { rows, memory.Dimension }), tensor(labels));
    }

    private async Task SnapshotLoopAsync()
    {
        var interval = _options.SnapshotInterval;
        var periodic = interval > TimeSpan.Zero && interval != Timeout.InfiniteTimeSpan;
        var token = _stopping.Token;
        while (!token.IsCancellationRequested)
        {
            try
            {
                var wait = Timeout.InfiniteTimeSpan;
                if (periodic)
                {
                    var due = new DateTime(Interlocked.Read(ref _lastSnapshotTicks), DateTimeKind.Utc) + interval - DateTime.UtcNow;
                    wait = due < TimeSpan.Zero ? TimeSpan.Zero : due;
                }

                var wanted = await _snapshotWanted.WaitAsync(wait, token).ConfigureAwait(false);
                if (!wanted && Count == Interlocked.Read(ref _lastSnapshotKeys))
                {
                    Interlocked.Exchange(ref _lastSnapshotTicks, DateTime.UtcNow.Ticks); // nothing new: wait another interval
                    continue;
                }

                await SnapshotAsync(token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (token.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or InvalidOperationException or NotSupportedException)
            {
                Interlocked.Increment(ref _snapshotFailures);
                _logger.LogWarning(e, "A snapshot of {Path} failed; the log still holds every add, the next try is in {Interval}", Path, interval);
                try
                {
                    await Task.Delay(periodic ? interval : TimeSpan.FromSeconds(30), token).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
            }
        }
    }

    private sealed class PendingAdd(float[] keys, int[] labels)
    {
        public float[] Keys { get; } = keys;

        public int[] Labels { get; } = labels;

        public TaskCompletionSource<DurableAddResult> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>Replays log records over a snapshot of <c>snapshotKeys</c> keys, in batches.</summary>
    private sealed class Replay(CacheClassifier classifier, long snapshotKeys, string logPath, bool adopt)
    {
        private readonly List<MemoryLogEntry> _batch = [];
        private int _rows;
        private bool _first = true;

        public long Replayed { get; private set; }

        public long Skipped { get; private set; }

        public void Take(MemoryLogEntry entry)
        {
            if (_first && adopt && entry.Offset != snapshotKeys)
            {
                throw new MemoryLogException(logPath,
                    $"the snapshot records no log id and holds {snapshotKeys} keys, but the log starts at key {entry.Offset}: it is not this snapshot's log.");
            }

            _first = false;
            var have = snapshotKeys + Replayed + _rows;
            if (entry.End <= snapshotKeys)
            {
                Skipped += entry.Count;
                return;
            }

            if (entry.Offset != have)
            {
                throw new MemoryLogException(logPath, entry.Offset < have
                    ? $"a record covers keys {entry.Offset}–{entry.End - 1}, across the snapshot's end at {snapshotKeys}: the snapshot and the log disagree."
                    : $"the log continues at key {entry.Offset}, but the snapshot and the log before it hold only {have} keys: records are missing.");
            }

            _batch.Add(entry);
            _rows += entry.Count;
            if (_rows >= ReplayBatchRows)
            {
                Flush();
            }
        }

        public void Flush()
        {
            if (_rows == 0)
            {
                return;
            }

            ApplyRows(classifier.Memory, _batch, _rows);
            Replayed += _rows;
            _batch.Clear();
            _rows = 0;
        }
    }
}
