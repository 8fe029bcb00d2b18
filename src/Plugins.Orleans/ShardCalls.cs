using System.Globalization;

namespace ScalableCache.Orleans;

/// <summary>
/// Calls every shard of a cache at once, each bounded by the call timeout, and either returns every answer or throws one
/// <see cref="CacheShardException"/> naming each shard that failed and why. No caller ever sees a subset of the answers.
/// </summary>
internal static class ShardCalls
{
    /// <summary>Runs <paramref name="call"/> for shards <c>0 … count − 1</c> concurrently.</summary>
    public static async Task<T[]> All<T>(string cacheId, string what, int count, Func<int, Task<T>> call, TimeSpan timeout)
    {
        var tasks = new Task<T>[count];
        for (var i = 0; i < count; i++)
        {
            tasks[i] = One(call, i, timeout);
        }

        try
        {
            return await Task.WhenAll(tasks).ConfigureAwait(false);
        }
        catch
        {
            var failed = Enumerable.Range(0, count).Where(i => tasks[i].IsFaulted || tasks[i].IsCanceled).ToList();
            var reasons = failed.Select(i => $"shard {i}: {Describe(tasks[i], timeout)}");
            // Only exceptions Orleans can carry to a client travel as the cause (the message names every failure anyway).
            var first = failed.Select(i => tasks[i].Exception?.InnerException).FirstOrDefault(e => e is not null && Portable(e));
            throw new CacheShardException(
                $"{what} on cache '{cacheId}' failed at {(failed.Count == 1 ? "shard" : "shards")} {string.Join(", ", failed)} of {count} " +
                $"({string.Join("; ", reasons)}).",
                failed,
                first);
        }
    }

    /// <summary>As <see cref="All{T}"/> for calls without a result.</summary>
    public static Task All(string cacheId, string what, int count, Func<int, Task> call, TimeSpan timeout) =>
        All(cacheId, what, count, async i =>
        {
            await call(i).ConfigureAwait(false);
            return true;
        }, timeout);

    /// <summary>One call, bounded by <paramref name="timeout"/>.</summary>
    public static async Task<T> Bounded<T>(Task<T> call, TimeSpan timeout)
    {
        ArgumentNullException.ThrowIfNull(call);
        return await call.WaitAsync(timeout).ConfigureAwait(false);
    }

    private static async Task<T> One<T>(Func<int, Task<T>> call, int shard, TimeSpan timeout) =>
        await Bounded(call(shard), timeout).ConfigureAwait(false);

    /// <summary>Whether Orleans can serialise <paramref name="e"/> (and its causes): BCL, Orleans and this plugin's exceptions.</summary>
    public static bool Portable(Exception e)
    {
        for (Exception? x = e; x is not null; x = x.InnerException)
        {
            var assembly = x.GetType().Assembly;
            if (assembly != typeof(object).Assembly && assembly != typeof(global::Orleans.Runtime.OrleansException).Assembly
                && assembly != typeof(CacheShardException).Assembly)
            {
                return false;
            }
        }

        return true;
    }

    private static string Describe(Task task, TimeSpan timeout)
    {
        if (task.IsCanceled)
        {
            return "the call was cancelled";
        }

        var e = task.Exception?.InnerException;
        return e switch
        {
            TimeoutException => $"no answer within {timeout.TotalSeconds.ToString("0.###", CultureInfo.InvariantCulture)} s",
            CacheShardException or InvalidOperationException or ArgumentException => e.Message,
            null => "failed",
            _ => $"{e.GetType().Name}: {e.Message}",
        };
    }
}
