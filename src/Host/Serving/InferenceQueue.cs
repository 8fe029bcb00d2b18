using System.Diagnostics;
using System.Threading.Channels;
using ScalableCache.Core;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Host.Serving;

/// <summary>The answers for one request's images, row-major <c>[Count × ClassCount]</c>.</summary>
internal sealed record PredictAnswers(int Count, int ClassCount, float[] Probabilities, float[] Network, float[] Memory, long[] Classes, long Keys);

/// <summary>The server is at capacity: 503.</summary>
internal sealed class ServerBusyException(string message) : Exception(message);

/// <summary>
/// Runs every forward pass of the server on one thread, batching concurrent requests (dynamic batching): predictions of up to
/// <c>maxBatchImages</c> images from any number of requests share one <see cref="DurableCacheClassifier.Classify"/>, and the keys of
/// adds share one <see cref="DurableCacheClassifier.Features"/>. One thread, because the network runs one pass at a time anyway
/// and TorchSharp's dispose scopes are per thread; request threads never block on it.
/// </summary>
internal sealed class InferenceQueue : IDisposable
{
    private readonly DurableCacheClassifier _cache;
    private readonly int _maxBatchImages;
    private readonly ServeMetrics _metrics;
    private readonly Channel<Job> _jobs;
    private readonly Thread _thread;

    public InferenceQueue(DurableCacheClassifier cache, int maxBatchImages, int capacity, ServeMetrics metrics)
    {
        _cache = cache;
        _maxBatchImages = maxBatchImages;
        _metrics = metrics;
        _jobs = Channel.CreateBounded<Job>(new BoundedChannelOptions(capacity) { SingleReader = true, FullMode = BoundedChannelFullMode.Wait });
        _thread = new Thread(Run) { IsBackground = true, Name = "scache inference" };
        _thread.Start();
    }

    /// <summary>The mixture's, the network's and the memory's probabilities and the predicted classes of <paramref name="batch"/>.</summary>
    public Task<PredictAnswers> PredictAsync(ImageBatch batch) => Enqueue<PredictAnswers>(batch, predict: true);

    /// <summary>The keys of <paramref name="batch"/>, row-major <c>[Count × Dimension]</c>.</summary>
    public Task<float[]> KeysAsync(ImageBatch batch) => Enqueue<float[]>(batch, predict: false);

    /// <summary>Stops after the queued work.</summary>
    public void Dispose()
    {
        _jobs.Writer.TryComplete();
        _thread.Join();
    }

    private Task<T> Enqueue<T>(ImageBatch batch, bool predict)
    {
        var job = new Job(batch, predict);
        if (!_jobs.Writer.TryWrite(job))
        {
            throw new ServerBusyException("The inference queue is full; retry later.");
        }

        return job.Done.Task.ContinueWith(t => (T)t.GetAwaiter().GetResult(), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    private void Run()
    {
        var reader = _jobs.Reader;
        var taken = new List<Job>();
        while (reader.WaitToReadAsync().AsTask().GetAwaiter().GetResult())
        {
            taken.Clear();
            var images = 0;
            while (images < _maxBatchImages && reader.TryPeek(out var next) && (taken.Count == 0 || images + next.Batch.Count <= _maxBatchImages))
            {
                reader.TryRead(out _);
                taken.Add(next);
                images += next.Batch.Count;
            }

            foreach (var group in taken.GroupBy(j => (j.Predict, j.Batch.IsPixels)))
            {
                Execute([.. group]);
            }
        }
    }

    private void Execute(List<Job> jobs)
    {
        var stopwatch = Stopwatch.StartNew();
        var predict = jobs[0].Predict;
        try
        {
            using var scope = NewDisposeScope();
            var images = jobs.Count == 1 ? ToTensor(jobs[0].Batch) : cat(jobs.Select(j => ToTensor(j.Batch)).ToArray());
            if (predict)
            {
                using var outputs = _cache.Classify(images);
                var classes = outputs.Predictions().data<long>().ToArray();
                var mixed = outputs.Probabilities.data<float>().ToArray();
                var network = outputs.Network.data<float>().ToArray();
                var memory = outputs.Memory.data<float>().ToArray();
                var c = (int)outputs.Probabilities.shape[1];
                var keys = _cache.Count;
                var row = 0;
                foreach (var job in jobs)
                {
                    var n = job.Batch.Count;
                    job.Done.TrySetResult(new PredictAnswers(
                        n, c, mixed[(row * c)..((row + n) * c)], network[(row * c)..((row + n) * c)], memory[(row * c)..((row + n) * c)],
                        classes[row..(row + n)], keys));
                    row += n;
                }
            }
            else
            {
                var (keys, _) = _cache.Features(images);
                var values = keys.contiguous().data<float>().ToArray();
                var d = (int)keys.shape[1];
                var row = 0;
                foreach (var job in jobs)
                {
                    var n = job.Batch.Count;
                    job.Done.TrySetResult(values[(row * d)..((row + n) * d)]);
                    row += n;
                }
            }
        }
        catch (Exception e)
        {
            foreach (var job in jobs)
            {
                job.Done.TrySetException(e);
            }
        }
        finally
        {
            _metrics.Batch(predict ? "predict" : "keys", jobs.Sum(j => j.Batch.Count), stopwatch.Elapsed.TotalSeconds);
        }
    }

    private static Tensor ToTensor(ImageBatch batch)
    {
        long[] shape = [batch.Count, batch.Shape.Channels, batch.Shape.Height, batch.Shape.Width];
        return batch.Pixels is { } pixels ? tensor(pixels, shape, ScalarType.Byte) : tensor(batch.Values!, shape);
    }

    private sealed class Job(ImageBatch batch, bool predict)
    {
        public ImageBatch Batch { get; } = batch;

        public bool Predict { get; } = predict;

        public TaskCompletionSource<object> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
