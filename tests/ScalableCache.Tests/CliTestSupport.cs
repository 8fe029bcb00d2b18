using System.Text.Json;
using ScalableCache.Host.Cli;
using Xunit;

namespace ScalableCache.Tests;

/// <summary>Runs <c>scache</c> in-process with captured streams, and reads its <c>--json</c> output.</summary>
internal static class CliTestSupport
{
    /// <summary>Runs the CLI with <paramref name="args"/>; <paramref name="configuration"/> is applied after environment variables.</summary>
    public static async Task<(int Code, string Stdout, string Stderr)> Run(IReadOnlyDictionary<string, string?>? configuration, params string[] args)
    {
        using var stdout = new StringWriter();
        using var stderr = new StringWriter();
        var code = await ScacheApplication.RunAsync(args, stdout, stderr, configuration);
        return (code, stdout.ToString(), stderr.ToString());
    }

    /// <summary>Asserts that <paramref name="stdout"/> holds exactly one JSON value, an object, and returns it.</summary>
    public static JsonElement SingleJsonObject(string stdout)
    {
        var reader = new Utf8JsonReader(System.Text.Encoding.UTF8.GetBytes(stdout));
        using var doc = JsonDocument.ParseValue(ref reader);
        Assert.False(reader.Read(), "stdout holds more than one JSON value");
        Assert.Equal(JsonValueKind.Object, doc.RootElement.ValueKind);
        return doc.RootElement.Clone();
    }
}
