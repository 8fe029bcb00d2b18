using ScalableCache.Core;

namespace ScalableCache.Exact;

/// <summary>
/// Settings of the exact key store (configuration section <c>Cache:Exact</c>). Every key is compared with every query:
/// one similarity matrix multiply per block of <see cref="KeyBlockSize"/> keys × <see cref="QueryBlockSize"/> queries
/// serves every θ, so working memory is O(<see cref="QueryBlockSize"/> × <see cref="KeyBlockSize"/>), never O(b × N).
/// </summary>
public sealed class ExactCacheOptions
{
    /// <summary>Configuration section name.</summary>
    public const string SectionName = "Cache:Exact";

    /// <summary>Largest accepted block size, in rows (keys or queries).</summary>
    public const int MaxBlockSize = 1 << 24;

    /// <summary>
    /// Device that holds the keys and does the similarity work: <c>cpu</c>, <c>cuda</c> or <c>cuda:N</c>.
    /// <see langword="null"/> (the default) uses <see cref="TorchOptions.Device"/> (<c>Torch:Device</c>), itself <c>cpu</c> by default.
    /// </summary>
    public string? Device { get; set; }

    /// <summary>
    /// How keys are stored, in memory and in the key files this store writes (<c>Cache:Exact:StorageType</c>):
    /// <see cref="ExactStorageType.Float32"/> (4 bytes per component), <see cref="ExactStorageType.Float16"/> or
    /// <see cref="ExactStorageType.BFloat16"/> (2 bytes per component; each key block is converted to float32 on the fly, so
    /// similarities are still computed in float32). A memory opened from a key file keeps the file's type.
    /// </summary>
    public ExactStorageType StorageType { get; set; } = ExactStorageType.Float32;

    /// <summary>The tensor element type of <see cref="StorageType"/>.</summary>
    public TorchSharp.torch.ScalarType StorageScalarType => ToScalarType(StorageType);

    /// <summary>The tensor element type of a storage type.</summary>
    public static TorchSharp.torch.ScalarType ToScalarType(ExactStorageType type) => type switch
    {
        ExactStorageType.Float16 => TorchSharp.torch.ScalarType.Float16,
        ExactStorageType.BFloat16 => TorchSharp.torch.ScalarType.BFloat16,
        _ => TorchSharp.torch.ScalarType.Float32,
    };

    /// <summary>The storage type of a tensor element type (Float32, Float16 or BFloat16).</summary>
    public static ExactStorageType FromScalarType(TorchSharp.torch.ScalarType type) => type switch
    {
        TorchSharp.torch.ScalarType.Float16 => ExactStorageType.Float16,
        TorchSharp.torch.ScalarType.BFloat16 => ExactStorageType.BFloat16,
        TorchSharp.torch.ScalarType.Float32 => ExactStorageType.Float32,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "The exact store keeps Float32, Float16 or BFloat16 keys."),
    };

    /// <summary>
    /// Keys per similarity block, in keys. Each block costs one <c>[block, d] × [d, queries]</c> matrix multiply and
    /// a few element-wise passes over a <c>[block, queries]</c> float32 matrix. Range 1 … <see cref="MaxBlockSize"/>.
    /// </summary>
    public int KeyBlockSize { get; set; } = 4096;

    /// <summary>
    /// Keys per chunk of the key files this store writes (<c>Cache:Exact:KeyFileRowsPerChunk</c>), in keys; 0 (the default) makes
    /// chunks of about 64 MiB of keys. A stopped streaming build resumes at a chunk boundary. Range 0 … <see cref="MaxBlockSize"/>.
    /// </summary>
    public int KeyFileRowsPerChunk { get; set; }

    /// <summary>
    /// Whether a memory opened from a key file saves a <em>reference</em> to it (<c>Cache:Exact:SaveKeyFileByReference</c>; default
    /// false): the cache file then records the key file's name and checksum and only the keys added since, instead of a copy of every
    /// key, and loading it maps the key file again (which must stay in the cache file's folder, under that name).
    /// </summary>
    public bool SaveKeyFileByReference { get; set; }

    /// <summary>
    /// Whether opening a key file (directly, or through a cache file that references one) reads every key once to check its digests,
    /// finiteness and norms (<c>Cache:Exact:VerifyKeyFiles</c>; default true). Off, opening reads only pages and labels.
    /// </summary>
    public bool VerifyKeyFiles { get; set; } = true;

    /// <summary>Queries per similarity block, in queries. Range 1 … <see cref="MaxBlockSize"/>.</summary>
    public int QueryBlockSize { get; set; } = 1024;

    /// <summary>A copy, so a memory is not affected by later changes to the options object it was created from.</summary>
    public ExactCacheOptions Clone() => (ExactCacheOptions)MemberwiseClone();

    /// <summary>A copy of settings that <see cref="Validate"/> accepts; otherwise an <see cref="ArgumentException"/> listing every problem.</summary>
    internal ExactCacheOptions ValidatedClone(string paramName)
    {
        var errors = Validate();
        return errors.Count == 0
            ? Clone()
            : throw new ArgumentException("Invalid exact cache options: " + string.Join(" ", errors), paramName);
    }

    /// <summary>
    /// Every problem with these settings, as messages naming the setting; empty when they are valid. A <see cref="Device"/>
    /// that is malformed, or names CUDA where this build or machine has none, is a problem.
    /// </summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (KeyBlockSize is < 1 or > MaxBlockSize)
        {
            errors.Add($"Cache:Exact:KeyBlockSize must be between 1 and {MaxBlockSize} keys (got {KeyBlockSize}).");
        }

        if (QueryBlockSize is < 1 or > MaxBlockSize)
        {
            errors.Add($"Cache:Exact:QueryBlockSize must be between 1 and {MaxBlockSize} queries (got {QueryBlockSize}).");
        }

        if (KeyFileRowsPerChunk is < 0 or > MaxBlockSize)
        {
            errors.Add($"Cache:Exact:KeyFileRowsPerChunk must be between 0 (about 64 MiB of keys) and {MaxBlockSize} keys (got {KeyFileRowsPerChunk}).");
        }

        if (!Enum.IsDefined(StorageType))
        {
            errors.Add($"Cache:Exact:StorageType '{StorageType}' is not one of {string.Join(", ", Enum.GetNames<ExactStorageType>())}.");
        }

        if (Device is not null)
        {
            try
            {
                TorchDevices.Resolve(Device);
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException)
            {
                errors.Add($"Cache:Exact:Device: {e.Message}");
            }
        }

        return errors;
    }
}

/// <summary>How the exact store keeps key vectors.</summary>
public enum ExactStorageType
{
    /// <summary>4 bytes per component; similarities equal the float32 dot product up to rounding.</summary>
    Float32,

    /// <summary>2 bytes per component (IEEE half); each key component carries about 5e-4 relative rounding error.</summary>
    Float16,

    /// <summary>2 bytes per component (bfloat16: float32's range, 8 significant bits); about 4e-3 relative rounding error.</summary>
    BFloat16,
}
