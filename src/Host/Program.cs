using ScalableCache.Host.Cli;

return await ScacheApplication.RunAsync(args).ConfigureAwait(false);
