using TorchSharp;

namespace ScalableCache.Core;

/// <summary>Resolves the configured device name (<c>cpu</c>, <c>cuda</c>, <c>cuda:N</c>) to a TorchSharp device.</summary>
public static class TorchDevices
{
    /// <summary>The native package a CUDA build references instead of <c>libtorch-cpu-linux-x64</c>.</summary>
    public const string CudaNativePackage = "TorchSharp-cuda-linux (or libtorch-cuda-12.8-linux-x64)";

    /// <summary>Parses and validates a device name; CUDA where it is not available is an <see cref="InvalidOperationException"/>.</summary>
    public static torch.Device Resolve(string? name)
    {
        var text = string.IsNullOrWhiteSpace(name) ? "cpu" : name.Trim().ToLowerInvariant();
        if (text == "cpu")
        {
            return torch.CPU;
        }

        if (text == "cuda" || text.StartsWith("cuda:", StringComparison.Ordinal))
        {
            var index = 0;
            if (text.Length > 4 && !int.TryParse(text.AsSpan(5), out index))
            {
                throw new ArgumentException($"Device '{name}' is not valid: use cpu, cuda or cuda:N.", nameof(name));
            }

            if (!torch.cuda.is_available())
            {
                throw new DeviceUnavailableException(
                    $"Device '{name}' was requested but CUDA is not available in this build: it references the CPU-only " +
                    $"native package libtorch-cpu-linux-x64. A CUDA build references {CudaNativePackage} instead " +
                    "(swap the PackageReference in src/Core/Core.csproj) and needs an NVIDIA driver.");
            }

            var count = torch.cuda.device_count();
            if (index < 0 || index >= count)
            {
                throw new ArgumentException($"Device '{name}' does not exist: {count} CUDA device(s) are visible.", nameof(name));
            }

            return torch.device(DeviceType.CUDA, index);
        }

        throw new ArgumentException($"Device '{name}' is not valid: use cpu, cuda or cuda:N.", nameof(name));
    }

    /// <summary>The device <paramref name="module"/>'s parameters live on (CPU for a parameterless module).</summary>
    public static torch.Device ParameterDevice(this torch.nn.Module module)
    {
        ArgumentNullException.ThrowIfNull(module);
        return module.parameters().Select(p => p.device).FirstOrDefault() ?? torch.CPU;
    }
}

/// <summary>The configured device exists in name but not in this build or on this machine.</summary>
public sealed class DeviceUnavailableException(string message) : InvalidOperationException(message);
