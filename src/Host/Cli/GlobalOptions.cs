using System.CommandLine;

namespace ScalableCache.Host.Cli;

/// <summary>Options every command accepts. Flags override environment variables, which override appsettings.json.</summary>
internal sealed class GlobalOptions
{
    public Option<bool> Json { get; } = new("--json")
    {
        Description = "Print exactly one JSON object on stdout (logs and progress go to stderr).",
        Recursive = true,
    };

    public Option<string?> Provider { get; } = new("--provider")
    {
        Description = "Cache provider (configuration key Cache:Provider): Exact, RandomProjection, Hnsw or Orleans (a running cluster).",
        Recursive = true,
    };

    public Option<string?> Device { get; } = new("--device")
    {
        Description = "Torch device (configuration key Torch:Device): cpu, cuda or cuda:N.",
        Recursive = true,
    };

    public Option<string[]> Set { get; } = new("--set")
    {
        Description = "Override any configuration key, e.g. --set Cache:Exact:KeyBlockSize=8192 (repeatable).",
        Recursive = true,
        AllowMultipleArgumentsPerToken = false,
    };

    public Option<FileInfo?> Config { get; } = new("--config")
    {
        Description = "An extra JSON configuration file, read after appsettings.json and before environment variables.",
        Recursive = true,
    };

    public Option<bool> Verbose { get; } = new("--verbose", "-v")
    {
        Description = "Log informational messages to stderr.",
        Recursive = true,
    };

    public IEnumerable<Option> All => [Json, Provider, Device, Set, Config, Verbose];

    /// <summary>Configuration key/value pairs that the flags in <paramref name="result"/> set.</summary>
    public Dictionary<string, string?> ToConfiguration(ParseResult result)
    {
        var values = new Dictionary<string, string?>(StringComparer.OrdinalIgnoreCase);
        if (result.GetValue(Provider) is { } provider)
        {
            values["Cache:Provider"] = provider;
        }

        if (result.GetValue(Device) is { } device)
        {
            values["Torch:Device"] = device;
        }

        foreach (var pair in result.GetValue(Set) ?? [])
        {
            var eq = pair.IndexOf('=', StringComparison.Ordinal);
            if (eq <= 0)
            {
                throw new UsageException($"--set expects KEY=VALUE, got '{pair}'.");
            }

            values[pair[..eq].Trim()] = pair[(eq + 1)..].Trim();
        }

        return values;
    }
}

/// <summary>The command line is malformed in a way the parser itself does not catch.</summary>
internal sealed class UsageException(string message) : Exception(message);
