using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using ScalableCache.Core.Data;

namespace ScalableCache.Host.Assets;

/// <summary>
/// Finds the data set and checkpoints a command needs: flag → environment (<c>SCACHE_DATA</c>, <c>SCACHE_MODELS</c>) →
/// configuration (<see cref="AssetOptions"/>). A public checkpoint that is not on disk is downloaded from its canonical URL
/// and its SHA-256 checked; offline, the error says so and how to point at a local copy.
/// </summary>
internal sealed class AssetLocator(IOptions<AssetOptions> options, ILogger<AssetLocator> logger)
{
    /// <summary>Environment variable naming the checkpoint folder.</summary>
    public const string ModelsEnvironmentVariable = "SCACHE_MODELS";

    private const string CifarBaseUrl = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/";
    private const string TorchVisionBaseUrl = "https://download.pytorch.org/models/";

    // Public checkpoints by registry name. Every file name carries the first 8 hex digits of its SHA-256 (checked on download; the
    // whole digest too where it is recorded). The CIFAR ResNets are Idelbayev's (BSD-2-Clause); the torchvision ones are its
    // IMAGENET1K_V1 weights (BSD-3-Clause), zip state dicts as torch.save writes them (DenseNet with its pre-0.3 names).
    private static readonly Dictionary<string, (string File, string? Sha256, string BaseUrl)> PublicCheckpoints = new(StringComparer.OrdinalIgnoreCase)
    {
        ["resnet20"] = ("resnet20-12fca82f.th", "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8", CifarBaseUrl),
        ["resnet32"] = ("resnet32-d509ac18.th", "d509ac1820d7f25398913559d7e81a13229b1e7adc5648e3bfa5e22dc137f850", CifarBaseUrl),
        ["resnet44"] = ("resnet44-014dd654.th", null, CifarBaseUrl),
        ["resnet56"] = ("resnet56-4bfd9763.th", "4bfd97631478d6b638d2764fd2baff3edb1d7d82252d54439343b6596b9b5367", CifarBaseUrl),
        ["resnet110"] = ("resnet110-1d1ed7c2.th", null, CifarBaseUrl),
        ["torchvision:resnet18"] = ("resnet18-f37072fd.pth", null, TorchVisionBaseUrl),
        ["torchvision:resnet34"] = ("resnet34-b627a593.pth", null, TorchVisionBaseUrl),
        ["torchvision:resnet50"] = ("resnet50-0676ba61.pth", null, TorchVisionBaseUrl),
        ["torchvision:resnet101"] = ("resnet101-63fe2227.pth", null, TorchVisionBaseUrl),
        ["torchvision:resnet152"] = ("resnet152-394f9c45.pth", null, TorchVisionBaseUrl),
        ["torchvision:densenet121"] = ("densenet121-a639ec97.pth", null, TorchVisionBaseUrl),
        ["torchvision:densenet161"] = ("densenet161-8d451a50.pth", null, TorchVisionBaseUrl),
        ["torchvision:densenet169"] = ("densenet169-b2777c0a.pth", null, TorchVisionBaseUrl),
        ["torchvision:densenet201"] = ("densenet201-c1103571.pth", null, TorchVisionBaseUrl),
    };

    /// <summary>The CIFAR-10 <c>cifar-10-batches-bin</c> folder, validated for <paramref name="parts"/>.</summary>
    public string Cifar10(string? flag, DatasetParts parts = DatasetParts.All)
    {
        var path = flag ?? Environment.GetEnvironmentVariable(DatasetLocator.EnvironmentVariable) ?? options.Value.Cifar10;
        return DatasetLocator.ResolveCifar10(path, parts);
    }

    /// <summary>
    /// The CIFAR-100 <c>cifar-100-binary</c> folder, validated for <paramref name="parts"/>: <paramref name="flag"/>, else
    /// <c>SCACHE_CIFAR100</c>, else <c>Assets:Cifar100</c>.
    /// </summary>
    public string Cifar100(string? flag, DatasetParts parts = DatasetParts.All)
    {
        var path = flag ?? Environment.GetEnvironmentVariable(Cifar100EnvironmentVariable) ?? options.Value.Cifar100;
        return DatasetLocator.ResolveCifar100(path, parts);
    }

    /// <summary>Environment variable naming the CIFAR-100 folder.</summary>
    public const string Cifar100EnvironmentVariable = "SCACHE_CIFAR100";

    /// <summary>The checkpoint for <paramref name="model"/>: <paramref name="flag"/>, else found in the models folder, else downloaded.</summary>
    public async Task<string> CheckpointAsync(string model, string? flag, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (flag is not null)
        {
            InputFile.Resolve(flag, "Checkpoint (from --weights)");
            return Path.GetFullPath(flag);
        }

        var folder = Environment.GetEnvironmentVariable(ModelsEnvironmentVariable) ?? options.Value.Models;
        var stem = FileStem(model);
        var found = FindIn(folder, stem) ?? FindIn(DownloadFolder, stem);
        if (found is null && KnownLocalFile(model) is { } known)
        {
            return File.Exists(known)
                ? Path.GetFullPath(known)
                : throw new FileNotFoundException($"No checkpoint for '{model}': {Path.GetFullPath(known)} does not exist. Pass --weights FILE.");
        }

        if (found is not null)
        {
            return found;
        }

        if (!PublicCheckpoints.TryGetValue(model, out var entry))
        {
            throw new FileNotFoundException(
                $"No checkpoint for '{model}' in '{Path.GetFullPath(folder)}' (looked for {string.Join(", ", Patterns(stem))}) " +
                $"and no public download is known for it. Pass --weights FILE or set {ModelsEnvironmentVariable} to a folder that holds one.");
        }

        return await DownloadAsync(model, entry.File, entry.Sha256, entry.BaseUrl + entry.File, folder, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// The file-name stem checkpoints of <paramref name="model"/> go by: the name after a family prefix such as <c>torchvision:</c>
    /// (<c>torchvision:resnet50</c> → <c>resnet50</c>, as torchvision names its files), else the name itself.
    /// </summary>
    internal static string FileStem(string model) => model[(model.LastIndexOf(':') + 1)..];

    private static string[] Patterns(string stem) =>
        [$"{stem}.safetensors", $"{stem}.pt", $"{stem}.pth", $"{stem}-*.pth", $"{stem}-*.th", $"{stem}.th"];

    /// <summary>A model whose published file has a name of its own (the author's Keras models), in its configured folder.</summary>
    private string? KnownLocalFile(string model)
    {
        if (ScalableCache.Core.Models.OrhanModels.Find(model) is { } orhan)
        {
            return Path.Combine(options.Value.KerasModels, orhan.File);
        }

        // Published files with names of their own, beside the CIFAR-10 models folder (shared/models/…).
        var root = Path.GetDirectoryName(Path.GetFullPath(options.Value.Models)) ?? ".";
        return model.ToLowerInvariant() switch
        {
            ScalableCache.Core.Models.ModelRegistry.DenseNetBc100 => Path.Combine(root, "cifar10", "densenet100-bc", "densenet_cifar10.pth"),
            ScalableCache.Core.Models.ModelRegistry.Cifar100ResNet56 => Path.Combine(root, "cifar100", "cifar100_resnet56-f2eff4c8.pt"),
            _ => null,
        };
    }

    private string DownloadFolder => string.IsNullOrEmpty(options.Value.DownloadCache)
        ? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "scalablecache", "models")
        : options.Value.DownloadCache;

    private static string? FindIn(string folder, string stem)
    {
        if (!Directory.Exists(folder))
        {
            return null;
        }

        foreach (var pattern in Patterns(stem))
        {
            var match = Directory.EnumerateFiles(folder, pattern).Order(StringComparer.Ordinal).FirstOrDefault();
            if (match is not null)
            {
                return Path.GetFullPath(match);
            }
        }

        return null;
    }

    private async Task<string> DownloadAsync(string model, string file, string? sha256, string url, string searched, CancellationToken cancellationToken)
    {
        var hint = $"Pass --weights FILE or set {ModelsEnvironmentVariable} (or Assets:Models) to a folder holding {file} or {FileStem(model)}.safetensors.";
        if (!options.Value.AllowDownload)
        {
            throw new FileNotFoundException($"No checkpoint for '{model}' in '{Path.GetFullPath(searched)}' and downloads are off (Assets:AllowDownload). {hint}");
        }

        Directory.CreateDirectory(DownloadFolder);
        var target = Path.Combine(DownloadFolder, file);
        var temp = target + ".part";
        logger.LogWarning("Downloading {Model} checkpoint from {Url}", model, url);
        try
        {
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(60) };
            using (var response = await http.GetAsync(new Uri(url), HttpCompletionOption.ResponseHeadersRead, cancellationToken).ConfigureAwait(false))
            {
                response.EnsureSuccessStatusCode();
                await using var output = File.Create(temp);
                await response.Content.CopyToAsync(output, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException or IOException)
        {
            File.Delete(temp);
            throw new FileNotFoundException(
                $"No checkpoint for '{model}' in '{Path.GetFullPath(searched)}', and downloading {url} failed ({ex.Message}); this machine may be offline. {hint}", ex);
        }

        await using (var stream = File.OpenRead(temp))
        {
            var actual = Convert.ToHexStringLower(await SHA256.HashDataAsync(stream, cancellationToken).ConfigureAwait(false));
            var expectedPrefix = file[(file.LastIndexOf('-') + 1)..file.LastIndexOf('.')];
            if ((sha256 is not null && actual != sha256) || !actual.StartsWith(expectedPrefix, StringComparison.Ordinal))
            {
                stream.Close();
                File.Delete(temp);
                throw new InvalidDataException($"Downloaded {url} has SHA-256 {actual}, expected {sha256 ?? expectedPrefix + "…"}; the file was discarded.");
            }
        }

        File.Move(temp, target, overwrite: true);
        return target;
    }
}
