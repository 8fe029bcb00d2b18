namespace ScalableCache.RandomProjection;

/// <summary>Which Johnson–Lindenstrauss matrix a <see cref="RandomProjectionMatrix"/> uses. Every kind has entries of variance 1/k.</summary>
public enum RandomProjectionKind
{
    /// <summary>Dense, entries drawn from <c>N(0, 1/k)</c>.</summary>
    Gaussian,

    /// <summary>Achlioptas (2003): <c>√(3/k) · {+1, 0, −1}</c> with probabilities 1/6, 2/3, 1/6 (one third non-zero).</summary>
    Achlioptas,

    /// <summary>
    /// Li, Hastie &amp; Church (2006) "very sparse": with <c>s = √d</c>, <c>√(s/k) · {+1, 0, −1}</c> with probabilities
    /// <c>1/(2s), 1 − 1/s, 1/(2s)</c> (a fraction <c>1/√d</c> non-zero).
    /// </summary>
    VerySparse,
}

/// <summary>
/// Everything needed to regenerate a <see cref="RandomProjectionMatrix"/> bit for bit: kind, seed, dimensions and the
/// generator version. Save it next to a projected cache; <see cref="RandomProjectionMatrix.Create(RandomProjectionDefinition, TorchSharp.torch.Device?)"/>
/// regenerates the matrix, <see cref="RandomProjectionMatrix.Import"/> loads saved matrix bytes instead.
/// </summary>
/// <param name="Kind">The matrix kind.</param>
/// <param name="Seed">Seed of the generator; the same seed gives the same matrix on every machine.</param>
/// <param name="InputDimension">d, the dimension of the vectors projected (columns of the matrix).</param>
/// <param name="OutputDimension">k, the dimension after projection (rows of the matrix).</param>
public sealed record RandomProjectionDefinition(RandomProjectionKind Kind, ulong Seed, int InputDimension, int OutputDimension)
{
    /// <summary>
    /// The generator algorithm the matrix comes from (documented on the generator; 1 is the only one so far). A definition
    /// whose version this build does not implement cannot be regenerated, only imported from its matrix bytes.
    /// </summary>
    public int GeneratorVersion { get; init; } = RandomProjectionMatrix.CurrentGeneratorVersion;

    /// <summary>Every problem with this definition, as messages; empty when it is valid.</summary>
    public IReadOnlyList<string> Validate()
    {
        var errors = new List<string>();
        if (!Enum.IsDefined(Kind))
        {
            errors.Add($"Projection kind '{Kind}' is not one of {string.Join(", ", Enum.GetNames<RandomProjectionKind>())}.");
        }

        if (InputDimension < 1)
        {
            errors.Add($"Input dimension must be positive (got {InputDimension}).");
        }

        if (OutputDimension < 1)
        {
            errors.Add($"Output dimension must be positive (got {OutputDimension}).");
        }

        if ((long)InputDimension * OutputDimension > Array.MaxLength)
        {
            errors.Add($"A {OutputDimension} × {InputDimension} matrix has more than {Array.MaxLength} entries.");
        }

        if (GeneratorVersion < 1)
        {
            errors.Add($"Generator version must be positive (got {GeneratorVersion}).");
        }

        return errors;
    }

    /// <inheritdoc />
    public override string ToString() =>
        $"{Kind} {InputDimension}→{OutputDimension}, seed {Seed}, generator v{GeneratorVersion}";
}
