// Quickstart: a cached classifier (Orhan 2018) from C#. Usage: Quickstart [CIFAR-10 folder] [resnet20 checkpoint] [images per class]
using ScalableCache.Core;
using ScalableCache.Core.Data;
using ScalableCache.Core.Models;
using ScalableCache.Core.Persistence;
using ScalableCache.Exact;
using static TorchSharp.torch;

var data = args.Length > 0 ? args[0] : "../shared/data/cifar10";
var weights = args.Length > 1 ? args[1] : "../shared/models/cifar10/resnet20.safetensors";
var perClass = args.Length > 2 ? int.Parse(args[2], System.Globalization.CultureInfo.InvariantCulture) : 500;

// A pretrained backbone: any TorchSharp Module<Tensor, Tensor> from images to logits would do.
using var net = new ModelRegistry().Load("resnet20", weights);
var id = new CacheModelId("resnet20", CheckpointDigest.Sha256(weights), Path.GetFileName(weights));
var train = Cifar10.LoadTrain(data).ClassBalancedSubset(perClass, seed: 0);
var test = Cifar10.LoadTest(data).ClassBalancedSubset(perClass / 5, seed: 0);
var halves = test.SeededSplit(seed: 0, fraction: 0.5);
var (validation, report) = (test.Subset(halves.First), test.Subset(halves.Second));

// Fit: keys of two layers, the exact store, θ and λ searched on the validation images.
var store = new ExactCacheMemoryFactory(new ExactCacheOptions());
using var fit = CacheClassifier.Fit(net.Model, train, validation, new CacheFitOptions
{
    Store = store, Input = net.Spec.Normalization, InputShape = net.Spec.Input, Layers = ["layer3.2", "avgpool"], Model = id,
});
var cache = fit.Classifier;
using var images = report.ToTensor(0, report.Count);
using var labels = report.LabelsToTensor(0, report.Count);
double Error(Tensor predictions) => predictions.ne(labels).sum().item<long>() / (double)report.Count;
using var network = fit.Classifier.Classify(images);
Console.WriteLine($"{cache.Count} keys × {cache.Dimension}, θ = {cache.Theta}, λ = {cache.Lambda}");
Console.WriteLine($"error: network {Error(network.Network.argmax(1)):P2}, cache model {Error(cache.Predict(images)):P2}");

// Grow the memory with labelled images, save it, load it back: the same probabilities.
cache.Add(images, labels);
var file = Path.Combine(Path.GetTempPath(), "quickstart.scache");
cache.Save(file);
using var loaded = CacheClassifier.Load(file, net.Model, new CacheLoadOptions { Providers = [store], Model = id });
using var before = cache.Probabilities(images);
using var after = loaded.Probabilities(images);
var same = before.eq(after).all().item<bool>();
Console.WriteLine($"after growing to {loaded.Count} keys and a save/load round trip: error {Error(loaded.Predict(images)):P2}, probabilities {(same ? "identical" : "DIFFERENT")}");
File.Delete(file);
return same ? 0 : 1;
