using ScalableCache.Core.Data;
using ScalableCache.Core.Features;
using ScalableCache.Core.Persistence;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core;

/// <summary>Settings of a <see cref="CacheClassifier"/>.</summary>
public sealed class CacheClassifierOptions
{
    /// <summary>Images per forward pass (and per memory query). Must be positive.</summary>
    public int BatchSize { get; set; } = 256;

    /// <summary>
    /// Most images the backbone sees in one call (<see cref="LayerTapExtractor.ForwardBatchSize"/>): a batch of <see cref="BatchSize"/>
    /// goes through it in slices of this many, with the same outputs. Must be positive.
    /// </summary>
    public int ForwardBatchSize { get; set; } = LayerTapExtractor.DefaultForwardBatchSize;

    /// <summary>Device the images are sent to; the backbone's parameter device when <see langword="null"/>.</summary>
    public Device? Device { get; set; }

    /// <summary>The network and checkpoint the keys come from, recorded when saving (and checked when loading).</summary>
    public CacheModelId? Model { get; set; }

    /// <summary>Whether the memory also holds horizontally flipped training images (recorded when saving).</summary>
    public bool Flip { get; set; }

    /// <summary>Whether <see cref="CacheClassifier.Dispose"/> also disposes the backbone.</summary>
    public bool OwnsBackbone { get; set; }
}

/// <summary>One batch's outputs of a <see cref="CacheClassifier"/>, all <c>[b, C]</c> float32 on the CPU, owned by the caller.</summary>
/// <param name="Probabilities">The mixture <c>(1 − λ) p_net + λ p_mem</c>.</param>
/// <param name="Network"><c>p_net</c>, the backbone's softmax.</param>
/// <param name="Memory"><c>p_mem</c> at θ (all zeros while the memory is empty).</param>
public sealed record CacheOutputs(Tensor Probabilities, Tensor Network, Tensor Memory) : IDisposable
{
    /// <summary>Predicted classes <c>[b]</c> (int64): the arg-max of <see cref="Probabilities"/>, ties to the smaller class.</summary>
    public Tensor Predictions() => Probabilities.argmax(1);

    /// <summary>Disposes the three tensors.</summary>
    public void Dispose()
    {
        Probabilities.Dispose();
        Network.Dispose();
        Memory.Dispose();
    }
}

/// <summary>Settings of <see cref="CacheClassifier.Load"/>.</summary>
public sealed class CacheLoadOptions
{
    /// <summary>Factories that can restore the file's provider (and nested ones), e.g. <c>new ExactCacheMemoryFactory(new())</c>. Required.</summary>
    public IEnumerable<ICacheMemoryFactory> Providers { get; set; } = [];

    /// <summary>
    /// The network and checkpoint in use. When given, its name must match the file's model and, when the file records a checkpoint
    /// SHA-256, so must its digest (<see cref="CheckpointDigest.Sha256"/>) unless <see cref="AllowCheckpointMismatch"/> is set.
    /// </summary>
    public CacheModelId? Model { get; set; }

    /// <summary>Accept a checkpoint other than the one the cache was built with (deliberate reuse, e.g. a fine-tuned copy).</summary>
    public bool AllowCheckpointMismatch { get; set; }

    /// <summary>The key recipe for files written before recipes were recorded; when the file has one, the two must agree.</summary>
    public KeyRecipe? Recipe { get; set; }

    /// <summary>Images per forward pass.</summary>
    public int BatchSize { get; set; } = 256;

    /// <summary>
    /// Most images the backbone sees in one call (<see cref="LayerTapExtractor.ForwardBatchSize"/>): a batch of <see cref="BatchSize"/>
    /// goes through it in slices of this many, with the same outputs. Must be positive.
    /// </summary>
    public int ForwardBatchSize { get; set; } = LayerTapExtractor.DefaultForwardBatchSize;

    /// <summary>Device the images are sent to; the backbone's when <see langword="null"/>.</summary>
    public Device? Device { get; set; }

    /// <summary>Whether the loaded classifier disposes the backbone.</summary>
    public bool OwnsBackbone { get; set; }
}

/// <summary>
/// The cache model of Orhan (2018) as one object: a backbone (any TorchSharp <c>Module&lt;Tensor, Tensor&gt;</c> from images to
/// logits, tapped by module name), its <see cref="KeyRecipe"/>, a key–value <see cref="ICacheMemory"/>, and the mixing
/// parameters θ and λ: <c>p(y|x) = (1 − λ) p_net(y|x) + λ p_mem(y|x)</c>, λ = 1 being the cache alone. Fit it with
/// <see cref="Fit"/>, predict, grow it online with <see cref="Add"/>, <see cref="Save"/> it and <see cref="Load"/> it back.
/// </summary>
/// <remarks>
/// <para><b>Images.</b> Batches <c>[b, C, H, W]</c> of uint8 pixels, or floating point already in <c>[0, 1]</c>, on any device;
/// the recipe's input normalisation is applied here. Results are on the CPU and owned by the caller. Inputs are never disposed.</para>
/// <para><b>Thread-safety.</b> Any number of threads may predict while one thread adds (the memory's promise: a query sees all
/// rows of an <see cref="Add"/> or none); forward passes through the backbone are serialised (a TorchSharp module runs one pass at
/// a time). <see cref="Dispose"/> must not race with other calls.</para>
/// <para><b>Ownership.</b> The classifier owns the memory and disposes it; the backbone only with
/// <see cref="CacheClassifierOptions.OwnsBackbone"/>. The backbone is put in evaluation mode.</para>
/// </remarks>
public sealed class CacheClassifier : IDisposable
{
    private readonly LayerTapExtractor _tap;
    private readonly Lock _forward = new();
    private readonly Device _device;
    private readonly bool _ownsBackbone;
    private volatile Mixing? _mixing;
    private bool _disposed;

    /// <summary>Assembles a classifier; the memory's dimension and class count must be what the backbone produces under the recipe.</summary>
    /// <param name="backbone">Images → logits; tapped by the recipe's layer names.</param>
    /// <param name="recipe">How keys are made.</param>
    /// <param name="memory">The key store (owned from now on).</param>
    /// <param name="theta">θ, or <see langword="null"/> (with <paramref name="lambda"/>) for a classifier not tuned yet (<see cref="SetMixing"/>).</param>
    /// <param name="lambda">λ in <c>[0, 1]</c>, or <see langword="null"/>.</param>
    /// <param name="options">Batch size, device, model id; defaults when <see langword="null"/>.</param>
    /// <exception cref="ArgumentException">The memory does not fit the backbone and recipe, or θ/λ are invalid; the message names both values.</exception>
    public CacheClassifier(
        nn.Module<Tensor, Tensor> backbone, KeyRecipe recipe, ICacheMemory memory, double? theta, double? lambda, CacheClassifierOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(backbone);
        ArgumentNullException.ThrowIfNull(recipe);
        ArgumentNullException.ThrowIfNull(memory);
        options ??= new CacheClassifierOptions();
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(options.BatchSize, nameof(options));
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(options.ForwardBatchSize, nameof(options));
        if (theta.HasValue != lambda.HasValue)
        {
            throw new ArgumentException("Give both θ and λ, or neither (a classifier to tune later).");
        }

        backbone.eval();
        var (classCount, dimension) = recipe.Probe(backbone);
        if (memory.ClassCount != classCount)
        {
            throw new ArgumentException($"The memory has {memory.ClassCount} classes but the backbone outputs {classCount}.", nameof(memory));
        }

        if (memory.Dimension != dimension)
        {
            throw new ArgumentException(
                $"The memory holds keys of dimension {memory.Dimension} but the recipe's layers [{string.Join(", ", recipe.Layers)}] make {dimension}.",
                nameof(memory));
        }

        if (theta is { } t && lambda is { } l)
        {
            _mixing = Mixing.Of(t, l);
        }

        Backbone = backbone;
        Recipe = recipe;
        Memory = memory;
        BatchSize = options.BatchSize;
        Model = options.Model;
        Flip = options.Flip;
        _ownsBackbone = options.OwnsBackbone;
        _device = options.Device ?? backbone.ParameterDevice();
        _tap = new LayerTapExtractor(backbone, recipe.Layers, recipe.Normalization) { ForwardBatchSize = options.ForwardBatchSize };
    }

    /// <summary>The network.</summary>
    public nn.Module<Tensor, Tensor> Backbone { get; }

    /// <summary>How keys are made.</summary>
    public KeyRecipe Recipe { get; }

    /// <summary>The key store.</summary>
    public ICacheMemory Memory { get; }

    /// <summary>Inverse temperature θ, or <see langword="null"/> before tuning.</summary>
    public double? Theta => _mixing?.Theta;

    /// <summary>Cache weight λ in <c>[0, 1]</c> (1 = cache-only), or <see langword="null"/> before tuning.</summary>
    public double? Lambda => _mixing?.Lambda;

    /// <summary>Number of classes C.</summary>
    public int ClassCount => Memory.ClassCount;

    /// <summary>Key dimension D.</summary>
    public int Dimension => Memory.Dimension;

    /// <summary>Keys in the memory.</summary>
    public long Count => Memory.Count;

    /// <summary>Images per forward pass.</summary>
    public int BatchSize { get; }

    /// <summary>The network and checkpoint the keys come from, when known.</summary>
    public CacheModelId? Model { get; }

    /// <summary>Whether the memory holds horizontally flipped training images too.</summary>
    public bool Flip { get; }

    /// <summary>Fits a classifier: extraction, layer search (unless layers are fixed), the memory, θ/λ search; see <see cref="CacheFitter"/>.</summary>
    public static CacheFit Fit(
        nn.Module<Tensor, Tensor> backbone, IImageSource train, IImageSource validation, CacheFitOptions options, CancellationToken cancellationToken = default) =>
        new CacheFitter(backbone, options).Fit(train, validation, cancellationToken);

    /// <summary>Sets θ and λ (e.g. after tuning); queries in flight finish with the previous pair.</summary>
    public void SetMixing(double theta, double lambda) => _mixing = Mixing.Of(theta, lambda);

    /// <summary>The mixture's class probabilities <c>[b, C]</c> for images <c>[b, C, H, W]</c>.</summary>
    public Tensor Probabilities(Tensor images)
    {
        using var outputs = Classify(images);
        return outputs.Probabilities.clone();
    }

    /// <summary>Predicted classes <c>[b]</c> (int64, CPU) for images <c>[b, C, H, W]</c>.</summary>
    public Tensor Predict(Tensor images)
    {
        using var outputs = Classify(images);
        return outputs.Predictions();
    }

    /// <summary>The mixture, the network's and the memory's probabilities for images <c>[b, C, H, W]</c>.</summary>
    /// <exception cref="InvalidOperationException">θ and λ are not set yet.</exception>
    public CacheOutputs Classify(Tensor images)
    {
        var mixing = _mixing ?? throw new InvalidOperationException("θ and λ are not set: tune the classifier (CacheFitter) or call SetMixing.");
        using var scope = NewDisposeScope();
        var (keys, network) = Features(images);
        var memory = Memory.Count == 0 ? zeros_like(network) : MemoryProbabilities(keys, mixing.Theta);
        var mixed = CacheMixer.Mix(network, memory, mixing.Lambda);
        return new CacheOutputs(mixed.MoveToOuterDisposeScope(), network.MoveToOuterDisposeScope(), memory.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// Keys <c>[b, D]</c> and the network's probabilities <c>[b, C]</c> (float32, CPU) of images <c>[b, C, H, W]</c>, in batches
    /// of <see cref="BatchSize"/>. Joins the caller's dispose scope.
    /// </summary>
    public (Tensor Keys, Tensor NetworkProbabilities) Features(Tensor images)
    {
        ArgumentNullException.ThrowIfNull(images);
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (images.dim() != 4 || images.shape[1] != Recipe.InputShape.Channels)
        {
            throw new ArgumentException(
                $"images has shape [{string.Join(", ", images.shape)}]; expected [b, {Recipe.InputShape.Channels}, H, W].", nameof(images));
        }

        if (images.shape[0] == 0)
        {
            throw new ArgumentException("images holds no image.", nameof(images));
        }

        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var keys = new List<Tensor>();
        var probabilities = new List<Tensor>();
        for (long start = 0; start < images.shape[0]; start += BatchSize)
        {
            var batch = images.narrow(0, start, Math.Min(BatchSize, images.shape[0] - start));
            var x = Recipe.Input.Normalize(batch, _device);
            Tensor logits, k;
            lock (_forward)
            {
                (logits, k) = _tap.Forward(x);
            }

            CacheInputs.ThrowIfNonFinite(k, "keys", " (the backbone produced a non-finite activation)");
            keys.Add(k.cpu());
            probabilities.Add(nn.functional.softmax(logits, 1).cpu());
        }

        var allKeys = keys.Count == 1 ? keys[0] : cat(keys);
        var allProbabilities = probabilities.Count == 1 ? probabilities[0] : cat(probabilities);
        return (allKeys.MoveToOuterDisposeScope(), allProbabilities.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// Adds images <c>[n, C, H, W]</c> with their labels <c>[n]</c> to the memory (online growth): all rows or none. Safe while other
    /// threads predict.
    /// </summary>
    public void Add(Tensor images, Tensor labels)
    {
        ArgumentNullException.ThrowIfNull(images);
        ArgumentNullException.ThrowIfNull(labels);
        if (labels.dim() != 1 || images.dim() < 1 || labels.shape[0] != images.shape[0])
        {
            throw new ArgumentException(
                $"labels has shape [{string.Join(", ", labels.shape)}]; expected one label per image ([{(images.dim() > 0 ? images.shape[0] : 0)}]).",
                nameof(labels));
        }

        using var scope = NewDisposeScope();
        var (keys, _) = Features(images);
        Memory.Add(keys, labels);
    }

    /// <summary>
    /// Saves the memory with everything needed to use it again — the key recipe, the model id, θ and λ — to a cache file (atomically:
    /// an earlier file at <paramref name="path"/> stays intact if the save fails). Consistent while another thread adds.
    /// </summary>
    public CacheFileHeader Save(string path, IReadOnlyDictionary<string, string>? metadata = null, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var mixing = _mixing;
        var header = new CacheFileHeader
        {
            Model = Model ?? new CacheModelId(Backbone.GetName()),
            Layers = Recipe.Layers,
            Recipe = Recipe,
            Flip = Flip,
            Normalization = Recipe.Describe(),
            Theta = mixing?.Theta,
            Lambda = mixing?.Lambda,
            Metadata = metadata ?? new Dictionary<string, string>(),
        };
        return CacheFile.Save(path, header, Memory, cancellationToken);
    }

    /// <summary>
    /// Loads a cache file for <paramref name="backbone"/>. Before the payload is read, the file is checked against what it is given:
    /// the model name and checkpoint SHA-256 (<see cref="CacheLoadOptions.Model"/>), the class count the backbone outputs and the
    /// key width its layers produce under the file's recipe. A mismatch is a <see cref="CacheFileException"/>
    /// (<see cref="CacheFileProblem.Mismatch"/>) naming both values.
    /// </summary>
    /// <exception cref="CacheFileException">The file is unreadable, or does not fit the backbone.</exception>
    public static CacheClassifier Load(string path, nn.Module<Tensor, Tensor> backbone, CacheLoadOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        return LoadWithMemory(path, backbone, options, _ => CacheFile.Load(path, options.Providers, cancellationToken).Memory);
    }

    /// <summary>
    /// As <see cref="Load"/>, checking the file the same way,
    /// but the memory comes from <paramref name="memory"/> (given the file's header) instead of the file's payload; it must have the
    /// file's dimension and class count.
    /// </summary>
    internal static CacheClassifier LoadWithMemory(string path, nn.Module<Tensor, Tensor> backbone, CacheLoadOptions options, Func<CacheFileHeader, ICacheMemory> memory)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ArgumentNullException.ThrowIfNull(backbone);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(memory);
        var header = CacheFile.ReadHeader(path);
        CacheFileException Mismatch(string detail) => new(path, CacheFileProblem.Mismatch, detail);
        var recipe = header.Recipe ?? options.Recipe
            ?? throw Mismatch("the file records no key recipe (written before recipes were recorded); give CacheLoadOptions.Recipe.");
        if (header.Recipe is not null && options.Recipe is not null && !header.Recipe.Equals(options.Recipe))
        {
            throw Mismatch($"the file's key recipe ({header.Recipe.Describe()}; layers {string.Join(", ", header.Recipe.Layers)}) differs from the one given " +
                $"({options.Recipe.Describe()}; layers {string.Join(", ", options.Recipe.Layers)}).");
        }

        if (options.Model is { } expected)
        {
            CheckModel(header.Model, expected, options.AllowCheckpointMismatch, Mismatch);
        }

        backbone.eval();
        int classCount, dimension;
        try
        {
            (classCount, dimension) = recipe.Probe(backbone);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            throw Mismatch($"the backbone cannot make the file's keys from a {recipe.InputShape} image: {e.Message}");
        }

        if (classCount != header.ClassCount)
        {
            throw Mismatch($"the file holds {header.ClassCount} classes but the backbone outputs {classCount}.");
        }

        if (dimension != header.Dimension)
        {
            throw Mismatch($"the file holds keys of dimension {header.Dimension} but the backbone's layers [{string.Join(", ", recipe.Layers)}] make {dimension}.");
        }

        var loaded = memory(header);
        try
        {
            if (loaded.Dimension != header.Dimension || loaded.ClassCount != header.ClassCount)
            {
                throw Mismatch($"the file holds keys of dimension {header.Dimension} and {header.ClassCount} classes, but its '{loaded.Provider}' memory " +
                    $"has dimension {loaded.Dimension} and {loaded.ClassCount} classes.");
            }

            return new CacheClassifier(backbone, recipe, loaded, header.Theta, header.Lambda, new CacheClassifierOptions
            {
                BatchSize = options.BatchSize,
                ForwardBatchSize = options.ForwardBatchSize,
                Device = options.Device,
                Model = options.Model ?? header.Model,
                Flip = header.Flip,
                OwnsBackbone = options.OwnsBackbone,
            });
        }
        catch
        {
            loaded.Dispose();
            throw;
        }
    }

    /// <summary>Disposes the memory, removes the taps, and disposes the backbone when owned.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _tap.Dispose();
        Memory.Dispose();
        if (_ownsBackbone)
        {
            Backbone.Dispose();
        }
    }

    private static void CheckModel(CacheModelId stored, CacheModelId expected, bool allowCheckpointMismatch, Func<string, CacheFileException> mismatch)
    {
        if (!string.IsNullOrEmpty(expected.Name) && !string.Equals(stored.Name, expected.Name, StringComparison.OrdinalIgnoreCase))
        {
            throw mismatch($"the file was built for model '{stored.Name}', not '{expected.Name}'.");
        }

        if (allowCheckpointMismatch || stored.CheckpointSha256 is not { } recorded)
        {
            return;
        }

        if (expected.CheckpointSha256 is not { } given)
        {
            throw mismatch(
                $"the file was built with checkpoint SHA-256 {recorded}{Named(stored.CheckpointFile)}; give the digest of the checkpoint in use to check it, " +
                "or allow a checkpoint mismatch.");
        }

        if (!string.Equals(recorded, given, StringComparison.OrdinalIgnoreCase))
        {
            throw mismatch(
                $"the file was built with checkpoint SHA-256 {recorded}{Named(stored.CheckpointFile)}, but the checkpoint in use has " +
                $"{given.ToLowerInvariant()}{Named(expected.CheckpointFile)}. Rebuild the cache for this checkpoint, or allow the mismatch for deliberate reuse.");
        }
    }

    private static string Named(string? file) => file is null ? string.Empty : $" ({file})";

    private Tensor MemoryProbabilities(Tensor keys, double theta)
    {
        using var scope = NewDisposeScope();
        var parts = new List<Tensor>();
        for (long start = 0; start < keys.shape[0]; start += BatchSize)
        {
            parts.Add(Memory.MemoryProbabilities(keys.narrow(0, start, Math.Min(BatchSize, keys.shape[0] - start)), theta));
        }

        return (parts.Count == 1 ? parts[0] : cat(parts)).MoveToOuterDisposeScope();
    }

    private sealed record Mixing(double Theta, double Lambda)
    {
        public static Mixing Of(double theta, double lambda)
        {
            if (!(theta > 0 && double.IsFinite(theta)))
            {
                throw new ArgumentOutOfRangeException(nameof(theta), theta, "θ must be finite and greater than 0.");
            }

            CacheMixer.CheckLambda(lambda);
            return new Mixing(theta, lambda);
        }
    }
}

/// <summary>The SHA-256 of a checkpoint file, as cache files record it (64 lower-case hexadecimal digits).</summary>
public static class CheckpointDigest
{
    /// <summary>Hashes the file at <paramref name="path"/>.</summary>
    public static string Sha256(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(stream));
    }
}
