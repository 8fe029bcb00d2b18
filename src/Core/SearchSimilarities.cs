namespace ScalableCache.Core;

/// <summary>Where a greedy layer search keeps each candidate's validation × training similarity matrix <c>[n, N]</c>.</summary>
public enum SearchSimilarities
{
    /// <summary><see cref="Files"/> when the matrices fit on the key folder's disk beside the keys, else <see cref="FromKeys"/>.</summary>
    Auto,

    /// <summary>
    /// Float16 files written during the training pass (<c>n × N × 2</c> bytes per candidate), read tile by tile by the search: the
    /// fastest search; a pass of matrix products during the extraction.
    /// </summary>
    Files,

    /// <summary>
    /// Computed from the spilled training keys and the held validation keys whenever the search reads a tile (no similarity on disk:
    /// what a full-size ImageNet search needs), at the cost of one matrix product per candidate and scored set; values rounded to
    /// float16 as the files hold them.
    /// </summary>
    FromKeys,
}
