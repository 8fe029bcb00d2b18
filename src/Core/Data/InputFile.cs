using System.Runtime.InteropServices;

namespace ScalableCache.Core.Data;

/// <summary>
/// Checks, before anything opens it, that an input path leads to a regular file: symbolic links are followed to their final
/// target (whose length is what <see cref="Resolve"/> returns), and a missing file, a dangling link, a link loop, a directory
/// or a special file (named pipe, socket, device) fails with a <see cref="FileNotFoundException"/> that names the path and
/// says which of these it is. Opening a named pipe would block until a writer appears; it is rejected without opening it.
/// </summary>
public static partial class InputFile
{
    /// <summary>The regular file <paramref name="path"/> leads to, after following symbolic links.</summary>
    /// <param name="path">The path as given (relative paths are from the working directory).</param>
    /// <param name="what">What the file is, for messages, e.g. <c>"Cache file (from --cache)"</c>.</param>
    /// <param name="hint">Appended to every message, e.g. how to point at another file; may be empty.</param>
    /// <exception cref="FileNotFoundException">No regular file is reachable at <paramref name="path"/>; the message says why.</exception>
    public static FileInfo Resolve(string path, string what, string hint = "")
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(what);
        if (string.IsNullOrWhiteSpace(path))
        {
            throw Missing(what, path, "is an empty path", hint);
        }

        var full = Path.GetFullPath(path);
        var target = full;
        if (new FileInfo(full).LinkTarget is { } link)
        {
            FileSystemInfo? final;
            try
            {
                final = new FileInfo(full).ResolveLinkTarget(returnFinalTarget: true);
            }
            catch (IOException ex)
            {
                throw Missing(what, full, $"is a symbolic link loop ({ex.Message.TrimEnd('.')})", hint);
            }

            target = final?.FullName ?? Path.GetFullPath(link, Path.GetDirectoryName(full)!);
            if (!File.Exists(target) && !Directory.Exists(target))
            {
                throw Missing(what, full, $"is a symbolic link to '{target}', which does not exist", hint);
            }
        }

        if (Directory.Exists(target))
        {
            throw Missing(what, full, target == full ? "is a directory, not a file" : $"leads to the directory '{target}', not a file", hint);
        }

        if (!File.Exists(target))
        {
            throw Missing(what, full, "does not exist", hint);
        }

        if (SpecialFileKind(target) is { } kind)
        {
            throw Missing(what, full, $"is a {kind}, not a regular file", hint);
        }

        return new FileInfo(target);
    }

    private static FileNotFoundException Missing(string what, string path, string problem, string hint) =>
        new($"{what} '{path}' {problem}.{(hint.Length > 0 ? " " + hint : string.Empty)}", path);

    /// <summary>What kind of special file <paramref name="path"/> is (Linux <c>statx</c>); null for a regular file or where unknown.</summary>
    private static string? SpecialFileKind(string path)
    {
        if (!OperatingSystem.IsLinux())
        {
            return null;
        }

        try
        {
            if (Native.Statx(Native.AtFdCwd, path, 0, Native.StatxType, out var status) != 0 || (status.Mask & Native.StatxType) == 0)
            {
                return null;
            }

            return (status.Mode & Native.TypeMask) switch
            {
                Native.Regular => null,
                Native.Fifo => "named pipe (FIFO)",
                Native.Socket => "socket",
                Native.CharacterDevice => "character device",
                Native.BlockDevice => "block device",
                _ => "special file",
            };
        }
        catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
        {
            return null;
        }
    }

    /// <summary><c>statx(2)</c> from glibc (2.28+): its buffer layout is the same on every Linux architecture.</summary>
    private static partial class Native
    {
        public const int AtFdCwd = -100;
        public const uint StatxType = 0x1;
        public const int TypeMask = 0xF000;
        public const int Fifo = 0x1000;
        public const int CharacterDevice = 0x2000;
        public const int BlockDevice = 0x6000;
        public const int Regular = 0x8000;
        public const int Socket = 0xC000;

        /// <summary>The leading fields of <c>struct statx</c> (256 bytes in all): <c>stx_mask</c> at 0, <c>stx_mode</c> at 28.</summary>
        [StructLayout(LayoutKind.Explicit, Size = 256)]
        public struct StatxBuffer
        {
            [FieldOffset(0)]
            public uint Mask;

            [FieldOffset(28)]
            public ushort Mode;
        }

        [LibraryImport("libc.so.6", EntryPoint = "statx", StringMarshalling = StringMarshalling.Utf8)]
        public static partial int Statx(int directory, string path, int flags, uint mask, out StatxBuffer buffer);
    }
}
