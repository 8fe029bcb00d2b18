using ScalableCache.Host.Reports;
using Xunit;

namespace ScalableCache.Tests;

public sealed class PlotWriterTests
{
    [Fact]
    public void WritesAPngWithText()
    {
        var path = Path.Combine(Path.GetTempPath(), $"scache-plot-{Guid.NewGuid():N}.png");
        try
        {
            PlotWriter.Lines(path, "title", "x axis", "y axis", [new PlotSeries("a", [1.0, 2, 3], [3.0, 1, 2])]);
            Assert.True(PlotWriter.HasFont, "no font file found for plot text");
            var bytes = File.ReadAllBytes(path);
            Assert.Equal([0x89, (byte)'P', (byte)'N', (byte)'G'], bytes[..4]);
            Assert.False(File.Exists(path + ".tmp.png"));
        }
        finally
        {
            File.Delete(path);
        }
    }
}
