namespace ScalableCache.Core.Checkpoints;

/// <summary>
/// A checkpoint file cannot be read: unknown format, truncated, corrupt, or holding something other than tensors.
/// The message names the file.
/// </summary>
public class CheckpointException : Exception
{
    /// <summary>Creates the exception; the message is <c>"{path}: {problem}"</c>.</summary>
    public CheckpointException(string filePath, string problem, Exception? innerException = null)
        : base($"{filePath}: {problem}", innerException)
    {
        FilePath = filePath;
    }

    /// <summary>The offending file.</summary>
    public string FilePath { get; }
}

/// <summary>One tensor name with its shape, as found in a model or a checkpoint.</summary>
/// <param name="Name">State-dict name (after prefix stripping).</param>
/// <param name="Shape">Shape of the tensor.</param>
public sealed record TensorShapeEntry(string Name, IReadOnlyList<long> Shape)
{
    /// <summary>The shape as <c>[a, b, …]</c>.</summary>
    public string ShapeText => Format(Shape);

    internal static string Format(IReadOnlyList<long> shape) => "[" + string.Join(", ", shape) + "]";
}

/// <summary>A tensor present in both model and checkpoint with different shapes.</summary>
/// <param name="Name">State-dict name.</param>
/// <param name="Expected">Shape in the model.</param>
/// <param name="Actual">Shape in the checkpoint.</param>
public sealed record TensorShapeMismatch(string Name, IReadOnlyList<long> Expected, IReadOnlyList<long> Actual);

/// <summary>
/// A readable checkpoint does not fit the model: every missing, unexpected and mis-shaped tensor is listed in one message
/// (name and shapes), and in <see cref="Missing"/>, <see cref="Unexpected"/>, <see cref="ShapeMismatches"/>. Nothing is loaded.
/// </summary>
public sealed class CheckpointMismatchException : CheckpointException
{
    /// <summary>Creates the exception with every problem found.</summary>
    public CheckpointMismatchException(
        string filePath,
        string modelName,
        IReadOnlyList<TensorShapeEntry> missing,
        IReadOnlyList<TensorShapeEntry> unexpected,
        IReadOnlyList<TensorShapeMismatch> shapeMismatches,
        IReadOnlyList<string>? moduleProblems = null)
        : base(filePath, Compose(modelName, missing, unexpected, shapeMismatches, moduleProblems ?? []))
    {
        ModelName = modelName;
        Missing = missing;
        Unexpected = unexpected;
        ShapeMismatches = shapeMismatches;
        ModuleProblems = moduleProblems ?? [];
    }

    /// <summary>The model's display name.</summary>
    public string ModelName { get; }

    /// <summary>Tensors the model has and the checkpoint lacks (with the model's shape).</summary>
    public IReadOnlyList<TensorShapeEntry> Missing { get; }

    /// <summary>Tensors the checkpoint has and the model lacks (with the checkpoint's shape).</summary>
    public IReadOnlyList<TensorShapeEntry> Unexpected { get; }

    /// <summary>Tensors whose shapes differ.</summary>
    public IReadOnlyList<TensorShapeMismatch> ShapeMismatches { get; }

    /// <summary>For a whole pickled module: pickled modules the model lacks, and modules of another class (see <see cref="CheckpointLoader.ModuleProblems"/>).</summary>
    public IReadOnlyList<string> ModuleProblems { get; }

    private static string Compose(
        string modelName, IReadOnlyList<TensorShapeEntry> missing, IReadOnlyList<TensorShapeEntry> unexpected, IReadOnlyList<TensorShapeMismatch> mismatches,
        IReadOnlyList<string> moduleProblems)
    {
        var lines = new List<string>
        {
            $"does not match model {modelName}: {missing.Count} missing, {unexpected.Count} unexpected, {mismatches.Count} mis-shaped tensor(s)" +
            (moduleProblems.Count > 0 ? $", {moduleProblems.Count} module(s) of another class or not in the model" : string.Empty) + "; nothing was loaded.",
        };
        lines.AddRange(moduleProblems.Select(p => $"  module:     {p}"));
        lines.AddRange(missing.Select(m => $"  missing:    {m.Name} {m.ShapeText} (in the model, not in the checkpoint)"));
        lines.AddRange(unexpected.Select(u => $"  unexpected: {u.Name} {u.ShapeText} (in the checkpoint, not in the model)"));
        lines.AddRange(mismatches.Select(s =>
            $"  shape:      {s.Name} expected {TensorShapeEntry.Format(s.Expected)}, checkpoint has {TensorShapeEntry.Format(s.Actual)}"));
        return string.Join(Environment.NewLine, lines);
    }
}
