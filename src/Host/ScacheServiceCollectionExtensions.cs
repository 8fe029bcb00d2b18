using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using ScalableCache.Core;
using ScalableCache.Core.Models;
using ScalableCache.Host.Assets;
using ScalableCache.Host.Cli;
using ScalableCache.Host.Experiments;
using ScalableCache.Host.Commands;
using ScalableCache.Host.Serving;

namespace ScalableCache.Host;

/// <summary>Registers everything <c>scache</c> needs: options, cache providers, commands.</summary>
internal static class ScacheServiceCollectionExtensions
{
    public static IServiceCollection AddScache(this IServiceCollection services, IConfiguration configuration)
    {
        services.AddOptions<TorchOptions>().Bind(configuration.GetSection(TorchOptions.SectionName))
            .Validate(o => o.BatchSize > 0, "Torch:BatchSize must be positive.")
            .Validate(o => o.ForwardBatchSize > 0, "Torch:ForwardBatchSize must be positive.")
            .Validate(o => o.Threads >= 0, "Torch:Threads must be 0 (libtorch default) or positive.")
            .ValidateOnStart();
        services.AddOptions<CacheOptions>().Bind(configuration.GetSection(CacheOptions.SectionName))
            .Validate(o => !string.IsNullOrWhiteSpace(o.Provider), "Cache:Provider must name a provider.")
            .ValidateOnStart();

        // Every backend registers itself; Cache:Provider picks one at start-up.
        services.AddExactCache(configuration.GetSection("Cache:Exact"));
        services.AddHnswCache(configuration.GetSection("Cache:Hnsw"));
        services.AddRandomProjectionCache(configuration.GetSection("Cache:RandomProjection"));
        services.AddOrleansCache(configuration.GetSection("Cache:Orleans")); // a client: connects on first use

        services.AddSingleton<CacheProviderSelector>();
        services.AddSingleton<CommandOutput>();
        services.AddSingleton<CommandRunner>();
        services.AddSingleton<TorchRuntime>();

        services.AddOptions<AssetOptions>().Bind(configuration.GetSection(AssetOptions.SectionName));
        // Bound by hand: the binder would append configured θ/λ to the default lists instead of replacing them.
        services.AddOptions<GridSearchOptions>().Configure(o =>
            {
                var section = configuration.GetSection(GridSearchOptions.SectionName);
                if (section.GetSection(nameof(GridSearchOptions.Thetas)).Get<double[]>() is { Length: > 0 } thetas)
                {
                    o.Thetas = thetas;
                }

                if (section.GetSection(nameof(GridSearchOptions.Lambdas)).Get<double[]>() is { Length: > 0 } lambdas)
                {
                    o.Lambdas = lambdas;
                }

                o.IncludeCacheOnly = section.GetValue(nameof(GridSearchOptions.IncludeCacheOnly), o.IncludeCacheOnly);
            })
            .Validate(o => o.Validate().Count == 0, "GridSearch section is invalid (θ must be positive, λ in [0, 1], grids non-empty).")
            .ValidateOnStart();
        services.AddSingleton<IModelRegistry, ModelRegistry>();
        services.AddSingleton<AssetLocator>();
        services.AddSingleton<ProgressReporter>();
        services.AddSingleton<ExperimentSession>();
        services.AddSingleton<Table1Experiment>();
        services.AddSingleton<LayerSweepExperiment>();
        services.AddSingleton<SizeSweepExperiment>();
        services.AddSingleton<RobustnessExperiment>();
        services.AddSingleton<AttackExperiment>();
        services.AddSingleton<JacobianExperiment>();
        services.AddSingleton<OnlineExperiment>();
        services.AddSingleton<ApproximationExperiment>();
        services.AddSingleton<AuthorProtocolExperiment>();

        services.AddOptions<ServeOptions>().Bind(configuration.GetSection(ServeOptions.SectionName)); // checked by `serve` alone
        services.AddSingleton<IScacheCommand, InfoCommand>();
        services.AddSingleton<IScacheCommand, EvaluateCommand>();
        services.AddSingleton<IScacheCommand, BuildCommand>();
        services.AddSingleton<IScacheCommand, ReproduceCommand>();
        services.AddSingleton<IScacheCommand, LayerSweepCommand>();
        services.AddSingleton<IScacheCommand, SizeSweepCommand>();
        services.AddSingleton<IScacheCommand, OnlineCommand>();
        services.AddSingleton<IScacheCommand, CompareCommand>();
        services.AddSingleton<IScacheCommand, LayersCommand>();
        services.AddSingleton<IScacheCommand, BaselineCommand>();
        services.AddSingleton<IScacheCommand, ProvidersCommand>();
        services.AddSingleton<IScacheCommand, AttackCommand>();
        services.AddSingleton<IScacheCommand, JacobianCommand>();
        services.AddSingleton<IScacheCommand, OrhanCommand>();
        services.AddSingleton<IScacheCommand, ServeCommand>();
        services.AddSingleton<IScacheCommand, SiloCommand>();
        return services;
    }
}
