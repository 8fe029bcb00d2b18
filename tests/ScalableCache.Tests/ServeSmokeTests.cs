using System.Net;
using ScalableCache.Core.Persistence;
using Xunit;
using static ScalableCache.Tests.ServeTestSupport;

namespace ScalableCache.Tests;

/// <summary>
/// CI's browser-free smoke test of <c>scache serve</c>, run in-process on a free loopback port over ResNet-20 and a cache built at
/// start from 200 training images: predict, add, stop without a last snapshot (the log alone holds the add), restart, predict.
/// </summary>
public sealed class ServeSmokeTests : IDisposable
{
    private readonly PersistenceTempFolder _folder = new();

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    public void Dispose() => _folder.Dispose();

    [Fact]
    public async Task ServePredictAddRestartPredict()
    {
        var cache = _folder.File("smoke.scache");
        var test = ModelTestSupport.Cifar10Test;
        var pngs = Enumerable.Range(0, 6).Select(i => Png(test.GetImage(i), 32, 32)).ToList();
        string[] common =
        [
            "serve", "--cache", cache, "--weights", ModelTestSupport.ResNet20Safetensors, "--data", SharedData.Cifar10,
            "--snapshot-interval", "0", "--set", "Serve:Durability:SnapshotOnDispose=false",
        ];

        (long[] Classes, float[][] Probabilities) grown;
        await using (var first = Server([.. common, "--layers", "layer3.2,avgpool", "--max-train", "200", "--theta", "50", "--lambda", "0.5"]))
        {
            await WaitHealthy(first.Client, first.Exit, Ct);
            var info = await Get(first.Client, "/v1/info", Ct);
            Assert.Equal(200, info.GetProperty("keys").GetInt64());
            Assert.Equal("resnet20", info.GetProperty("model").GetString());

            var (status, before) = await Post(first.Client, "/v1/predict", Form(pngs), Ct);
            Assert.Equal(HttpStatusCode.OK, status);
            var labels = Enumerable.Range(0, 3).Select(i => test.ClassNames[test.Labels[i]]).ToList();
            (status, var added) = await Post(first.Client, "/v1/memory", Json(new { images = pngs[..3].Select(Convert.ToBase64String), labels }), Ct);
            Assert.Equal(HttpStatusCode.OK, status);
            Assert.Equal(200, added.GetProperty("firstKey").GetInt64());
            Assert.Equal(203, added.GetProperty("keys").GetInt64());

            (status, var after) = await Post(first.Client, "/v1/predict", Form(pngs), Ct);
            Assert.Equal(HttpStatusCode.OK, status);
            grown = Predictions(after);
            Assert.NotEqual(Predictions(before).Probabilities[0], grown.Probabilities[0]); // the image now finds itself in the memory
            Assert.Equal(0, await first.Stop());
        }

        Assert.Equal(200, CacheFile.ReadHeader(cache).Count); // no snapshot since the start: the add lives in the log alone
        await using var second = Server(common);
        await WaitHealthy(second.Client, second.Exit, Ct);
        var recovered = await Get(second.Client, "/v1/info", Ct);
        Assert.Equal(203, recovered.GetProperty("keys").GetInt64());
        Assert.Equal(3, recovered.GetProperty("recovery").GetProperty("replayedKeys").GetInt64());
        var (again, replayed) = await Post(second.Client, "/v1/predict", Form(pngs), Ct);
        Assert.Equal(HttpStatusCode.OK, again);
        AssertSameAnswers(grown, Predictions(replayed), 1e-5);
        Assert.Equal(0, await second.Stop());
    }

    private static RunningServer Server(string[] args)
    {
        var url = $"http://127.0.0.1:{FreePort()}";
        var stop = new CancellationTokenSource();
        var stderr = new StringWriter();
        var exit = Task.Run(() => Host.Cli.ScacheApplication.RunAsync([.. args, "--urls", url], TextWriter.Null, stderr, cancellationToken: stop.Token), Ct);
        return new RunningServer(Client(url), exit, stop, stderr);
    }

    /// <summary>A <c>scache serve</c> running in-process; <see cref="Stop"/> is its Ctrl+C.</summary>
    private sealed record RunningServer(HttpClient Client, Task<int> Exit, CancellationTokenSource Cancel, StringWriter Stderr) : IAsyncDisposable
    {
        public async Task<int> Stop()
        {
            await Cancel.CancelAsync();
            return await Exit.WaitAsync(TimeSpan.FromSeconds(60), Ct);
        }

        public async ValueTask DisposeAsync()
        {
            if (!Exit.IsCompleted)
            {
                await Stop();
            }

            Client.Dispose();
            Cancel.Dispose();
        }
    }
}
