using Microsoft.Extensions.Logging;

namespace ScalableCache.Host.Cli;

/// <summary>A minimal logger that writes every message to stderr, so stdout stays reserved for results.</summary>
internal sealed class StderrLoggerProvider(TextWriter writer) : ILoggerProvider
{
    private readonly Lock _gate = new();

    public ILogger CreateLogger(string categoryName) => new StderrLogger(this, categoryName);

    public void Dispose()
    {
    }

    private void Write(string line)
    {
        lock (_gate)
        {
            writer.WriteLine(line);
        }
    }

    private sealed class StderrLogger(StderrLoggerProvider owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel != LogLevel.None;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            ArgumentNullException.ThrowIfNull(formatter);
            var shortCategory = category[(category.LastIndexOf('.') + 1)..];
            owner.Write($"{DateTime.Now:HH:mm:ss} {logLevel.ToString().ToLowerInvariant()[..4]} {shortCategory}: {formatter(state, exception)}" +
                (exception is null ? string.Empty : Environment.NewLine + exception));
        }
    }
}
