using System.CommandLine;

namespace ScalableCache.Host.Cli;

/// <summary>A <c>scache</c> sub-command, registered as a DI service. Its action runs inside <see cref="CommandRunner"/>.</summary>
internal interface IScacheCommand
{
    /// <summary>The System.CommandLine definition with its action set.</summary>
    Command Definition { get; }
}
