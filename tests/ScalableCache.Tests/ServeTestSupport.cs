using System.Buffers.Binary;
using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text.Json;
using SkiaSharp;
using Xunit;

namespace ScalableCache.Tests;

/// <summary>Loopback ports, image encodings and request bodies for the server tests.</summary>
internal static class ServeTestSupport
{
    /// <summary>A loopback port that was free a moment ago.</summary>
    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>A client for <paramref name="baseAddress"/> that never waits long.</summary>
    public static HttpClient Client(string baseAddress) => new() { BaseAddress = new Uri(baseAddress), Timeout = TimeSpan.FromSeconds(60) };

    /// <summary>Polls <c>/v1/health</c> until it answers 200, or <paramref name="exited"/> completes, or 60 s pass.</summary>
    public static async Task WaitHealthy(HttpClient client, Task exited, CancellationToken cancellationToken)
    {
        for (var i = 0; i < 600; i++)
        {
            Assert.False(exited.IsCompleted, "the server exited before it was healthy");
            try
            {
                using var response = await client.GetAsync("/v1/health", cancellationToken);
                if (response.StatusCode == HttpStatusCode.OK)
                {
                    return;
                }
            }
            catch (HttpRequestException)
            {
                // Not listening yet.
            }

            await Task.Delay(100, cancellationToken);
        }

        Assert.Fail("the server did not become healthy within 60 s");
    }

    /// <summary>A PNG of a planar RGB image <c>[3, height, width]</c>.</summary>
    public static byte[] Png(ReadOnlySpan<byte> planar, int width, int height)
    {
        using var bitmap = new SKBitmap(new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Unpremul));
        var pixels = bitmap.GetPixelSpan();
        var plane = width * height;
        for (var p = 0; p < plane; p++)
        {
            pixels[4 * p] = planar[p];
            pixels[(4 * p) + 1] = planar[plane + p];
            pixels[(4 * p) + 2] = planar[(2 * plane) + p];
            pixels[(4 * p) + 3] = 255;
        }

        using var image = SKImage.FromBitmap(bitmap);
        using var data = image.Encode(SKEncodedImageFormat.Png, 100);
        return data.ToArray();
    }

    /// <summary>The binary tensor body (<c>application/x-scache-tensor</c>): "SCT1", n, C, H, W, floats, then labels when given.</summary>
    public static ByteArrayContent TensorBody(float[] values, int n, int c, int h, int w, int[]? labels = null)
    {
        var body = new byte[20 + (4 * values.Length) + (4 * (labels?.Length ?? 0))];
        "SCT1"u8.CopyTo(body);
        int[] dims = [n, c, h, w];
        for (var i = 0; i < 4; i++)
        {
            BinaryPrimitives.WriteInt32LittleEndian(body.AsSpan(4 + (4 * i)), dims[i]);
        }

        for (var i = 0; i < values.Length; i++)
        {
            BinaryPrimitives.WriteSingleLittleEndian(body.AsSpan(20 + (4 * i)), values[i]);
        }

        for (var i = 0; i < (labels?.Length ?? 0); i++)
        {
            BinaryPrimitives.WriteInt32LittleEndian(body.AsSpan(20 + (4 * values.Length) + (4 * i)), labels![i]);
        }

        var content = new ByteArrayContent(body);
        content.Headers.ContentType = new("application/x-scache-tensor");
        return content;
    }

    /// <summary>A multipart form of PNG files (field <c>images</c>) and, when given, <c>labels</c> fields.</summary>
    public static MultipartFormDataContent Form(IEnumerable<byte[]> pngs, IEnumerable<string>? labels = null)
    {
        var form = new MultipartFormDataContent();
        var i = 0;
        foreach (var png in pngs)
        {
            var part = new ByteArrayContent(png);
            part.Headers.ContentType = new("image/png");
            form.Add(part, "images", $"image{i++}.png");
        }

        foreach (var label in labels ?? [])
        {
            form.Add(new StringContent(label), "labels");
        }

        return form;
    }

    /// <summary>A JSON body.</summary>
    public static JsonContent Json(object value) => JsonContent.Create(value);

    /// <summary>Sends and returns the status and the parsed JSON body.</summary>
    public static async Task<(HttpStatusCode Status, JsonElement Body)> Post(HttpClient client, string path, HttpContent content, CancellationToken cancellationToken)
    {
        using var response = await client.PostAsync(path, content, cancellationToken);
        var text = await response.Content.ReadAsStringAsync(cancellationToken);
        using var document = JsonDocument.Parse(text.Length == 0 ? "null" : text);
        return (response.StatusCode, document.RootElement.Clone());
    }

    /// <summary>GETs and returns the parsed JSON body (asserting 200).</summary>
    public static async Task<JsonElement> Get(HttpClient client, string path, CancellationToken cancellationToken)
    {
        var text = await client.GetStringAsync(path, cancellationToken);
        using var document = JsonDocument.Parse(text);
        return document.RootElement.Clone();
    }

    /// <summary>The predicted classes and mixed probabilities of a <c>/v1/predict</c> answer.</summary>
    public static (long[] Classes, float[][] Probabilities) Predictions(JsonElement body)
    {
        var predictions = body.GetProperty("predictions").EnumerateArray().ToList();
        return ([.. predictions.Select(p => p.GetProperty("class").GetInt64())],
            [.. predictions.Select(p => p.GetProperty("probabilities").EnumerateArray().Select(v => v.GetSingle()).ToArray())]);
    }

    /// <summary>Asserts equal classes and probabilities within <paramref name="tolerance"/>.</summary>
    public static void AssertSameAnswers((long[] Classes, float[][] Probabilities) expected, (long[] Classes, float[][] Probabilities) actual, double tolerance)
    {
        Assert.Equal(expected.Classes, actual.Classes);
        for (var i = 0; i < expected.Probabilities.Length; i++)
        {
            for (var c = 0; c < expected.Probabilities[i].Length; c++)
            {
                Assert.True(Math.Abs(expected.Probabilities[i][c] - actual.Probabilities[i][c]) <= tolerance,
                    $"image {i}, class {c}: {expected.Probabilities[i][c]} vs {actual.Probabilities[i][c]}");
            }
        }
    }
}
