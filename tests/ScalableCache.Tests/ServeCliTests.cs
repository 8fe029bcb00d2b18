using ScalableCache.Host;
using Xunit;

namespace ScalableCache.Tests;

/// <summary><c>scache serve</c> refuses what it cannot serve before it loads anything, each with its named exit code.</summary>
public sealed class ServeCliTests : IDisposable
{
    private readonly PersistenceTempFolder _folder = new();

    public void Dispose() => _folder.Dispose();

    [Fact]
    public async Task BadServeInvocationsFailWithTheirExitCodes()
    {
        var missing = _folder.File("missing.scache");
        await Expect(ExitCodes.Usage, "--cache is required", "serve");
        await Expect(ExitCodes.Usage, "give --layers", "serve", "--cache", missing);
        await Expect(ExitCodes.Usage, "--theta and --lambda together", "serve", "--cache", missing, "--layers", "avgpool", "--theta", "10");
        await Expect(ExitCodes.Usage, "--snapshot-interval", "serve", "--cache", missing, "--snapshot-interval", "-1");
        await Expect(ExitCodes.NotFound, "directory", "serve", "--cache", _folder.Path);
        await Expect(ExitCodes.Configuration, "Serve:MaxBatchImages", "serve", "--cache", missing, "--layers", "avgpool", "--set", "Serve:MaxBatchImages=0");
        await Expect(ExitCodes.Configuration, "Serve:Durability:MaxPendingAdds", "serve", "--cache", missing, "--layers", "avgpool", "--set", "Serve:Durability:MaxPendingAdds=0");
        Assert.False(File.Exists(missing));
    }

    private static async Task Expect(int code, string message, params string[] args)
    {
        var (actual, _, stderr) = await CliTestSupport.Run(null, args);
        Assert.True(code == actual, $"exit {actual}, expected {code}: {stderr}");
        Assert.Contains(message, stderr.ReplaceLineEndings(" "), StringComparison.Ordinal); // the console wraps long lines
    }
}
