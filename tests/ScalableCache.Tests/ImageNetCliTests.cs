using System.Text.Json;
using ScalableCache.Core.Checkpoints;
using ScalableCache.Core.Data;
using ScalableCache.Core.Evaluation;
using ScalableCache.Core.Features;
using ScalableCache.Core.Models;
using ScalableCache.Host;
using Xunit;
using static ScalableCache.Tests.CliTestSupport;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>
/// <c>scache reproduce --dataset imagenet</c> and <c>evaluate</c> end to end on a tiny ImageNet-layout folder (three classes of fixture
/// JPEGs, both validation layouts) with a randomly initialised torchvision ResNet-18, and the bad inputs a user with ImageNet meets.
/// </summary>
public sealed class ImageNetCliTests
{
    private const string Model = "torchvision:resnet18";

    [Fact]
    public async Task ReproduceImageNetWritesTheTable1RowUnderThePapersProtocol()
    {
        using var data = ImageNetFolderTests.TinyImageNet(flatValidation: true, validationRounds: 3); // 9 validation images
        using var work = new CheckpointTempFolder();
        var weights = RandomWeights(work, ImageNetFolderTests.Wnids.Length);
        var output = work.Combine("report");
        var (code, stdout, stderr) = await Run(null,
            "reproduce", "--dataset", "imagenet", "--data", data.Path, "--weights", weights, "--models", Model, "--per-class", "1",
            "--thetas", "10,50", "--lambdas", "0.2,0.8", "--out", output, "--json");
        Assert.True(code == ExitCodes.Success, stderr);
        var result = SingleJsonObject(stdout);
        var row = Assert.Single(result.GetProperty("rows").EnumerateArray());

        Assert.Equal("imagenet", row.GetProperty("dataset").GetString());
        Assert.Equal(Model, row.GetProperty("model").GetString());
        Assert.Equal(3, row.GetProperty("cacheSize").GetInt64()); // one seeded image per class
        Assert.Equal(6, row.GetProperty("trainCount").GetInt64());
        Assert.Equal(1, row.GetProperty("perClass").GetInt32());
        Assert.Equal(5, row.GetProperty("validationCount").GetInt32()); // round(0.5 · 9), away from zero
        Assert.Equal(4, row.GetProperty("reportCount").GetInt32());

        // The default candidates of an ImageNet ResNet: the last stage pooled (layer4.1 pooled is avgpool itself) and avgpool.
        var search = row.GetProperty("layerSearch");
        var scored = search.GetProperty("evaluated").EnumerateArray().SelectMany(s => s.GetProperty("layers").EnumerateArray().Select(l => l.GetString())).ToHashSet();
        Assert.Equal(new HashSet<string?> { "layer4.0:avg", "avgpool" }, scored);
        var layers = row.GetProperty("layers").EnumerateArray().Select(l => l.GetString()!).ToList();
        Assert.All(layers, l => Assert.Contains(l, scored));
        Assert.Equal(512L * layers.Count, row.GetProperty("keyDimension").GetInt64());

        // Errors are counts over the 4 report images; the network's is exactly what the checkpoint predicts on that half.
        foreach (var key in new[] { "baselineError", "cacheError", "cacheOnlyError", "validationBaselineError" })
        {
            var error = row.GetProperty(key).GetDouble();
            Assert.InRange(error, 0, 1);
            var denominator = key.StartsWith("validation", StringComparison.Ordinal) ? 5 : 4;
            Assert.Equal(Math.Round(error * denominator), error * denominator, 9);
        }

        Assert.Equal(NetworkError(weights, data.Path, second: true), row.GetProperty("baselineError").GetDouble(), 9);
        Assert.Equal(NetworkError(weights, data.Path, second: false), row.GetProperty("validationBaselineError").GetDouble(), 9);
        Assert.Contains(row.GetProperty("theta").GetDouble(), new[] { 10.0, 50.0 });
        Assert.Contains(row.GetProperty("lambda").GetDouble(), new[] { 0.2, 0.8 });

        // The loader's and the whole pass's images/s, for both extractions.
        var throughput = row.GetProperty("throughput");
        Assert.Equal(3, throughput.GetProperty("train").GetProperty("images").GetInt64());
        Assert.Equal(9, throughput.GetProperty("test").GetProperty("images").GetInt64());
        Assert.True(throughput.GetProperty("test").GetProperty("loaderImagesPerSecond").GetDouble() > 0);
        Assert.True(throughput.GetProperty("test").GetProperty("imagesPerSecond").GetDouble() > 0);
        Assert.True(row.GetProperty("loaderAloneImagesPerSecond").GetDouble() > 0);

        // The same report files as for CIFAR, the JSON on disk equal to stdout's.
        var markdown = File.ReadAllText(Path.Combine(output, "report.md"));
        Assert.Contains("# Table 1 (ImageNet)", markdown);
        Assert.Contains("| " + Model + " |", markdown);
        Assert.Contains("## Image loading", markdown);
        Assert.Contains("a seeded class-balanced subset of 1 per class", markdown);
        using var onDisk = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "result.json")));
        Assert.Equal(row.GetProperty("baselineError").GetDouble(), onDisk.RootElement.GetProperty("rows")[0].GetProperty("baselineError").GetDouble());
        Assert.True(File.Exists(Path.Combine(output, "torchvision-resnet18-theta-lambda.png")));
    }

    [Fact]
    public async Task EvaluateReadsWnidFolderValidationAndTheWholeTrainingSet()
    {
        using var data = ImageNetFolderTests.TinyImageNet(flatValidation: false, validationRounds: 2); // 6 validation images
        using var work = new CheckpointTempFolder();
        var weights = RandomWeights(work, ImageNetFolderTests.Wnids.Length);
        var (code, stdout, stderr) = await Run(null,
            "evaluate", "--model", Model, "--weights", weights, "--data", data.Path, "--layers", "avgpool", "--theta", "50", "--lambda", "1", "--half-keys",
            "--out", work.Combine("report"), "--json");
        Assert.True(code == ExitCodes.Success, stderr);
        var json = SingleJsonObject(stdout);
        var row = json.GetProperty("row");
        Assert.Equal("imagenet", row.GetProperty("dataset").GetString());
        Assert.Equal(6, json.GetProperty("cacheSize").GetInt64());
        Assert.False(row.TryGetProperty("perClass", out _)); // the whole training set (nulls are left out)
        Assert.Equal(3, row.GetProperty("validationCount").GetInt32());
        Assert.Equal(3, row.GetProperty("reportCount").GetInt32());
        Assert.Equal(NetworkError(weights, data.Path, second: true), json.GetProperty("baselineError").GetDouble(), 9);

        // λ = 1 is cache-only: the mixed model's error is the cache-only model's.
        Assert.Equal(json.GetProperty("cacheOnlyError").GetDouble(), json.GetProperty("cacheError").GetDouble(), 9);
    }

    [Fact]
    public async Task MissingFolderIsNotFoundNamingIt()
    {
        using var work = new CheckpointTempFolder();
        var missing = work.Combine("no-imagenet-here");
        var (code, stdout, _) = await Run(null,
            "reproduce", "--dataset", "imagenet", "--data", missing, "--weights", RandomWeights(work, 3), "--models", Model, "--json");
        Assert.Equal(ExitCodes.NotFound, code);
        Assert.Contains(missing, Error(stdout));
    }

    [Fact]
    public async Task ValidationWnidFolderOutsideTheTrainingClassesIsInvalidData()
    {
        using var data = ImageNetFolderTests.TinyImageNet(flatValidation: false);
        Directory.CreateDirectory(Path.Combine(data.Path, "val", "n09999999"));
        File.Copy(Directory.GetFiles(SharedData.ImageNetFixtures, "*.JPEG")[0], Path.Combine(data.Path, "val", "n09999999", "x.JPEG"));
        using var work = new CheckpointTempFolder();
        var (code, stdout, _) = await Run(null,
            "reproduce", "--dataset", "imagenet", "--data", data.Path, "--weights", RandomWeights(work, 3), "--models", Model, "--json");
        Assert.Equal(ExitCodes.InvalidData, code);
        Assert.Contains("n09999999", Error(stdout));
    }

    [Fact]
    public async Task UnreadableJpegIsInvalidDataNamingTheFile()
    {
        using var data = ImageNetFolderTests.TinyImageNet(flatValidation: true);
        var bad = Path.Combine(data.Path, "train", ImageNetFolderTests.Wnids[1], "broken.JPEG");
        await File.WriteAllBytesAsync(bad, [0xFF, 0xD8, 0xFF, 0x00, 1, 2, 3, 4], TestContext.Current.CancellationToken);
        using var work = new CheckpointTempFolder();
        var (code, stdout, _) = await Run(null,
            "reproduce", "--dataset", "imagenet", "--data", data.Path, "--weights", RandomWeights(work, 3), "--models", Model,
            "--candidates", "avgpool", "--json");
        Assert.Equal(ExitCodes.InvalidData, code);
        Assert.Contains("broken.JPEG", Error(stdout));
    }

    [Fact]
    public async Task WeightsOfAnotherArchitectureAreAnInvalidCheckpoint()
    {
        using var data = ImageNetFolderTests.TinyImageNet(flatValidation: true);
        using var work = new CheckpointTempFolder();
        var (code, stdout, _) = await Run(null,
            "reproduce", "--dataset", "imagenet", "--data", data.Path, "--weights", RandomWeights(work, 3), "--models", "torchvision:resnet34", "--json");
        Assert.Equal(ExitCodes.InvalidCheckpoint, code);
        Assert.Contains("layer1.2", Error(stdout)); // ResNet-34 has three blocks in its first stage, ResNet-18 two
    }

    [Fact]
    public async Task ModelWithOtherClassesThanTheFolderIsInvalidData()
    {
        using var data = ImageNetFolderTests.TinyImageNet(flatValidation: true);
        using var work = new CheckpointTempFolder();
        var (code, stdout, _) = await Run(null,
            "reproduce", "--dataset", "imagenet", "--data", data.Path, "--weights", RandomWeights(work, 5), "--models", Model, "--json");
        Assert.Equal(ExitCodes.InvalidData, code);
        Assert.Contains("3 classes", Error(stdout));
        Assert.Contains("outputs 5", Error(stdout));
    }

    [Fact]
    public async Task CifarModelWithImageNetDatasetIsAUsageError()
    {
        var (code, stdout, _) = await Run(null,
            "reproduce", "--dataset", "imagenet", "--data", Path.GetTempPath(), "--models", "resnet20",
            "--weights", Path.Combine(SharedData.Models, "resnet20.safetensors"), "--json");
        Assert.Equal(ExitCodes.Usage, code);
        Assert.Contains("--dataset imagenet", Error(stdout));
    }

    /// <summary>The network's error on one half of the validation split (seed 0), computed here without the CLI.</summary>
    private static double NetworkError(string weights, string root, bool second)
    {
        using var model = LoadedModel.Load(new ModelRegistry(), Model, weights, CPU);
        var validation = ImageNetFolder.Validation(root);
        var split = validation.SeededSplit(0, 0.5);
        var half = validation.Subset(second ? split.Second : split.First);
        using var extractor = new LayerTapExtractor(model.Model, ["avgpool"]);
        using var features = DatasetFeatureExtractor.Extract(extractor, half, InputNormalization.ImageNet, cancellationToken: TestContext.Current.CancellationToken);
        var predicted = features.Probabilities.argmax(1).data<long>().ToArray();
        return predicted.Where((p, i) => p != half.Labels[i]).Count() / (double)half.Count;
    }

    private static string RandomWeights(CheckpointTempFolder folder, int classes)
    {
        manual_seed(11);
        using var model = new ModelRegistry().Create(Model, classCount: classes);
        var path = folder.Combine($"resnet18-random-{classes}.safetensors");
        CheckpointWriter.Save(model, path, CheckpointFormat.Safetensors);
        return path;
    }

    private static string Error(string stdout) => SingleJsonObject(stdout).GetProperty("error").GetString()!;
}
