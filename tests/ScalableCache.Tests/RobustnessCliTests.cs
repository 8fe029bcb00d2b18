using System.Text.Json;
using ScalableCache.Host;
using ScalableCache.Host.Cli;
using Xunit;

namespace ScalableCache.Tests;

/// <summary>End to end: <c>scache attack</c> and <c>scache jacobian</c> on a few images with a small cache and given θ, λ.</summary>
public sealed class RobustnessCliTests
{
    private static readonly Dictionary<string, string?> Configuration = new() { ["Assets:Models"] = SharedData.Models };

    private static async Task<(int Code, JsonElement Json, string Stderr)> Run(params string[] args)
    {
        using var stdout = new StringWriter();
        using var stderr = new StringWriter();
        var code = await ScacheApplication.RunAsync(args, stdout, stderr, Configuration);
        var text = stdout.ToString();
        using var doc = JsonDocument.Parse(string.IsNullOrWhiteSpace(text) ? "{}" : text);
        return (code, doc.RootElement.Clone(), stderr.ToString());
    }

    private static string[] SmallCache(string output) =>
    [
        "--layers", "avgpool", "--theta", "30", "--lambda", "0.5", "--cache-only-theta", "30", "--max-train", "200", "--max-test", "100",
        "--data", SharedData.Cifar10, "--out", output, "--json",
    ];

    [Fact]
    public async Task AttackWritesWhiteBoxAndTransferTables()
    {
        var output = Path.Combine(Path.GetTempPath(), $"scache-attack-{Guid.NewGuid():N}");
        try
        {
            var (code, json, stderr) = await Run(["attack", "--attack", "fgsm", "--source", "resnet20", "--targets", "resnet20", "--images", "4", "--grid", "100", .. SmallCache(output)]);
            Assert.True(code == ExitCodes.Success, stderr);
            var reports = json.GetProperty("reports").EnumerateArray().ToList();
            Assert.Single(reports);
            var report = reports[0];
            Assert.Equal("fgsm", report.GetProperty("attack").GetString());
            var whiteBox = report.GetProperty("whiteBox").EnumerateArray().ToList();
            Assert.Equal(["baseline", "cache", "cache-only"], whiteBox.Select(r => r.GetProperty("variant").GetString()));
            foreach (var row in whiteBox)
            {
                Assert.Equal(4, row.GetProperty("successes").GetInt32() + row.GetProperty("failures").GetInt32());
            }

            var transfer = report.GetProperty("transfer").EnumerateArray().ToList();
            Assert.Equal(3, transfer.Count); // the source's own three variants (gray box)
            Assert.Equal(report.GetProperty("transferSourceSuccesses").GetInt32(), transfer[0].GetProperty("images").GetInt32());
            Assert.Equal(30, report.GetProperty("backbones")[0].GetProperty("theta").GetDouble());
            Assert.True(File.Exists(Path.Combine(output, "report.md")));
            Assert.True(File.Exists(Path.Combine(output, "result.json")));
            Assert.Contains("Table 3", File.ReadAllText(Path.Combine(output, "report.md")));
        }
        finally
        {
            if (Directory.Exists(output))
            {
                Directory.Delete(output, recursive: true);
            }
        }
    }

    [Fact]
    public async Task SeveralAttacksShareOneSetupAndTransferToEveryTarget()
    {
        var output = Path.Combine(Path.GetTempPath(), $"scache-attacks-{Guid.NewGuid():N}");
        try
        {
            var (code, json, stderr) = await Run(
                ["attack", "--attack", "blur, pixel,blur", "--source", "resnet20", "--targets", "resnet32", "--images", "3", "--grid", "20", .. SmallCache(output)]);
            Assert.True(code == ExitCodes.Success, stderr);
            var reports = json.GetProperty("reports").EnumerateArray().ToList();
            Assert.Equal(["blur", "pixel"], reports.Select(r => r.GetProperty("attack").GetString()));
            foreach (var report in reports)
            {
                Assert.Equal(3, report.GetProperty("whiteBox").GetArrayLength());
                var transfer = report.GetProperty("transfer").EnumerateArray().ToList();
                Assert.Equal(["resnet20", "resnet20", "resnet20", "resnet32", "resnet32", "resnet32"], transfer.Select(t => t.GetProperty("target").GetString()));
                Assert.All(transfer, t => Assert.Equal(report.GetProperty("transferSourceSuccesses").GetInt32(), t.GetProperty("images").GetInt32()));
                Assert.Equal(["resnet20", "resnet32"], report.GetProperty("backbones").EnumerateArray().Select(b => b.GetProperty("model").GetString()));
            }

            var markdown = File.ReadAllText(Path.Combine(output, "report.md"));
            Assert.Contains("## blur", markdown);
            Assert.Contains("## pixel", markdown);
            Assert.Equal(1, markdown.Split("## Cache models").Length - 1);
        }
        finally
        {
            if (Directory.Exists(output))
            {
                Directory.Delete(output, recursive: true);
            }
        }
    }

    [Fact]
    public async Task JacobianWritesNormsSingularValuesAndScatterPlots()
    {
        var output = Path.Combine(Path.GetTempPath(), $"scache-jacobian-{Guid.NewGuid():N}");
        try
        {
            var (code, json, stderr) = await Run(["jacobian", "--model", "resnet20", "--images", "3", .. SmallCache(output)]);
            Assert.True(code == ExitCodes.Success, stderr);
            var variants = json.GetProperty("report").GetProperty("variants").EnumerateArray().ToList();
            Assert.Equal(["baseline", "cache", "cache-only"], variants.Select(v => v.GetProperty("variant").GetString()));
            foreach (var v in variants)
            {
                Assert.True(v.GetProperty("meanFrobeniusNorm").GetDouble() > 0);
                Assert.Equal(3, v.GetProperty("frobeniusNorms").GetArrayLength());
                Assert.Equal(10, v.GetProperty("meanSingularValues").GetArrayLength());
            }

            Assert.True(new FileInfo(Path.Combine(output, "jacobian-cache-vs-baseline.png")).Length > 1000);
            Assert.True(new FileInfo(Path.Combine(output, "jacobian-cache-only-vs-baseline.png")).Length > 1000);
            Assert.True(File.Exists(Path.Combine(output, "report.md")));
        }
        finally
        {
            if (Directory.Exists(output))
            {
                Directory.Delete(output, recursive: true);
            }
        }
    }

    [Fact]
    public async Task UnknownAttackIsAUsageError()
    {
        var (code, json, _) = await Run("attack", "--attack", "teleport", "--json");
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains("fgsm", json.GetProperty("error").GetString());

        var (listCode, listJson, _) = await Run("attack", "--attack", "fgsm,teleport", "--json");
        Assert.Equal(ExitCodes.Usage, listCode);
        Assert.Contains("'teleport'", listJson.GetProperty("error").GetString());
    }
}
