using System.Buffers.Binary;
using ScalableCache.Core.Data;

namespace ScalableCache.Core.Checkpoints;

/// <summary>Tells checkpoint formats apart by their first bytes.</summary>
public static class CheckpointFormats
{
    /// <summary>Largest safetensors JSON header accepted (the format's own limit is 100 MB).</summary>
    internal const long MaxSafetensorsHeader = 100L * 1024 * 1024;

    /// <summary>
    /// Detects the format of <paramref name="filePath"/> from its content: a zip local-file signature (<c>PK\x03\x04</c>) is
    /// <see cref="CheckpointFormat.TorchZip"/>; a pickle protocol-2+ opening (<c>\x80</c>, protocol ≤ 5) is
    /// <see cref="CheckpointFormat.TorchLegacy"/>; an 8-byte header length that fits the file followed by <c>{</c> is
    /// <see cref="CheckpointFormat.Safetensors"/>; the HDF5 signature <c>\x89HDF\r\n\x1a\n</c> is <see cref="CheckpointFormat.KerasHdf5"/>.
    /// The extension is ignored.
    /// </summary>
    /// <exception cref="FileNotFoundException">No regular file is there (missing, a dangling link, a directory, a named pipe).</exception>
    /// <exception cref="CheckpointException">The content matches no supported format.</exception>
    public static CheckpointFormat Detect(string filePath)
    {
        ArgumentException.ThrowIfNullOrEmpty(filePath);
        InputFile.Resolve(filePath, "Checkpoint file");

        Span<byte> head = stackalloc byte[9];
        long length;
        int read;
        using (var stream = new FileStream(filePath, FileMode.Open, FileAccess.Read, FileShare.Read, 1))
        {
            length = stream.Length;
            read = stream.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
        }

        return Detect(head[..read])
            ?? throw new CheckpointException(
                filePath,
                length == 0
                    ? "is empty; expected a checkpoint (.safetensors, PyTorch zip .pt/.pth, or legacy PyTorch .th/.pt)."
                    : $"is not a checkpoint in a known format (first bytes {Convert.ToHexString(head[..read])}); expected safetensors " +
                      "(8-byte header length, then JSON), a PyTorch zip archive (PK\\x03\\x04), a legacy PyTorch pickle (\\x80\\x02) or a Keras HDF5 model (\\x89HDF).");
    }

    private static ReadOnlySpan<byte> Hdf5Signature => [0x89, (byte)'H', (byte)'D', (byte)'F', (byte)'\r', (byte)'\n', 0x1A, (byte)'\n'];

    internal static CheckpointFormat? Detect(ReadOnlySpan<byte> head)
    {
        if (head.Length >= 8 && head[..8].SequenceEqual(Hdf5Signature))
        {
            return CheckpointFormat.KerasHdf5;
        }

        if (head.Length >= 4 && head[0] == (byte)'P' && head[1] == (byte)'K' && head[2] == 3 && head[3] == 4)
        {
            return CheckpointFormat.TorchZip;
        }

        if (head.Length >= 2 && head[0] == 0x80 && head[1] is >= 2 and <= 5)
        {
            return CheckpointFormat.TorchLegacy;
        }

        // The reader checks the header length against the file length, so a truncated file reports as truncated safetensors.
        if (head.Length >= 9)
        {
            var headerLength = BinaryPrimitives.ReadUInt64LittleEndian(head);
            if (headerLength >= 2 && headerLength <= MaxSafetensorsHeader && head[8] == (byte)'{')
            {
                return CheckpointFormat.Safetensors;
            }
        }

        return null;
    }
}
