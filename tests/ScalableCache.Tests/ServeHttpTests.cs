using System.Net;
using System.Text.Json;
using Microsoft.Extensions.Logging.Abstractions;
using ScalableCache.Core;
using ScalableCache.Core.Models;
using ScalableCache.Exact;
using ScalableCache.Host.Serving;
using TorchSharp;
using Xunit;
using static ScalableCache.Tests.ServeTestSupport;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>
/// The HTTP service in-process on a loopback port, over a tiny 3-channel 8×8 network: every documented body form, durable adds,
/// health, info, OpenAPI, metrics, 400s naming the field, 413, 415, and 503 under overload.
/// </summary>
public sealed class ServeHttpTests : IAsyncLifetime
{
    private const int Side = 8;
    private static readonly string[] Classes = ["zero", "one", "two", "three"];
    private readonly PersistenceTempFolder _folder = new();
    private readonly nn.Module<Tensor, Tensor> _net;
    private DurableCacheClassifier _cache = null!;
    private CacheServer _server = null!;
    private HttpClient _client = null!;

    public ServeHttpTests()
    {
        torch.manual_seed(5);
        _net = nn.Sequential(
            ("conv", nn.Conv2d(3, 2, 3, padding: 1)),
            ("act", nn.Tanh()),
            ("flat", nn.Flatten()),
            ("fc", nn.Linear(2 * Side * Side, Classes.Length)));
    }

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public async ValueTask InitializeAsync() => await Start(new ServeOptions { Durability = { SnapshotInterval = TimeSpan.Zero } });

    public async ValueTask DisposeAsync()
    {
        _client.Dispose();
        await _server.DisposeAsync();
        await _cache.DisposeAsync();
        _net.Dispose();
        _folder.Dispose();
    }

    [Fact]
    public async Task EveryDocumentedBodyFormGetsTheSameAnswer()
    {
        var (pixels, floats) = Images(3, seed: 1);
        var pngs = Enumerable.Range(0, 3).Select(i => Png(pixels.AsSpan(i * 3 * Side * Side, 3 * Side * Side), Side, Side)).ToList();

        var (status, json) = await Post(_client, "/v1/predict", Json(new { tensor = new { shape = new[] { 3, 3, Side, Side }, data = floats } }), Ct);
        Assert.Equal(HttpStatusCode.OK, status);
        var expected = Predictions(json);
        Assert.Equal(3, expected.Classes.Length);
        var first = json.GetProperty("predictions")[0];
        Assert.Equal(Classes[first.GetProperty("class").GetInt32()], first.GetProperty("label").GetString());
        Assert.Equal(Classes.Length, first.GetProperty("network").GetArrayLength());
        Assert.Equal(Classes.Length, first.GetProperty("memory").GetArrayLength());
        Assert.Equal(20, json.GetProperty("keys").GetInt64());

        (status, json) = await Post(_client, "/v1/predict", TensorBody(floats, 3, 3, Side, Side), Ct);
        Assert.Equal(HttpStatusCode.OK, status);
        AssertSameAnswers(expected, Predictions(json), 1e-5);

        (status, json) = await Post(_client, "/v1/predict", Json(new { images = pngs.Select(Convert.ToBase64String) }), Ct);
        Assert.Equal(HttpStatusCode.OK, status);
        AssertSameAnswers(expected, Predictions(json), 1e-5);

        (status, json) = await Post(_client, "/v1/predict", Form(pngs), Ct);
        Assert.Equal(HttpStatusCode.OK, status);
        AssertSameAnswers(expected, Predictions(json), 1e-5);

        var single = new ByteArrayContent(pngs[1]);
        single.Headers.ContentType = new("image/png");
        (status, json) = await Post(_client, "/v1/predict", single, Ct);
        Assert.Equal(HttpStatusCode.OK, status);
        AssertSameAnswers(([expected.Classes[1]], [expected.Probabilities[1]]), Predictions(json), 1e-5);
    }

    [Fact]
    public async Task AddsAreAcknowledgedWithTheirKeysAndChangeTheAnswers()
    {
        var (pixels, floats) = Images(4, seed: 2);
        var pngs = Enumerable.Range(0, 4).Select(i => Png(pixels.AsSpan(i * 3 * Side * Side, 3 * Side * Side), Side, Side)).ToList();
        var (_, before) = await Post(_client, "/v1/predict", TensorBody(floats, 4, 3, Side, Side), Ct);

        var (status, json) = await Post(_client, "/v1/memory", Json(new { tensor = new { shape = new[] { 2, 3, Side, Side }, data = floats[..(2 * 3 * Side * Side)] }, labels = new object[] { 3, "two" } }), Ct);
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal(2, json.GetProperty("added").GetInt32());
        Assert.Equal(20, json.GetProperty("firstKey").GetInt64());
        Assert.Equal(22, json.GetProperty("keys").GetInt64());

        (status, json) = await Post(_client, "/v1/memory", Form(pngs[2..], ["one", "0"]), Ct);
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal(22, json.GetProperty("firstKey").GetInt64());

        (status, json) = await Post(_client, "/v1/memory", TensorBody(floats[..(3 * Side * Side)], 1, 3, Side, Side, [1]), Ct);
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal(24, json.GetProperty("firstKey").GetInt64());

        var single = new ByteArrayContent(pngs[3]);
        single.Headers.ContentType = new("image/png");
        (status, json) = await Post(_client, "/v1/memory?label=three", single, Ct);
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal(26, json.GetProperty("keys").GetInt64());

        var (_, after) = await Post(_client, "/v1/predict", TensorBody(floats, 4, 3, Side, Side), Ct);
        Assert.NotEqual(Predictions(before).Probabilities[0], Predictions(after).Probabilities[0]);
        Assert.Equal(26, _cache.Count);

        var info = await Get(_client, "/v1/info", Ct);
        Assert.Equal(26, info.GetProperty("keys").GetInt64());
        Assert.Equal("Exact", info.GetProperty("provider").GetString());
        Assert.Equal(30, info.GetProperty("theta").GetDouble());
        Assert.Equal(0.5, info.GetProperty("lambda").GetDouble());
        Assert.Equal(["conv", "fc"], info.GetProperty("layers").EnumerateArray().Select(l => l.GetString()));
        Assert.Equal(Classes, info.GetProperty("classes").EnumerateArray().Select(l => l.GetString()));
        Assert.Equal(4, info.GetProperty("log").GetProperty("adds").GetInt64());
        Assert.Equal("healthy", (await Get(_client, "/v1/health", Ct)).GetProperty("status").GetString());
    }

    public static TheoryData<string, string, string> BadRequests => new()
    {
        { "predict", """{"tensor": {"shape": [1, 3, 4, 8], "data": []}}""", "tensor.shape" },
        { "predict", """{"tensor": {"shape": [1, 3, 8, 8], "data": [1, 2]}}""", "tensor.data" },
        { "predict", """{"images": ["not base64!"]}""", "images[0]" },
        { "predict", """{"images": ["aGVsbG8="]}""", "images[0]" },
        { "predict", """{"images": []}""", "images" },
        { "predict", """{"pictures": []}""", "images" },
        { "predict", """[1, 2]""", "body" },
        { "predict", """{"images": [""", "body" },
        { "memory", """{"tensor": {"shape": [1, 3, 8, 8], "data": [FLOATS]}}""", "labels" },
        { "memory", """{"tensor": {"shape": [1, 3, 8, 8], "data": [FLOATS]}, "labels": ["cat"]}""", "labels[0]" },
        { "memory", """{"tensor": {"shape": [1, 3, 8, 8], "data": [FLOATS]}, "labels": [4]}""", "labels[0]" },
        { "memory", """{"tensor": {"shape": [1, 3, 8, 8], "data": [FLOATS]}, "labels": [1, 2]}""", "labels" },
        { "memory", """{"tensor": {"shape": [1, 3, 8, 8], "data": [FLOATS]}, "labels": [true]}""", "labels[0]" },
    };

    [Theory]
    [MemberData(nameof(BadRequests))]
    public async Task BadInputIsA400ProblemNamingTheField(string endpoint, string body, string field)
    {
        body = body.Replace("FLOATS", string.Join(",", Enumerable.Repeat("0.5", 3 * Side * Side)), StringComparison.Ordinal);
        using var content = new StringContent(body, System.Text.Encoding.UTF8, "application/json");
        var (status, json) = await Post(_client, "/v1/" + endpoint, content, Ct);
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal(400, json.GetProperty("status").GetInt32());
        Assert.True(json.GetProperty("errors").TryGetProperty(field, out _), $"errors name {field}: {json}");
        Assert.Equal(20, _cache.Count);
    }

    [Fact]
    public async Task WrongSizesValuesMediaTypesAndTooLargeBodiesAreRefused()
    {
        var (pixels, floats) = Images(1, seed: 3);
        var big = Png(new byte[3 * 16 * 16], 16, 16);
        var (status, json) = await Post(_client, "/v1/predict", Form([big]), Ct);
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("16×16", json.GetProperty("errors").GetProperty("images[0]")[0].GetString(), StringComparison.Ordinal);

        floats[5] = 1.5f;
        (status, json) = await Post(_client, "/v1/predict", TensorBody(floats, 1, 3, Side, Side), Ct);
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.True(json.GetProperty("errors").TryGetProperty("data[5]", out _));

        (status, json) = await Post(_client, "/v1/predict", TensorBody(floats[..10], 1, 3, Side, Side), Ct);
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.True(json.GetProperty("errors").TryGetProperty("body", out _));

        (status, json) = await Post(_client, "/v1/predict", TensorBody(new float[3 * Side * Side * 9], 9, 3, Side, Side), Ct);
        Assert.Equal(HttpStatusCode.BadRequest, status); // Serve:MaxImagesPerRequest is 8 here
        Assert.Contains("at most 8", json.GetProperty("errors").GetProperty("shape")[0].GetString(), StringComparison.Ordinal);

        using var text = new StringContent("hello", System.Text.Encoding.UTF8, "text/plain");
        (status, _) = await Post(_client, "/v1/predict", text, Ct);
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, status);

        using var huge = new ByteArrayContent(new byte[70_000]);
        huge.Headers.ContentType = new("image/png");
        (status, json) = await Post(_client, "/v1/predict", huge, Ct);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, status);
        Assert.Equal(413, json.GetProperty("status").GetInt32());
        _ = pixels;
    }

    [Fact]
    public async Task OverloadIsA503WithRetryAfterAndTheServerStaysUp()
    {
        await Restart(new ServeOptions { MaxConcurrentRequests = 1, QueueLimit = 0, Durability = { SnapshotInterval = TimeSpan.Zero } });
        var (_, floats) = Images(2, seed: 4);

        // One request holds the only slot while its body trickles in; every other one meanwhile is refused at once.
        var release = new TaskCompletionSource();
        using var stalled = new StalledContent(Json(new { tensor = new { shape = new[] { 2, 3, Side, Side }, data = floats } }), release.Task);
        stalled.Headers.ContentType = new("application/json");
        var slow = _client.PostAsync("/v1/predict", stalled, Ct);
        for (var i = 0; i < 300 && !await HoldsTheSlot(); i++)
        {
            Assert.False(slow.IsCompleted, "the slow request finished before it held the slot");
            await Task.Delay(50, Ct);
        }

        var refused = new List<(HttpStatusCode Status, TimeSpan? RetryAfter, string Body)>();
        for (var i = 0; i < 5; i++)
        {
            using var response = await _client.PostAsync("/v1/predict", TensorBody(floats, 2, 3, Side, Side), Ct);
            refused.Add((response.StatusCode, response.Headers.RetryAfter?.Delta, await response.Content.ReadAsStringAsync(Ct)));
        }

        release.SetResult();
        using var answer = await slow;
        Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
        Assert.All(refused, r =>
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, r.Status);
            Assert.Equal(TimeSpan.FromSeconds(1), r.RetryAfter);
            Assert.Equal(503, JsonDocument.Parse(r.Body).RootElement.GetProperty("status").GetInt32());
        });
        var (status, _) = await Post(_client, "/v1/predict", TensorBody(floats, 2, 3, Side, Side), Ct);
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("healthy", (await Get(_client, "/v1/health", Ct)).GetProperty("status").GetString());
    }

    [Fact]
    public async Task TheOpenApiDocumentAndTheMetricsDescribeTheService()
    {
        var openApi = await Get(_client, "/openapi/v1.json", Ct);
        var paths = openApi.GetProperty("paths");
        foreach (var path in new[] { "/v1/predict", "/v1/memory", "/v1/health", "/v1/info" })
        {
            Assert.True(paths.TryGetProperty(path, out _), path);
        }

        var body = paths.GetProperty("/v1/memory").GetProperty("post").GetProperty("requestBody").GetProperty("content");
        foreach (var type in ServeRequestReader.MediaTypes)
        {
            Assert.True(body.TryGetProperty(type, out _), type);
        }

        var (_, floats) = Images(1, seed: 5);
        await Post(_client, "/v1/predict", TensorBody(floats, 1, 3, Side, Side), Ct);
        var metrics = await _client.GetStringAsync("/metrics", Ct);
        Assert.Contains("scache_memory_keys", metrics, StringComparison.Ordinal);
        Assert.Contains("scache_memory_snapshot_age_seconds", metrics, StringComparison.Ordinal);
        Assert.Contains("scache_serve_request_duration_seconds_bucket", metrics, StringComparison.Ordinal);
        Assert.Contains("http_server_request_duration_seconds_bucket", metrics, StringComparison.Ordinal);
    }

    private async Task Start(ServeOptions options)
    {
        options.Urls = "http://127.0.0.1:0";
        options.MaxImagesPerRequest = 8;
        options.MaxRequestBytes = 64 * 1024;
        using (var scope = NewDisposeScope())
        {
            var memory = new ExactCacheMemory((2 * Side * Side) + Classes.Length, Classes.Length);
            var classifier = new CacheClassifier(_net, new KeyRecipe(["conv", "fc"], InputNormalization.ImageNet, new InputShape(3, Side, Side)), memory, 30, 0.5);
            var (pixels, _) = Images(20, seed: 42);
            classifier.Add(tensor(pixels, [20, 3, Side, Side], ScalarType.Byte), tensor(Enumerable.Range(0, 20).Select(i => (long)(i % Classes.Length)).ToArray()));
            _cache = DurableCacheClassifier.Create(_folder.File($"http-{Guid.NewGuid():N}.scache"), classifier, options.Durability, cancellationToken: Ct);
        }

        _server = CacheServer.Create(_cache, new ServeFacts(Classes, "test"), options, NullLoggerFactory.Instance);
        await _server.StartAsync(Ct);
        _client = Client(Assert.Single(_server.Addresses));
    }

    private async Task Restart(ServeOptions options)
    {
        _client.Dispose();
        await _server.DisposeAsync();
        await _cache.DisposeAsync();
        await Start(options);
    }

    /// <summary>Whether ASP.NET Core's rate limiter reports a request holding a lease (its metric, as /metrics exports it).</summary>
    private async Task<bool> HoldsTheSlot()
    {
        var metrics = await _client.GetStringAsync("/metrics", Ct);
        return metrics.Split('\n').Any(l => l.StartsWith("aspnetcore_rate_limiting_active_request_leases", StringComparison.Ordinal) && l.EndsWith(" 1", StringComparison.Ordinal));
    }

    /// <summary>A body that sends its first bytes, then waits for <paramref name="release"/> before the rest.</summary>
    private sealed class StalledContent(HttpContent inner, Task release) : HttpContent
    {
        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context)
        {
            var bytes = await inner.ReadAsByteArrayAsync();
            await stream.WriteAsync(bytes.AsMemory(0, 10));
            await stream.FlushAsync();
            await release;
            await stream.WriteAsync(bytes.AsMemory(10));
        }

        protected override bool TryComputeLength(out long length)
        {
            length = 0;
            return false;
        }

        protected override void Dispose(bool disposing)
        {
            inner.Dispose();
            base.Dispose(disposing);
        }
    }

    private static (byte[] Pixels, float[] Floats) Images(int n, int seed)
    {
        var random = new Random(seed);
        var pixels = new byte[n * 3 * Side * Side];
        random.NextBytes(pixels);
        return (pixels, [.. pixels.Select(p => p / 255f)]);
    }
}
