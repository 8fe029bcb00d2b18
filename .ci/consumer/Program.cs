// A consumer of the packages: an exact store created without dependency injection, three keys, one query.
// Built by .ci/consumer-check.sh against ScalableCache.Core and ScalableCache.Plugins.Exact from the pack folder.
using ScalableCache.Exact;
using static TorchSharp.torch;

using var memory = new ExactCacheMemory(dimension: 2, classCount: 2, new ExactCacheOptions { KeyBlockSize = 2 });
using (var keys = tensor(new[] { 1f, 0f, 0f, 1f, 0.6f, 0.8f }, [3, 2]))
using (var labels = tensor(new long[] { 0, 1, 1 }))
{
    memory.Add(keys, labels);
}

// log Σ_{k: y_k = c} exp(θ q·μ_k) at θ = 10 for q = (1, 0): class 0 has q·μ = 1, class 1 has 0 and 0.6.
const double theta = 10;
double[] expected = [theta, Math.Log(1 + Math.Exp(theta * 0.6))];
using var query = tensor(new[] { 1f, 0f }, [1, 2]);
using var logMass = memory.ClassLogMass(query, [theta]);
var actual = logMass.data<float>().ToArray();
Console.WriteLine($"{memory.Provider} store, {memory.Count} keys, log-mass at θ = {theta}: {actual[0]:F4}, {actual[1]:F4} (expected {expected[0]:F4}, {expected[1]:F4})");
var ok = actual.Length == 2 && Math.Abs(actual[0] - expected[0]) < 1e-4 && Math.Abs(actual[1] - expected[1]) < 1e-4;
Console.WriteLine(ok ? "consumer check: OK" : "consumer check: WRONG");
return ok ? 0 : 1;
