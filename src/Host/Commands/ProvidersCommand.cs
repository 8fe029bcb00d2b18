using System.CommandLine;
using Microsoft.Extensions.DependencyInjection;
using ScalableCache.Core;
using ScalableCache.Host.Cli;
using Spectre.Console;

namespace ScalableCache.Host.Commands;

/// <summary><c>scache providers</c>: the registered cache providers and the one configuration selects.</summary>
internal sealed class ProvidersCommand : IScacheCommand
{
    public ProvidersCommand(CommandRunner runner, IServiceProvider services)
    {
        Definition = new Command("providers", "List the registered cache providers and the selected one (Cache:Provider).");
        Definition.SetAction((parse, ct) => runner.RunAsync("providers", _ =>
        {
            var selector = services.GetRequiredService<CacheProviderSelector>();
            var result = new { registered = selector.Registered, selected = selector.Selected.Provider };
            return Task.FromResult(new CommandOutcome(result, console =>
            {
                foreach (var name in selector.Registered)
                {
                    var mark = name == selector.Selected.Provider ? "[green]*[/]" : " ";
                    console.MarkupLine($"{mark} {Markup.Escape(name)}");
                }
            }));
        }, ct));
    }

    public Command Definition { get; }
}
