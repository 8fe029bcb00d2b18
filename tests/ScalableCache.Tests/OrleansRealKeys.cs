using ScalableCache.Core;
using ScalableCache.Core.Data;
using ScalableCache.Core.Evaluation;
using ScalableCache.Exact;

namespace ScalableCache.Tests;

/// <summary>
/// ResNet-20 keys of real CIFAR-10 images (layers <c>layer3.0, layer3.2</c> — the report's choice — so d = 8,192), extracted
/// once per test run with <see cref="CacheFitter.Extract"/>: the first <see cref="TrainCount"/> training images as keys and
/// the first <see cref="TestCount"/> test images as queries (a subset of the 50,000 / 10,000, to keep the tests short).
/// </summary>
internal static class OrleansRealKeys
{
    public const int TrainCount = 2000;

    public const int TestCount = 250;

    public static readonly string[] Layers = ["layer3.0", "layer3.2"];

    private static readonly Lazy<(FeatureTable Train, FeatureTable Test)> Tables = new(Extract);

    public static FeatureTable Train => Tables.Value.Train;

    public static FeatureTable Test => Tables.Value.Test;

    private static (FeatureTable, FeatureTable) Extract()
    {
        using var loaded = ModelTestSupport.LoadResNet20();
        var fitter = new CacheFitter(loaded.Model, new CacheFitOptions
        {
            Store = new ExactCacheMemoryFactory(new ExactCacheOptions()),
            Input = loaded.Spec.Normalization,
            InputShape = loaded.Spec.Input,
            BatchSize = 250,
        });
        var train = fitter.Extract(Cifar10.LoadTrain(SharedData.Cifar10).Slice(0, TrainCount), Layers, "train");
        var test = fitter.Extract(ModelTestSupport.Cifar10Test.Slice(0, TestCount), Layers, "test");
        return (train, test);
    }
}
