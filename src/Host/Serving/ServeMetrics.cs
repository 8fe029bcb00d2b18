using System.Diagnostics.Metrics;
using ScalableCache.Core;

namespace ScalableCache.Host.Serving;

/// <summary>
/// The server's instruments (meter <see cref="MeterName"/>), exported for Prometheus at <c>/metrics</c> and, when configured, over
/// OTLP. Request counts and latency histograms per route and status come from ASP.NET Core's own <c>http.server.request.duration</c>
/// (meter <c>Microsoft.AspNetCore.Hosting</c>), exported beside these.
/// </summary>
internal sealed class ServeMetrics : IDisposable
{
    /// <summary>The meter's name.</summary>
    public const string MeterName = "ScalableCache.Serve";

    private readonly Meter _meter;
    private readonly Counter<long> _images;
    private readonly Counter<long> _rejected;
    private readonly Histogram<double> _requestSeconds;
    private readonly Histogram<double> _batchSeconds;
    private readonly Histogram<long> _batchImages;

    public ServeMetrics(DurableCacheClassifier cache)
    {
        _meter = new Meter(MeterName, typeof(ServeMetrics).Assembly.GetName().Version?.ToString());
        _images = _meter.CreateCounter<long>("scache.serve.images", "{image}", "Images received, by endpoint.");
        _rejected = _meter.CreateCounter<long>("scache.serve.rejected", "{request}", "Requests refused with 503 (overload), by reason.");
        _requestSeconds = _meter.CreateHistogram<double>("scache.serve.request.duration", "s", "Time to answer a request, by endpoint and outcome.",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] });
        _batchSeconds = _meter.CreateHistogram<double>("scache.serve.batch.duration", "s", "Time of one batched forward pass, by kind (predict, keys).",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5] });
        _batchImages = _meter.CreateHistogram<long>("scache.serve.batch.images", "{image}", "Images in one batched forward pass, by kind.",
            advice: new InstrumentAdvice<long> { HistogramBucketBoundaries = [1, 2, 4, 8, 16, 32, 64, 128, 256] });
        _meter.CreateObservableGauge("scache.memory.keys", () => cache.Count, "{key}", "Keys in the memory.");
        _meter.CreateObservableCounter("scache.memory.adds", () => cache.Statistics.Adds, "{add}", "Adds acknowledged since start.");
        _meter.CreateObservableCounter("scache.memory.added_keys", () => cache.Statistics.AddedKeys, "{key}", "Keys added since start.");
        _meter.CreateObservableCounter("scache.memory.commits", () => cache.Statistics.Commits, "{commit}", "Group commits (one log write and fsync each) since start.");
        _meter.CreateObservableGauge("scache.memory.log.size", () => cache.Statistics.LogBytes, "By", "Bytes in the memory log.");
        _meter.CreateObservableCounter("scache.memory.snapshots", () => cache.Statistics.Snapshots, "{snapshot}", "Snapshots written since start.");
        _meter.CreateObservableCounter("scache.memory.snapshot.failures", () => cache.Statistics.SnapshotFailures, "{snapshot}", "Snapshots that failed since start.");
        _meter.CreateObservableGauge("scache.memory.snapshot.age", () => (DateTime.UtcNow - cache.Statistics.LastSnapshotUtc).TotalSeconds, "s", "Age of the newest snapshot.");
    }

    public void Images(string endpoint, int count) => _images.Add(count, new KeyValuePair<string, object?>("endpoint", endpoint));

    public void Rejected(string reason) => _rejected.Add(1, new KeyValuePair<string, object?>("reason", reason));

    public void Request(string endpoint, int status, double seconds) =>
        _requestSeconds.Record(seconds, new KeyValuePair<string, object?>("endpoint", endpoint), new KeyValuePair<string, object?>("status", status));

    public void Batch(string kind, int images, double seconds)
    {
        var tag = new KeyValuePair<string, object?>("kind", kind);
        _batchSeconds.Record(seconds, tag);
        _batchImages.Record(images, tag);
    }

    public void Dispose() => _meter.Dispose();
}
