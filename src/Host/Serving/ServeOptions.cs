using ScalableCache.Core;

namespace ScalableCache.Host.Serving;

/// <summary>Settings of <c>scache serve</c> (configuration section <c>Serve</c>).</summary>
internal sealed class ServeOptions
{
    public const string SectionName = "Serve";

    /// <summary>Where to listen (semicolon-separated URLs; flag <c>--urls</c>). Loopback by default.</summary>
    public string Urls { get; set; } = "http://127.0.0.1:5080";

    /// <summary>Largest request body, in bytes (larger: 413). Default 16 MiB.</summary>
    public long MaxRequestBytes { get; set; } = 16L << 20;

    /// <summary>Most images in one request (more: 400). Default 256.</summary>
    public int MaxImagesPerRequest { get; set; } = 256;

    /// <summary>Most images one batched forward pass takes from the queued requests. Default 64.</summary>
    public int MaxBatchImages { get; set; } = 64;

    /// <summary>Predict and memory requests served at once; more wait in the queue (<see cref="QueueLimit"/>). Default 64.</summary>
    public int MaxConcurrentRequests { get; set; } = 64;

    /// <summary>Requests that may wait for a slot; beyond that they are refused with 503 at once. Default 256.</summary>
    public int QueueLimit { get; set; } = 256;

    /// <summary>Seconds a 503 asks the client to wait (<c>Retry-After</c>). Default 1.</summary>
    public int RetryAfterSeconds { get; set; } = 1;

    /// <summary>An OTLP endpoint (e.g. <c>http://127.0.0.1:4317</c>) to push metrics to, besides <c>/metrics</c>; none by default.</summary>
    public string? OtlpEndpoint { get; set; }

    /// <summary>Log, snapshot and group-commit settings (section <c>Serve:Durability</c>).</summary>
    public DurableCacheOptions Durability { get; set; } = new();

    /// <summary>The problems with these settings (empty when valid).</summary>
    public IReadOnlyList<string> Validate()
    {
        var problems = new List<string>(Durability.Validate().Select(p => "Serve:Durability:" + p));
        if (string.IsNullOrWhiteSpace(Urls))
        {
            problems.Add("Serve:Urls must name at least one URL.");
        }

        if (MaxRequestBytes < 1024)
        {
            problems.Add($"Serve:MaxRequestBytes must be at least 1024 (got {MaxRequestBytes}).");
        }

        foreach (var (name, value) in new[]
        {
            (nameof(MaxImagesPerRequest), MaxImagesPerRequest), (nameof(MaxBatchImages), MaxBatchImages),
            (nameof(MaxConcurrentRequests), MaxConcurrentRequests), (nameof(RetryAfterSeconds), RetryAfterSeconds),
        })
        {
            if (value < 1)
            {
                problems.Add($"Serve:{name} must be at least 1 (got {value}).");
            }
        }

        if (QueueLimit < 0)
        {
            problems.Add($"Serve:QueueLimit must not be negative (got {QueueLimit}).");
        }

        return problems;
    }
}
