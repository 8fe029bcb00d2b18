namespace ScalableCache.Core;

/// <summary>
/// Outcome of <c>CacheGridSearch.Search</c>: the best (θ, λ), its error, the whole error grid and the network's own
/// error. Errors are fractions of misclassified samples in [0, 1].
/// </summary>
/// <param name="Theta">Best θ.</param>
/// <param name="Lambda">Best λ.</param>
/// <param name="Error">Error at (<paramref name="Theta"/>, <paramref name="Lambda"/>): the smallest in the grid.</param>
/// <param name="BaselineError">Error of the network alone (λ = 0).</param>
/// <param name="Thetas">The θ grid, in the order searched (rows of <paramref name="Errors"/>).</param>
/// <param name="Lambdas">The λ grid, in the order searched (columns of <paramref name="Errors"/>).</param>
/// <param name="Errors">Error per θ (outer index) and λ (inner index).</param>
/// <param name="SampleCount">Number of samples evaluated.</param>
public sealed record GridSearchResult(
    double Theta,
    double Lambda,
    double Error,
    double BaselineError,
    IReadOnlyList<double> Thetas,
    IReadOnlyList<double> Lambdas,
    IReadOnlyList<IReadOnlyList<double>> Errors,
    long SampleCount)
{
    /// <summary>
    /// Whether the best θ is the smallest or largest θ of a grid with at least two θ values (and the best λ is not 0, where
    /// θ plays no part): the optimum may lie outside the grid, so a report should warn and suggest widening it.
    /// </summary>
    public bool ThetaAtGridEdge =>
        Lambda != 0 && Thetas.Distinct().Count() >= 2 && (Theta == Thetas.Min() || Theta == Thetas.Max());

    /// <summary>How much the cache lowers the error: <see cref="BaselineError"/> − <see cref="Error"/>.</summary>
    public double Improvement => BaselineError - Error;

    /// <summary>The error at grid position (θ index, λ index).</summary>
    public double ErrorAt(int thetaIndex, int lambdaIndex) => Errors[thetaIndex][lambdaIndex];
}
