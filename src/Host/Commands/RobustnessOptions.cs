using System.CommandLine;
using ScalableCache.Host.Cli;
using ScalableCache.Host.Experiments;

namespace ScalableCache.Host.Commands;

/// <summary>
/// The cache-setup flags the robustness commands (<c>attack</c>, <c>jacobian</c>) share — data, report folder, seed, layers
/// and their search, the θ/λ grid or fixed θ, λ and cache-only θ, and the quick-run limits — and their translation into a
/// <see cref="RobustnessRequest"/>.
/// </summary>
internal sealed class RobustnessOptions
{
    public Option<string?> Data { get; } = CommonOptions.Data();

    public Option<string?> Output { get; } = CommonOptions.Out();

    public Option<int> Seed { get; } = CommonOptions.Seed();

    public Option<string?> Layers { get; } = CommonOptions.Layers();

    public Option<string?> Candidates { get; } = CommonOptions.Candidates();

    public Option<int> MaxLayers { get; } = CommonOptions.MaxLayers();

    public Option<string?> Thetas { get; } = CommonOptions.Thetas();

    public Option<string?> Lambdas { get; } = CommonOptions.Lambdas();

    public Option<double?> Theta { get; } = CommonOptions.Theta("Fixed θ of the cache model (with --lambda); omit both to search them on the validation half.");

    public Option<double?> Lambda { get; } = CommonOptions.Lambda("Fixed λ of the cache model (with --theta).");

    public Option<double?> CacheOnlyTheta { get; } = CommonOptions.Theta("Fixed θ of the cache-only model; omitted: searched on the validation half.", "--cache-only-theta");

    public Option<int?> MaxTrain { get; } = CommonOptions.MaxTrain();

    public Option<int?> MaxTest { get; } = CommonOptions.MaxTest();

    /// <summary>Adds every shared option to <paramref name="command"/>, after its own.</summary>
    public void AddTo(Command command)
    {
        ArgumentNullException.ThrowIfNull(command);
        Option[] all = [Data, Output, Seed, Layers, Candidates, MaxLayers, Thetas, Lambdas, Theta, Lambda, CacheOnlyTheta, MaxTrain, MaxTest];
        foreach (var option in all)
        {
            command.Options.Add(option);
        }
    }

    /// <summary>How <paramref name="model"/>'s cache is set up, from the parsed flags.</summary>
    /// <exception cref="UsageException">Only one of --theta and --lambda.</exception>
    public RobustnessRequest Request(ParseResult parse, ExperimentSession session, string model)
    {
        ArgumentNullException.ThrowIfNull(parse);
        ArgumentNullException.ThrowIfNull(session);
        var fixedTheta = parse.GetValue(Theta);
        var fixedLambda = parse.GetValue(Lambda);
        var fixedCacheOnly = parse.GetValue(CacheOnlyTheta);
        if (fixedTheta.HasValue != fixedLambda.HasValue)
        {
            throw new UsageException("Give --theta and --lambda together, or neither to search them.");
        }

        var grid = session.Grid(parse, Thetas, Lambdas);
        return new RobustnessRequest(
            model, parse.GetValue(Data), CommonOptions.Names(parse.GetValue(Layers)), CommonOptions.Names(parse.GetValue(Candidates)), parse.GetValue(MaxLayers),
            parse.GetValue(Seed), grid, fixedTheta, fixedLambda, fixedCacheOnly, parse.GetValue(MaxTrain), parse.GetValue(MaxTest));
    }
}
