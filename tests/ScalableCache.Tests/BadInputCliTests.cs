using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using ScalableCache.Core.Data;
using ScalableCache.Host;
using Xunit;
using static ScalableCache.Tests.CliTestSupport;

namespace ScalableCache.Tests;

/// <summary>
/// Issue #11: every bad input gets its named exit code, a message naming the problem, exactly one JSON object on stdout with
/// <c>--json</c> and no stack trace. Each case fails before any feature extraction by construction: where a later stage could
/// run, the data folder it would read does not exist (so a missed check ends in NotFound, never in a long run).
/// </summary>
public sealed class BadInputCliTests
{
    // Checkpoints come from the shared folder, never from a download.
    private static readonly Dictionary<string, string?> Configuration = new()
    {
        ["Assets:Models"] = SharedData.Models,
        ["Assets:AllowDownload"] = "false",
    };

    private static readonly string Weights = ModelTestSupport.ResNet20Safetensors;

    /// <summary>One bad input: the command line (built in a scratch folder), its exit code, and what the message must name.</summary>
    /// <param name="ExitCode">The expected exit code.</param>
    /// <param name="Arguments">The command line (without <c>--json</c>), given the scratch folder.</param>
    /// <param name="Names">Strings the error message must contain, given the scratch folder.</param>
    /// <param name="Afterwards">Further checks on the scratch folder after the run.</param>
    private sealed record BadInput(
        int ExitCode, Func<DataTempFolder, string[]> Arguments, Func<DataTempFolder, string[]> Names, Action<DataTempFolder>? Afterwards = null);

    private static readonly Dictionary<string, BadInput> Cases = new()
    {
        ["config file that is not JSON"] = new(ExitCodes.Configuration,
            s => ["providers", "--config", Write(s, "bad.json", """{ "Torch": { "BatchSize": 12 """)],
            s => [s.Combine("bad.json"), "LineNumber"]),
        ["config file with a wrong type"] = new(ExitCodes.Configuration,
            s => ["providers", "--config", Write(s, "type.json", """{ "Torch": { "BatchSize": "abc" } }""")],
            _ => ["Torch:BatchSize", "'abc'"]),
        ["--set with a non-number"] = new(ExitCodes.Configuration,
            _ => ["providers", "--set", "Torch:BatchSize=abc"],
            _ => ["Torch:BatchSize", "'abc'"]),
        ["--set with an overflowing number"] = new(ExitCodes.Configuration,
            _ => ["providers", "--set", "Torch:BatchSize=99999999999"],
            _ => ["Torch:BatchSize", "'99999999999'", "too large"]),
        ["--config that is a named pipe"] = new(ExitCodes.NotFound,
            s => ["providers", "--config", Fifo(s, "config.json")],
            s => [s.Combine("fifo-config.json"), "named pipe", "not a regular file"]),
        ["data file that is a dangling symbolic link"] = new(ExitCodes.NotFound,
            s => ["baseline", "--weights", Weights, "--data", DanglingData(s)],
            s => [s.Combine("cifar", Cifar10.TestFile), "symbolic link", s.Combine("gone.bin")]),
        ["--cache that is a directory"] = new(ExitCodes.NotFound,
            s => ["evaluate", "--cache", Directory.CreateDirectory(s.Combine("cache.scache")).FullName, .. Offline(s)],
            s => [s.Combine("cache.scache"), "is a directory"]),
        ["--cache that is a symbolic link loop"] = new(ExitCodes.NotFound,
            s => ["evaluate", "--cache", Loop(s, "loop.scache"), .. Offline(s)],
            s => [s.Combine("loop.scache"), "symbolic link loop"]),
        ["--cache that is a named pipe"] = new(ExitCodes.NotFound,
            s => ["evaluate", "--cache", Fifo(s, "pipe.scache"), .. Offline(s)],
            s => [s.Combine("fifo-pipe.scache"), "named pipe", "not a regular file"]),
        ["--out that is a regular file"] = new(ExitCodes.OutputFailed,
            s => ["evaluate", "--out", Write(s, "report", "x"), .. Offline(s)],
            s => ["--out", s.Combine("report"), "is a file"]),
        ["--out under /proc"] = new(ExitCodes.OutputFailed,
            s => ["evaluate", "--out", "/proc/scache-report", .. Offline(s)],
            _ => ["--out", "/proc/scache-report", "cannot be written"]),
        ["build --output under a regular file"] = new(ExitCodes.OutputFailed,
            s => ["build", "--layers", "avgpool", "--output", Path.Combine(Write(s, "file", "x"), "r20.scache"), .. Offline(s)],
            s => ["--output", s.Combine("file"), "is a file"]),
        ["safetensors entry without dtype"] = new(ExitCodes.InvalidCheckpoint,
            s => ["baseline", "--weights", NoDType(s), "--data", s.Combine("no-data")],
            s => [s.Combine("nodtype.safetensors"), "'w'", "dtype"]),
        ["NaN in a checkpoint tensor"] = new(ExitCodes.InvalidCheckpoint,
            s => ["baseline", "--weights", NaNCheckpoint(s), "--data", s.Combine("no-data")],
            s => [s.Combine("nan.safetensors"), "'conv1.weight'", "non-finite"]),
        ["--max-layers 0"] = new(ExitCodes.Usage, s => ["evaluate", "--max-layers", "0", .. Offline(s)], _ => ["--max-layers", "at least 1"]),
        ["--theta NaN"] = new(ExitCodes.Usage, s => ["evaluate", "--theta", "NaN", "--lambda", "0.5", .. Offline(s)], _ => ["--theta", "NaN"]),
        ["--lambda NaN"] = new(ExitCodes.Usage, s => ["evaluate", "--theta", "10", "--lambda", "NaN", .. Offline(s)], _ => ["--lambda", "NaN"]),
        ["--theta Infinity"] = new(ExitCodes.Usage, s => ["evaluate", "--theta", "Infinity", "--lambda", "0.5", .. Offline(s)], _ => ["--theta", "Infinity"]),
        ["build --lambda NaN"] = new(ExitCodes.Usage,
            s => ["build", "--layers", "avgpool", "--output", s.Combine("r20.scache"), "--theta", "10", "--lambda", "NaN", .. Offline(s)],
            _ => ["--lambda", "NaN"]),
        ["--thetas empty"] = new(ExitCodes.Usage, s => ["evaluate", "--thetas", "", .. Offline(s)], _ => ["--thetas", "empty"]),
        ["--thetas with an empty entry"] = new(ExitCodes.Usage, s => ["evaluate", "--thetas", "10,,20", .. Offline(s)], _ => ["--thetas", "10,,20"]),
        ["--layers empty"] = new(ExitCodes.Usage, s => ["evaluate", "--layers", "", .. Offline(s)], _ => ["--layers", "empty"]),
        ["size-sweep --fractions with NaN"] = new(ExitCodes.Usage,
            s => ["size-sweep", "--fractions", "0,NaN", .. Offline(s)], _ => ["--fractions", "NaN"]),
        ["layer-sweep --lambda Infinity"] = new(ExitCodes.Usage,
            s => ["layer-sweep", "--lambda", "Infinity", .. Offline(s)], _ => ["--lambda", "Infinity"]),
        ["online --batch 0"] = new(ExitCodes.Usage, s => ["online", "--batch", "0", .. Offline(s)], _ => ["--batch", "at least 1"]),
        ["attack --cache-only-theta NaN"] = new(ExitCodes.Usage,
            s => ["attack", "--attack", "fgsm", "--cache-only-theta", "NaN", "--data", s.Combine("no-data")], _ => ["--cache-only-theta", "NaN"]),
        ["attack --attack with an empty entry"] = new(ExitCodes.Usage,
            s => ["attack", "--attack", "fgsm,,blur", "--data", s.Combine("no-data")], _ => ["--attack", "fgsm,,blur"]),
        ["jacobian --images 0"] = new(ExitCodes.Usage,
            s => ["jacobian", "--images", "0", "--data", s.Combine("no-data")], _ => ["--images", "at least 1"]),
        ["reproduce --lambdas 0.5,2"] = new(ExitCodes.Usage,
            s => ["reproduce", "--lambdas", "0.5,2", "--data", s.Combine("no-data")], _ => ["--lambdas", "[0, 1]", "2"]),
        ["a failed evaluate leaves no empty report folder"] = new(ExitCodes.NotFound,
            s => ["evaluate", "--out", s.Combine("new-report"), .. Offline(s)],
            s => [s.Combine("no-data")],
            s => Assert.False(Directory.Exists(s.Combine("new-report")), "the report folder was left behind")),
    };

    public static TheoryData<string> CaseNames => [.. Cases.Keys];

    [Theory]
    [MemberData(nameof(CaseNames))]
    public async Task BadInputGetsItsNamedExitCode(string name)
    {
        var input = Cases[name];
        using var scratch = new DataTempFolder();
        string[] args = [.. input.Arguments(scratch), "--json"];
        var run = Task.Run(() => Run(Configuration, args), TestContext.Current.CancellationToken);
        var finished = await Task.WhenAny(run, Task.Delay(TimeSpan.FromMinutes(2), TestContext.Current.CancellationToken));
        if (finished != run)
        {
            ReleasePipes(scratch);
            Assert.Fail($"scache {string.Join(' ', args)} did not finish within 2 minutes (blocked opening a named pipe?).");
        }

        var (code, stdout, stderr) = await run;
        Assert.True(code == input.ExitCode, $"exit code {code} ({ExitCodes.NameOf(code)}), expected {input.ExitCode}; stderr:\n{stderr}");
        var json = SingleJsonObject(stdout);
        Assert.Equal(ExitCodes.NameOf(input.ExitCode), json.GetProperty("exitName").GetString());
        Assert.Equal(input.ExitCode, json.GetProperty("exitCode").GetInt32());
        Assert.DoesNotContain("   at ", stderr, StringComparison.Ordinal);
        var message = json.GetProperty("error").GetString()!;
        foreach (var part in input.Names(scratch))
        {
            Assert.Contains(part, message, StringComparison.Ordinal);
        }

        input.Afterwards?.Invoke(scratch);
    }

    [Fact]
    public void CifarDataLoadsThroughSymbolicLinks()
    {
        using var scratch = new DataTempFolder();
        var linked = Directory.CreateDirectory(scratch.Combine(Cifar10.FolderName)).FullName;
        foreach (var file in Directory.EnumerateFiles(SharedData.Cifar10))
        {
            File.CreateSymbolicLink(Path.Combine(linked, Path.GetFileName(file)), file);
        }

        var direct = Cifar10.LoadTest(SharedData.Cifar10);
        var throughLinks = Cifar10.LoadTest(scratch.Path);
        Assert.Equal(Cifar10.RowsPerBatch, throughLinks.Count);
        Assert.Equal(direct.Labels.ToArray(), throughLinks.Labels.ToArray());
        Assert.Equal(direct.ClassNames, throughLinks.ClassNames);
        Assert.Equal(5 * Cifar10.RowsPerBatch, Cifar10.LoadTrain(scratch.Path).Count);
    }

    /// <summary><c>--weights</c> from the shared folder and a data folder that does not exist, so nothing can be extracted.</summary>
    private static string[] Offline(DataTempFolder scratch) => ["--weights", Weights, "--data", scratch.Combine("no-data")];

    private static string Write(DataTempFolder scratch, string name, string content)
    {
        var path = scratch.Combine(name);
        File.WriteAllText(path, content);
        return path;
    }

    private static string Fifo(DataTempFolder scratch, string name)
    {
        var path = scratch.Combine("fifo-" + name);
        using var mkfifo = Process.Start(new ProcessStartInfo("mkfifo", [path]) { UseShellExecute = false })!;
        Assert.True(mkfifo.WaitForExit(TimeSpan.FromSeconds(30)) && mkfifo.ExitCode == 0, "mkfifo failed");
        return path;
    }

    /// <summary>Opens every named pipe in the scratch folder for writing, which releases a reader blocked opening it.</summary>
    private static void ReleasePipes(DataTempFolder scratch)
    {
        foreach (var pipe in Directory.EnumerateFiles(scratch.Path, "fifo-*"))
        {
            _ = Task.Run(() =>
            {
                using var writer = new FileStream(pipe, FileMode.Open, FileAccess.Write);
            }).WaitAsync(TimeSpan.FromSeconds(5));
        }
    }

    private static string Loop(DataTempFolder scratch, string name)
    {
        var path = scratch.Combine(name);
        var other = scratch.Combine("other-" + name);
        File.CreateSymbolicLink(path, other);
        File.CreateSymbolicLink(other, path);
        return path;
    }

    /// <summary>A CIFAR-10 folder whose test batch is a symbolic link to a file that does not exist.</summary>
    private static string DanglingData(DataTempFolder scratch)
    {
        var folder = Directory.CreateDirectory(scratch.Combine("cifar")).FullName;
        File.CreateSymbolicLink(Path.Combine(folder, Cifar10.TestFile), scratch.Combine("gone.bin"));
        return folder;
    }

    /// <summary>A safetensors file whose one entry has shape and offsets but no dtype.</summary>
    private static string NoDType(DataTempFolder scratch)
    {
        var header = Encoding.UTF8.GetBytes("""{"w":{"shape":[1],"data_offsets":[0,4]}}""");
        var bytes = new byte[8 + header.Length + 4];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)header.Length);
        header.CopyTo(bytes, 8);
        var path = scratch.Combine("nodtype.safetensors");
        File.WriteAllBytes(path, bytes);
        return path;
    }

    /// <summary>The shared ResNet-20 checkpoint with the first weight of <c>conv1.weight</c> (F32) set to NaN.</summary>
    private static string NaNCheckpoint(DataTempFolder scratch)
    {
        var bytes = File.ReadAllBytes(Weights);
        var headerLength = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        using var header = JsonDocument.Parse(bytes.AsMemory(8, headerLength));
        var entry = header.RootElement.GetProperty("conv1.weight");
        Assert.Equal("F32", entry.GetProperty("dtype").GetString());
        var begin = entry.GetProperty("data_offsets")[0].GetInt64();
        BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan((int)(8 + headerLength + begin)), float.NaN);
        var path = scratch.Combine("nan.safetensors");
        File.WriteAllBytes(path, bytes);
        return path;
    }
}
