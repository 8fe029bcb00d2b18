using System.Text.Json;

namespace ScalableCache.Host.Serving;

/// <summary>The JSON body of <c>POST /v1/predict</c> and <c>POST /v1/memory</c>: <see cref="Images"/> or <see cref="Tensor"/>.</summary>
/// <param name="Images">Base64-encoded PNG or JPEG images of the model's input size.</param>
/// <param name="Tensor">Or: images as floats in [0, 1].</param>
/// <param name="Labels">For <c>/v1/memory</c>: one label per image, a class index or a class name.</param>
internal sealed record ImagesJsonBody(IReadOnlyList<string>? Images, TensorJson? Tensor, IReadOnlyList<JsonElement>? Labels);

/// <summary>Images as a tensor <c>[n, C, H, W]</c> of floats in [0, 1], row-major (planar RGB per image).</summary>
/// <param name="Shape">[n, C, H, W]; C, H, W must be the model's.</param>
/// <param name="Data">n·C·H·W numbers.</param>
internal sealed record TensorJson(IReadOnlyList<int> Shape, IReadOnlyList<float> Data);

/// <summary>The answer of <c>POST /v1/predict</c>.</summary>
/// <param name="Predictions">One per image, in request order.</param>
/// <param name="Keys">Keys in the memory that answered.</param>
internal sealed record PredictResponse(IReadOnlyList<ImagePrediction> Predictions, long Keys);

/// <summary>One image's answer.</summary>
/// <param name="Class">The predicted class: the arg-max of <paramref name="Probabilities"/>.</param>
/// <param name="Label">Its name.</param>
/// <param name="Probabilities">The mixture <c>(1 − λ) p_net + λ p_mem</c>, one per class.</param>
/// <param name="Network"><c>p_net</c>, the network's softmax.</param>
/// <param name="Memory"><c>p_mem</c>, the cache's (all zeros while the memory is empty).</param>
internal sealed record ImagePrediction(long Class, string Label, float[] Probabilities, float[] Network, float[] Memory);

/// <summary>The answer of <c>POST /v1/memory</c>, sent once the add is durable.</summary>
/// <param name="Added">Images added.</param>
/// <param name="FirstKey">Index of the first added key in the memory (the add's keys are <c>FirstKey … FirstKey + Added − 1</c>).</param>
/// <param name="Keys">Keys in the memory after the add's group commit.</param>
internal sealed record MemoryResponse(int Added, long FirstKey, long Keys);

/// <summary>The answer of <c>GET /v1/health</c>.</summary>
/// <param name="Status"><c>healthy</c>, or <c>unhealthy</c> (503) when adds are refused.</param>
/// <param name="Keys">Keys in the memory.</param>
/// <param name="Reason">Why unhealthy.</param>
internal sealed record HealthResponse(string Status, long Keys, string? Reason = null);

/// <summary>The answer of <c>GET /v1/info</c>.</summary>
internal sealed record InfoResponse(
    string Model,
    string? CheckpointSha256,
    string? CheckpointFile,
    IReadOnlyList<string> Layers,
    string KeyNormalization,
    InputInfo Input,
    string Provider,
    double? Theta,
    double? Lambda,
    long Keys,
    int Dimension,
    IReadOnlyList<string> Classes,
    string Version,
    DateTime StartedUtc,
    SnapshotInfo Snapshot,
    LogInfo Log,
    RecoveryInfo Recovery,
    DurabilityInfo Durability);

/// <summary>The model's input: channels, height, width (images must have exactly this size).</summary>
internal sealed record InputInfo(int Channels, int Height, int Width);

/// <summary>The newest snapshot (cache file).</summary>
internal sealed record SnapshotInfo(string Path, DateTime Utc, long Keys, double AgeSeconds, long Snapshots, long Failures);

/// <summary>The memory log (<paramref name="Path"/> <see langword="null"/> when the memory keeps itself and no log is written).</summary>
internal sealed record LogInfo(string? Path, long Bytes, long Commits, long Adds, long AddedKeys);

/// <summary>What makes an acknowledged add durable.</summary>
/// <param name="Mode"><c>log</c> (the memory log beside the cache file) or <c>memory</c> (the memory persists each add itself, e.g. an Orleans cluster with a state folder).</param>
/// <param name="Persisted">Whether an acknowledged add is on disk (false only when non-durable adds were allowed).</param>
/// <param name="MemoryId">The id of the memory that keeps itself (the Orleans cache id), or <see langword="null"/>.</param>
internal sealed record DurabilityInfo(string Mode, bool Persisted, string? MemoryId);

/// <summary>What start-up recovered.</summary>
internal sealed record RecoveryInfo(long SnapshotKeys, long ReplayedKeys, long SkippedKeys, long LogRecords, long DroppedBytes, string? DropReason);
