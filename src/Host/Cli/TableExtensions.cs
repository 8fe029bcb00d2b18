using Spectre.Console;

namespace ScalableCache.Host.Cli;

/// <summary>Adds table rows as plain text (layer shapes like <c>[16, 32, 32]</c> are not Spectre markup).</summary>
internal static class TableExtensions
{
    public static Table AddPlainRow(this Table table, params string[] cells)
    {
        ArgumentNullException.ThrowIfNull(table);
        return table.AddRow(cells.Select(c => (Spectre.Console.Rendering.IRenderable)new Text(c)).ToArray());
    }
}
