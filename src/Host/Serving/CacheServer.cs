using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Threading.RateLimiting;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Http.Json;
using Microsoft.AspNetCore.OpenApi;
using Microsoft.AspNetCore.RateLimiting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.OpenApi;
using OpenTelemetry.Metrics;
using ScalableCache.Core;

namespace ScalableCache.Host.Serving;

/// <summary>Facts about the served classifier that the durable cache does not know itself.</summary>
/// <param name="ClassNames">Class names, index = label.</param>
/// <param name="Version">The server's version.</param>
internal sealed record ServeFacts(IReadOnlyList<string> ClassNames, string Version);

/// <summary>
/// The HTTP face of a <see cref="DurableCacheClassifier"/> (ASP.NET Core minimal APIs): <c>POST /v1/predict</c>, <c>POST /v1/memory</c>,
/// <c>GET /v1/health</c>, <c>GET /v1/info</c>, Prometheus metrics at <c>/metrics</c>, the OpenAPI document at <c>/openapi/v1.json</c>.
/// Bad requests are 400 problem details naming the field (415 for a media type, 413 for a body over the limit); overload is 503 with
/// <c>Retry-After</c>; an unexpected failure is a 500 problem, never a crash.
/// </summary>
internal sealed class CacheServer : IAsyncDisposable
{
    /// <summary>The rate limiter policy of the image endpoints.</summary>
    internal const string LimiterPolicy = "serve";
    private readonly DurableCacheClassifier _cache;
    private readonly ServeFacts _facts;
    private readonly ServeOptions _options;
    private readonly ServeMetrics _metrics;
    private readonly InferenceQueue _queue;
    private readonly ServeRequestReader _reader;
    private readonly DateTime _started = DateTime.UtcNow;

    private CacheServer(DurableCacheClassifier cache, ServeFacts facts, ServeOptions options, ILoggerFactory loggers)
    {
        _cache = cache;
        _facts = facts;
        _options = options;
        _metrics = new ServeMetrics(cache);
        _queue = new InferenceQueue(cache, options.MaxBatchImages, options.MaxConcurrentRequests + options.QueueLimit, _metrics);
        _reader = new ServeRequestReader(cache.Recipe.InputShape, facts.ClassNames, options.MaxImagesPerRequest);
        App = Build(loggers);
    }

    /// <summary>The web application (started by <see cref="StartAsync"/>).</summary>
    public WebApplication App { get; }

    /// <summary>The addresses the server listens on, once started (with the real port where <c>:0</c> was asked).</summary>
    public IReadOnlyList<string> Addresses =>
        [.. App.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses ?? []];

    /// <summary>Builds the server for <paramref name="cache"/> (not owned: the caller disposes it after this server).</summary>
    public static CacheServer Create(DurableCacheClassifier cache, ServeFacts facts, ServeOptions options, ILoggerFactory loggers)
    {
        ArgumentNullException.ThrowIfNull(cache);
        ArgumentNullException.ThrowIfNull(facts);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(loggers);
        var problems = options.Validate();
        if (problems.Count > 0)
        {
            throw new ArgumentException("Invalid Serve settings: " + string.Join(" ", problems), nameof(options));
        }

        return new CacheServer(cache, facts, options, loggers);
    }

    /// <summary>Starts listening.</summary>
    public Task StartAsync(CancellationToken cancellationToken) => App.StartAsync(cancellationToken);

    /// <summary>Stops listening after the requests in flight (the host's shutdown timeout), then the inference thread.</summary>
    public async ValueTask DisposeAsync()
    {
        try
        {
            await App.StopAsync(CancellationToken.None).ConfigureAwait(false);
        }
        finally
        {
            await App.DisposeAsync().ConfigureAwait(false);
            _queue.Dispose();
            _metrics.Dispose();
        }
    }

    private WebApplication Build(ILoggerFactory loggers)
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions
        {
            ApplicationName = "scache",
            ContentRootPath = AppContext.BaseDirectory,
            Args = [],
        });
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(loggers);
        builder.Host.UseConsoleLifetime(o => o.SuppressStatusMessages = true);
        builder.WebHost.UseUrls([.. _options.Urls.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)]);
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            k.Limits.MaxRequestBodySize = _options.MaxRequestBytes;
        });
        builder.Services.Configure<FormOptions>(f =>
        {
            f.MultipartBodyLengthLimit = _options.MaxRequestBytes;
            f.ValueCountLimit = 4 * _options.MaxImagesPerRequest;
        });
        builder.Services.ConfigureHttpJsonOptions(j => j.SerializerOptions.PropertyNamingPolicy = JsonNamingPolicy.CamelCase);
        builder.Services.AddProblemDetails();
        builder.Services.AddRateLimiter(limits =>
        {
            limits.RejectionStatusCode = StatusCodes.Status503ServiceUnavailable;
            limits.AddConcurrencyLimiter(LimiterPolicy, l =>
            {
                l.PermitLimit = _options.MaxConcurrentRequests;
                l.QueueLimit = _options.QueueLimit;
                l.QueueProcessingOrder = QueueProcessingOrder.OldestFirst;
            });
            limits.OnRejected = (context, _) =>
            {
                _metrics.Rejected("concurrency");
                return new ValueTask(Busy(context.HttpContext, $"More than {_options.MaxConcurrentRequests + _options.QueueLimit} requests are in flight or queued; retry later.")
                    .ExecuteAsync(context.HttpContext));
            };
        });
        builder.Services.AddOpenApi("v1", o =>
        {
            o.AddDocumentTransformer((document, _, _) =>
            {
                document.Info = new OpenApiInfo
                {
                    Title = "scache serve",
                    Version = _facts.Version,
                    Description = "A cached image classifier (Orhan 2018) whose labelled memory grows while it runs. Adds are durable when acknowledged.",
                };
                return Task.CompletedTask;
            });
            o.AddOperationTransformer(DescribeImageBodies);
        });
        var metrics = builder.Services.AddOpenTelemetry().WithMetrics(m =>
        {
            m.AddMeter(ServeMetrics.MeterName, "Microsoft.AspNetCore.Hosting", "Microsoft.AspNetCore.Server.Kestrel", "Microsoft.AspNetCore.RateLimiting");
            m.AddPrometheusExporter();
            if (!string.IsNullOrWhiteSpace(_options.OtlpEndpoint))
            {
                m.AddOtlpExporter(e => e.Endpoint = new Uri(_options.OtlpEndpoint));
            }
        });
        _ = metrics;

        var app = builder.Build();
        app.UseExceptionHandler();
        app.UseStatusCodePages();
        app.UseRateLimiter();

        app.MapPost("/v1/predict", Task<IResult> (HttpContext context) => Serve(context, "predict", async () =>
            {
                var batch = await _reader.ReadAsync(context.Request, labelled: false, context.RequestAborted).ConfigureAwait(false);
                _metrics.Images("predict", batch.Count);
                var answers = await _queue.PredictAsync(batch).ConfigureAwait(false);
                return TypedResults.Ok(ToResponse(answers));
            }))
            .WithName("Predict")
            .WithSummary("Classify images: per image the mixed probabilities, the network's and the cache's, and the predicted class.")
            .Produces<PredictResponse>()
            .AcceptsImages();

        app.MapPost("/v1/memory", Task<IResult> (HttpContext context) => Serve(context, "memory", async () =>
            {
                var batch = await _reader.ReadAsync(context.Request, labelled: true, context.RequestAborted).ConfigureAwait(false);
                _metrics.Images("memory", batch.Count);
                var keys = await _queue.KeysAsync(batch).ConfigureAwait(false);
                var added = await _cache.AddKeysAsync(keys, batch.Labels!, context.RequestAborted).ConfigureAwait(false);
                return TypedResults.Ok(new MemoryResponse(added.Count, added.FirstKey, added.KeyCount));
            }))
            .WithName("AddToMemory")
            .WithSummary("Add labelled images to the memory; the answer comes once the add is durable (logged and fsynced, or persisted by a memory that keeps itself).")
            .Produces<MemoryResponse>()
            .AcceptsImages();

        app.MapGet("/v1/health", () => _cache.Fault is { } fault
                ? Results.Json(new HealthResponse("unhealthy", _cache.Count, fault.Message), statusCode: StatusCodes.Status503ServiceUnavailable)
                : Results.Ok(new HealthResponse("healthy", _cache.Count)))
            .WithName("Health")
            .WithSummary("Liveness and readiness: healthy while adds are accepted.")
            .Produces<HealthResponse>()
            .Produces<HealthResponse>(StatusCodes.Status503ServiceUnavailable);

        app.MapGet("/v1/info", () => TypedResults.Ok(Info()))
            .WithName("Info")
            .WithSummary("The model, layers, provider, θ, λ, key count, snapshot, log and version.")
            .Produces<InfoResponse>();

        app.MapPrometheusScrapingEndpoint("/metrics");
        app.MapOpenApi("/openapi/{documentName}.json");
        return app;
    }

    private async Task<IResult> Serve(HttpContext context, string endpoint, Func<Task<IResult>> work)
    {
        var stopwatch = Stopwatch.StartNew();
        IResult result;
        try
        {
            result = await work().ConfigureAwait(false);
        }
        catch (RequestProblemException e)
        {
            result = e.Status == StatusCodes.Status400BadRequest
                ? TypedResults.ValidationProblem(new Dictionary<string, string[]> { [e.Field] = [e.Detail] }, detail: e.Message, title: "The request is invalid.")
                : TypedResults.Problem(e.Message, statusCode: e.Status, title: e.Status == StatusCodes.Status413PayloadTooLarge
                    ? "The request body is too large." : "The media type is not accepted.", extensions: new Dictionary<string, object?> { ["field"] = e.Field });
        }
        catch (ServerBusyException e)
        {
            _metrics.Rejected("queue");
            result = Busy(context, e.Message);
        }
        catch (InvalidOperationException e) when (e.TargetSite?.DeclaringType?.Namespace?.StartsWith("ScalableCache", StringComparison.Ordinal) == true)
        {
            _metrics.Rejected("memory");
            result = Busy(context, e.Message); // faulted or closing durable cache
        }
        catch (ArgumentException e) when (e.TargetSite?.DeclaringType?.Namespace?.StartsWith("ScalableCache", StringComparison.Ordinal) == true)
        {
            // The model or memory refused the input (e.g. a non-finite activation): the images are at fault.
            result = TypedResults.ValidationProblem(new Dictionary<string, string[]> { ["images"] = [e.Message] }, title: "The request is invalid.");
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            result = TypedResults.StatusCode(499);
        }

        var status = result is IStatusCodeHttpResult { StatusCode: { } code } ? code : StatusCodes.Status200OK;
        _metrics.Request(endpoint, status, stopwatch.Elapsed.TotalSeconds);
        return result;
    }

    private ProblemHttpResult Busy(HttpContext context, string detail)
    {
        context.Response.Headers.RetryAfter = _options.RetryAfterSeconds.ToString(CultureInfo.InvariantCulture);
        return TypedResults.Problem(detail, statusCode: StatusCodes.Status503ServiceUnavailable, title: "The server is overloaded.");
    }

    private PredictResponse ToResponse(PredictAnswers answers)
    {
        var c = answers.ClassCount;
        var predictions = new ImagePrediction[answers.Count];
        for (var i = 0; i < answers.Count; i++)
        {
            var k = answers.Classes[i];
            predictions[i] = new ImagePrediction(
                k, k < _facts.ClassNames.Count ? _facts.ClassNames[(int)k] : k.ToString(CultureInfo.InvariantCulture),
                answers.Probabilities[(i * c)..((i + 1) * c)], answers.Network[(i * c)..((i + 1) * c)], answers.Memory[(i * c)..((i + 1) * c)]);
        }

        return new PredictResponse(predictions, answers.Keys);
    }

    private InfoResponse Info()
    {
        var stats = _cache.Statistics;
        var recovery = _cache.Recovery;
        var shape = _cache.Recipe.InputShape;
        return new InfoResponse(
            _cache.Model?.Name ?? "", _cache.Model?.CheckpointSha256, _cache.Model?.CheckpointFile, _cache.Recipe.Layers, _cache.Recipe.Describe(),
            new InputInfo(shape.Channels, shape.Height, shape.Width), _cache.Provider, _cache.Theta, _cache.Lambda, _cache.Count, _cache.Dimension,
            _facts.ClassNames, _facts.Version, _started,
            new SnapshotInfo(_cache.Path, stats.LastSnapshotUtc, stats.LastSnapshotKeys, (DateTime.UtcNow - stats.LastSnapshotUtc).TotalSeconds, stats.Snapshots, stats.SnapshotFailures),
            new LogInfo(_cache.LogPath, stats.LogBytes, stats.Commits, stats.Adds, stats.AddedKeys),
            new RecoveryInfo(recovery.SnapshotKeys, recovery.ReplayedKeys, recovery.SkippedKeys, recovery.Log.Records, recovery.Log.DroppedBytes, recovery.Log.DropReason),
            new DurabilityInfo(_cache.MemoryId is null ? "log" : "memory", _cache.AddsPersisted, _cache.MemoryId));
    }

    /// <summary>Documents every accepted body of the two image endpoints, beside the JSON one the endpoint declares.</summary>
    private static Task DescribeImageBodies(OpenApiOperation operation, OpenApiOperationTransformerContext context, CancellationToken cancellationToken)
    {
        var path = context.Description.RelativePath;
        if (path is not ("v1/predict" or "v1/memory") || operation.RequestBody is not OpenApiRequestBody body)
        {
            return Task.CompletedTask;
        }

        var memory = path == "v1/memory";
        body.Required = true;
        body.Description =
            "Images of the model's input size, in one of: application/json ({\"images\": [base64 PNG/JPEG]} or {\"tensor\": {\"shape\": [n, C, H, W], " +
            "\"data\": [floats in [0, 1]]}}" + (memory ? ", with \"labels\": [class index or name per image]" : "") + "); " +
            $"{ServeRequestReader.TensorMediaType} (\"SCT1\", uint32 n, C, H, W little-endian, n·C·H·W float32 in [0, 1]" +
            (memory ? ", n int32 labels" : "") + "); image/png or image/jpeg (one image" + (memory ? "; ?label=NAME or index" : "") + "); " +
            "multipart/form-data (image files" + (memory ? ", and labels fields in order" : "") + ").";
        body.Content ??= new Dictionary<string, OpenApiMediaType>();
        var binary = new OpenApiSchema { Type = JsonSchemaType.String, Format = "binary" };
        body.Content[ServeRequestReader.TensorMediaType] = new OpenApiMediaType { Schema = binary };
        body.Content["image/png"] = new OpenApiMediaType { Schema = binary };
        body.Content["image/jpeg"] = new OpenApiMediaType { Schema = binary };
        var form = new OpenApiSchema
        {
            Type = JsonSchemaType.Object,
            Properties = new Dictionary<string, IOpenApiSchema>
            {
                ["images"] = new OpenApiSchema { Type = JsonSchemaType.Array, Items = binary },
            },
        };
        if (memory)
        {
            form.Properties["labels"] = new OpenApiSchema { Type = JsonSchemaType.Array, Items = new OpenApiSchema { Type = JsonSchemaType.String } };
        }

        body.Content["multipart/form-data"] = new OpenApiMediaType { Schema = form };
        return Task.CompletedTask;
    }
}

/// <summary>The metadata the two image endpoints share: the concurrency limit, every accepted media type, their problem answers.</summary>
internal static class ImageEndpointConventions
{
    public static RouteHandlerBuilder AcceptsImages(this RouteHandlerBuilder endpoint) => endpoint
        .RequireRateLimiting(CacheServer.LimiterPolicy)
        .Accepts<ImagesJsonBody>(ServeRequestReader.MediaTypes[0], [.. ServeRequestReader.MediaTypes.Skip(1)])
        .ProducesValidationProblem()
        .ProducesProblem(StatusCodes.Status413PayloadTooLarge)
        .ProducesProblem(StatusCodes.Status415UnsupportedMediaType)
        .ProducesProblem(StatusCodes.Status503ServiceUnavailable);
}
