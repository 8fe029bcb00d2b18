using System.Globalization;
using System.Text;

namespace ScalableCache.Host.Reports;

/// <summary>Small helpers for Markdown reports.</summary>
internal static class Markdown
{
    /// <summary>A pipe table.</summary>
    public static string Table(IReadOnlyList<string> header, IEnumerable<IReadOnlyList<string>> rows)
    {
        ArgumentNullException.ThrowIfNull(header);
        ArgumentNullException.ThrowIfNull(rows);
        var sb = new StringBuilder();
        sb.Append("| ").AppendJoin(" | ", header).AppendLine(" |");
        sb.Append('|').AppendJoin('|', header.Select(_ => "---")).AppendLine("|");
        foreach (var row in rows)
        {
            sb.Append("| ").AppendJoin(" | ", row).AppendLine(" |");
        }

        return sb.ToString();
    }

    /// <summary>An error fraction as a percentage with two decimals, e.g. <c>8.27 %</c>.</summary>
    public static string Percent(double fraction) => (fraction * 100).ToString("0.00", CultureInfo.InvariantCulture) + " %";

    /// <summary>Invariant-culture number.</summary>
    public static string Number(double value, string format = "G4") => value.ToString(format, CultureInfo.InvariantCulture);
}
