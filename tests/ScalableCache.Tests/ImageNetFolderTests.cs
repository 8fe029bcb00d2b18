using ScalableCache.Core;
using ScalableCache.Core.Data;
using ScalableCache.Core.Features;
using ScalableCache.Core.Models;
using ScalableCache.Exact;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace ScalableCache.Tests;

/// <summary>
/// ImageNet folder layouts, the streaming image source and a fit over it: a tiny ImageNet-layout folder made of the fixture JPEGs
/// (three classes, one greyscale image among them), with a randomly initialised torchvision ResNet-18.
/// </summary>
public sealed class ImageNetFolderTests
{
    internal static readonly string[] Wnids = ["n01440764", "n02692877", "n04037443"];

    [Fact]
    public void GroundTruthFixtureIndexesTheSortedWnids()
    {
        var wnids = File.ReadLines(Path.Combine(SharedData.ImageNetFixtures, ImageNetFolder.WnidsFile))
            .Select(l => l.Split(' ')[0]).Order(StringComparer.Ordinal).ToList();
        Assert.Equal(1000, wnids.Count);
        var truth = ImageNetFolder.ReadGroundTruth(Path.Combine(SharedData.ImageNetFixtures, ImageNetFolder.GroundTruthFile), wnids.Count);
        Assert.Equal(50_000, truth.Count);
        Assert.Equal("n01751748", wnids[truth["ILSVRC2012_val_00000001.JPEG"]]); // sea snake
        Assert.Equal(50, truth.Values.Count(v => v == 0));
    }

    [Fact]
    public void FlatAndFolderValidationLayoutsGiveTheSameLabels()
    {
        using var folder = TinyImageNet(flatValidation: true);
        var train = ImageNetFolder.Train(folder.Path);
        Assert.Equal(Wnids, train.ClassNames);
        Assert.Equal([0, 0, 1, 1, 2, 2], train.Labels);
        var flat = ImageNetFolder.Validation(folder.Path);
        Assert.Equal([2, 0, 1], flat.Labels);

        using var nested = TinyImageNet(flatValidation: false);
        var byFolder = ImageNetFolder.Validation(nested.Path);
        Assert.Equal([0, 1, 2], byFolder.Labels);

        // Streaming reads are the transform of each file, in order, in parallel.
        var pixels = new byte[3 * train.Shape.Size];
        train.Read(2, 3, pixels);
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(train.Transform.Apply(train.Files[2 + i]), pixels.AsSpan(i * train.Shape.Size, train.Shape.Size).ToArray());
        }
    }

    [Fact]
    public void WnidsFileDefinesTheClassesAndRejectsOtherFolders()
    {
        using var folder = TinyImageNet(flatValidation: false);
        File.WriteAllLines(Path.Combine(folder.Path, ImageNetFolder.WnidsFile), ["n04037443 racer", "n00000001 first", "n01440764 tench", "n02692877 airship", "n09999998 last"]);
        var train = ImageNetFolder.Train(folder.Path);
        Assert.Equal(["n00000001", "n01440764", "n02692877", "n04037443", "n09999998"], train.ClassNames);
        Assert.Equal([1, 1, 2, 2, 3, 3], train.Labels); // classes without images keep their numbers
        Assert.Equal([1, 2, 3], ImageNetFolder.Validation(folder.Path).Labels);

        Directory.CreateDirectory(Path.Combine(folder.Path, "train", "n05555555"));
        var error = Assert.Throws<DatasetFormatException>(() => ImageNetFolder.Train(folder.Path));
        Assert.Contains("n05555555", error.Message);
        Assert.Contains(ImageNetFolder.WnidsFile, error.Message);
    }

    [Fact]
    public void ProtocolSubsetsTheCachePerClassAndSplitsTheValidationImages()
    {
        using var folder = TinyImageNet(flatValidation: true, validationRounds: 3);
        var run = ImageNetFolder.Protocol(folder.Path, perClass: 1, seed: 4, maxValidation: 6);
        Assert.Equal(6, run.TrainCount);
        Assert.Equal([0, 1, 2], run.Cache.Labels);
        Assert.Equal([2, 2, 2], run.Validation.CountPerClass());
        Assert.Equal(3, run.Split.First.Count);
        Assert.Equal(3, run.Split.Second.Count);
        Assert.Equal(Enumerable.Range(0, 6), run.Split.First.Concat(run.Split.Second).Order());

        // A streamed source and an in-memory data set with the same labels make the same seeded selections.
        var train = ImageNetFolder.Train(folder.Path);
        var inMemory = new ImageDataset(new byte[train.Count * 3], train.Labels.ToArray(), 3, 1, 1, train.ClassNames);
        Assert.Equal(inMemory.ClassBalancedIndices(1, 4), train.ClassBalancedIndices(1, 4));
        Assert.Equal(inMemory.SeededSplit(9, 0.5), train.SeededSplit(9, 0.5), (a, b) => a.First.SequenceEqual(b.First) && a.Second.SequenceEqual(b.Second));
        Assert.Equal(run.Cache.Files, train.Subset(train.ClassBalancedIndices(1, 4)).Files);
        Assert.Throws<ArgumentOutOfRangeException>(() => ImageNetFolder.Protocol(folder.Path, perClass: 3));
        Assert.Throws<ArgumentOutOfRangeException>(() => train.ClassBalancedIndicesAtMost(2, 0));
    }

    [Fact]
    public void FlatValidationWithoutGroundTruthFailsNamingTheFile()
    {
        using var folder = TinyImageNet(flatValidation: true);
        File.Delete(Path.Combine(folder.Path, "val", ImageNetFolder.GroundTruthFile));
        var error = Assert.Throws<DatasetFormatException>(() => ImageNetFolder.Validation(folder.Path));
        Assert.Contains(ImageNetFolder.GroundTruthFile, error.Message);
    }

    [Fact]
    public void StreamedExtractionEqualsInMemoryExtraction()
    {
        using var folder = TinyImageNet(flatValidation: true);
        var train = ImageNetFolder.Train(folder.Path);
        var pixels = new byte[train.Count * train.Shape.Size];
        train.Read(0, train.Count, pixels);
        var inMemory = new ImageDataset(pixels, train.Labels.ToArray(), 3, 224, 224, train.ClassNames);

        using var model = Model();
        using var extractor = new LayerTapExtractor(model, ["layer4", "avgpool"]);
        var options = new FeatureExtractionOptions { BatchSize = 4 };
        using var streamed = DatasetFeatureExtractor.Extract(extractor, train, InputNormalization.ImageNet, options, cancellationToken: TestContext.Current.CancellationToken);
        using var held = DatasetFeatureExtractor.Extract(extractor, inMemory, InputNormalization.ImageNet, options, cancellationToken: TestContext.Current.CancellationToken);
        Assert.Equal(0f, (streamed.Keys - held.Keys).abs().max().item<float>());
        Assert.Equal(held.Labels!.data<long>().ToArray(), streamed.Labels!.data<long>().ToArray());
    }

    [Fact]
    public void FitOverStreamedFoldersSearchesTheLastStages()
    {
        using var folder = TinyImageNet(flatValidation: true);
        var train = ImageNetFolder.Train(folder.Path);
        var validation = ImageNetFolder.Validation(folder.Path);
        using var model = Model();
        using var fit = CacheClassifier.Fit(model, train, validation, new CacheFitOptions
        {
            Store = new ExactCacheMemoryFactory(new ExactCacheOptions()),
            Input = InputNormalization.ImageNet,
            InputShape = InputShape.ImageNet,
            Candidates = ["layer3", "layer4", "avgpool"],
            MaxLayers = 2,
            BatchSize = 4,
        }, TestContext.Current.CancellationToken);
        Assert.Equal(train.Count, fit.Report.CacheSize);
        Assert.All(fit.Report.Layers, l => Assert.Contains(l, new[] { "layer3", "layer4", "avgpool" }));

        // Cache-only with a large θ on the training images themselves returns their own labels.
        fit.Classifier.SetMixing(1000, 1);
        var images = new byte[train.Count * train.Shape.Size];
        train.Read(0, train.Count, images);
        using var scope = NewDisposeScope();
        var batch = tensor(images, [train.Count, 3, 224, 224]);
        Assert.Equal(train.Labels.Select(l => (long)l).ToArray(), fit.Classifier.Predict(batch).data<long>().ToArray());
    }

    private static TorchVisionResNet Model()
    {
        manual_seed(7);
        var model = (TorchVisionResNet)new ModelRegistry().Create("torchvision:resnet18", classCount: Wnids.Length);
        return model;
    }

    /// <summary>
    /// train/&lt;wnid&gt;/ with two fixture JPEGs per class; val/ flat with a ground-truth file (labels 2, 0, 1, repeated
    /// <paramref name="validationRounds"/> times) or in wnid folders (labels 0, 1, 2, repeated).
    /// </summary>
    internal static CheckpointTempFolder TinyImageNet(bool flatValidation, int validationRounds = 1)
    {
        var folder = new CheckpointTempFolder();
        var fixtures = Directory.GetFiles(SharedData.ImageNetFixtures, "*.JPEG").Order(StringComparer.Ordinal).ToArray();
        string Fixture(string prefix, int skip = 0) => fixtures.Where(f => Path.GetFileName(f).StartsWith(prefix, StringComparison.Ordinal)).Concat(fixtures).Skip(skip).First();
        for (var c = 0; c < Wnids.Length; c++)
        {
            var classFolder = Directory.CreateDirectory(Path.Combine(folder.Path, "train", Wnids[c])).FullName;
            File.Copy(Fixture(Wnids[c]), Path.Combine(classFolder, $"{Wnids[c]}_1.JPEG"));
            File.Copy(fixtures[(3 * c) + 1], Path.Combine(classFolder, $"{Wnids[c]}_2.JPEG"));
        }

        var val = Directory.CreateDirectory(Path.Combine(folder.Path, "val")).FullName;
        int[] round = flatValidation ? [2, 0, 1] : [0, 1, 2];
        var lines = new List<string>();
        for (var i = 0; i < round.Length * validationRounds; i++)
        {
            var label = round[i % round.Length];
            var name = $"ILSVRC2012_val_{i + 1:D8}.JPEG";
            var target = flatValidation ? Path.Combine(val, name) : Path.Combine(Directory.CreateDirectory(Path.Combine(val, Wnids[label])).FullName, name);
            File.Copy(Fixture(Wnids[label], i / round.Length), target);
            lines.Add($"{name} {label}");
        }

        if (flatValidation)
        {
            File.WriteAllLines(Path.Combine(val, ImageNetFolder.GroundTruthFile), lines);
        }

        return folder;
    }
}
