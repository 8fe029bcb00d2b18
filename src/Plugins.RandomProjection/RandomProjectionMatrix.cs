using System.Buffers.Binary;
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.RandomProjection;

/// <summary>
/// A Johnson–Lindenstrauss random projection <c>ℝᵈ → ℝᵏ</c>: <c>f(x) = R x</c> with a seeded random matrix <c>R [k, d]</c>
/// whose entries have variance <c>1/k</c>, so <c>E‖f(x)‖² = ‖x‖²</c> and inner products are preserved up to
/// <c>O(1/√k)</c> with high probability.
/// </summary>
/// <remarks>
/// <para><b>Reproducibility.</b> The matrix comes from this library's own generator (SplitMix64 streams, one per row, and
/// the polar form of Box–Muller with a logarithm built from IEEE-754 basic operations), not from torch's RNG, so a
/// <see cref="RandomProjectionDefinition"/> regenerates the same bytes on every run, machine and TorchSharp version.
/// <see cref="ExportMatrix"/> gives those bytes for persistence; <see cref="Import"/> loads them back without regenerating.</para>
/// <para><b>Application.</b> <see cref="Apply"/> is one dense float32 matrix multiply (<c>x Rᵀ</c>) on <see cref="Device"/>,
/// for every kind. TorchSharp offers only COO sparse tensors, and its sparse × dense multiply was far slower than the dense
/// one at every density here: at d = 4096 → k = 512 on 2 CPU cores the dense multiply projected about 12,000–13,000 rows/s
/// for each kind, COO about 3,000 rows/s at the very sparse kind's 1/64 density and 300 rows/s at Achlioptas' 1/3
/// (<c>scache-bench randomprojection</c>). So the sparse kinds are stored dense too; what they offer here is a matrix with
/// three exactly representable values that is cheaper to generate, not a faster multiply.</para>
/// <para><b>Thread-safety and ownership.</b> The matrix is immutable after construction; any number of threads may call
/// <see cref="Apply"/> at once. Inputs are never disposed; results belong to the caller. <see cref="Dispose"/> releases the
/// matrix and must not race with <see cref="Apply"/>.</para>
/// </remarks>
public sealed class RandomProjectionMatrix : IDisposable
{
    /// <summary>The generator version this build implements (see <see cref="RandomProjectionDefinition.GeneratorVersion"/>).</summary>
    public const int CurrentGeneratorVersion = ProjectionGenerator.Version;

    private readonly Tensor _matrix; // [k, d] float32, dense, on Device
    private readonly Tensor? _sparse; // [k, d] COO, when stored sparse (measurement only)
    private bool _disposed;

    private RandomProjectionMatrix(RandomProjectionDefinition definition, float[] matrix, Device device, bool sparse)
    {
        Definition = definition;
        Device = device;
        // Long-lived: owned by this object, never by a dispose scope the caller happens to have open.
        using (var scope = NewDisposeScope())
        {
            var host = tensor(matrix, [definition.OutputDimension, definition.InputDimension], ScalarType.Float32);
            _matrix = host.to(device).contiguous().detach().DetachFromDisposeScope();
            _sparse = sparse ? _matrix.to_sparse().DetachFromDisposeScope() : null;
        }
    }

    /// <summary>The definition that regenerates this matrix.</summary>
    public RandomProjectionDefinition Definition { get; }

    /// <summary>The matrix kind.</summary>
    public RandomProjectionKind Kind => Definition.Kind;

    /// <summary>The generator seed.</summary>
    public ulong Seed => Definition.Seed;

    /// <summary>d: the dimension of the vectors <see cref="Apply"/> accepts.</summary>
    public int InputDimension => Definition.InputDimension;

    /// <summary>k: the dimension of the vectors <see cref="Apply"/> returns.</summary>
    public int OutputDimension => Definition.OutputDimension;

    /// <summary>The device that holds the matrix and does the multiply.</summary>
    public Device Device { get; }

    /// <summary>Expected fraction of non-zero entries: 1 (Gaussian), 1/3 (Achlioptas), <c>1/√d</c> (very sparse).</summary>
    public double Density => ProjectionGenerator.Density(Kind, InputDimension);

    /// <summary>Length of <see cref="ExportMatrix"/>'s output, in bytes: <c>4 · k · d</c>.</summary>
    public long MatrixByteCount => 4L * InputDimension * OutputDimension;

    internal bool IsStoredSparse => _sparse is not null;

    /// <summary>Generates the projection <paramref name="definition"/> describes, on <paramref name="device"/> (default CPU).</summary>
    /// <exception cref="ArgumentException">The definition is invalid, or its generator version is not implemented here.</exception>
    public static RandomProjectionMatrix Create(RandomProjectionDefinition definition, Device? device = null) =>
        Create(definition, device, sparse: false);

    /// <summary>Generates a projection of <paramref name="kind"/> from <paramref name="seed"/>, <c>d → k</c>, on <paramref name="device"/>.</summary>
    public static RandomProjectionMatrix Create(RandomProjectionKind kind, ulong seed, int inputDimension, int outputDimension, Device? device = null) =>
        Create(new RandomProjectionDefinition(kind, seed, inputDimension, outputDimension), device);

    /// <summary>
    /// Loads a projection from <paramref name="matrix"/>, the bytes <see cref="ExportMatrix"/> wrote (float32 little-endian,
    /// row-major <c>[k, d]</c>), as they are: a matrix saved by an older generator version loads unchanged.
    /// </summary>
    /// <exception cref="ArgumentException">The definition is invalid, the length is not <c>4·k·d</c>, or an entry is not finite.</exception>
    public static RandomProjectionMatrix Import(RandomProjectionDefinition definition, ReadOnlySpan<byte> matrix, Device? device = null)
    {
        ThrowIfNotImportable(definition, matrix.Length);
        var values = new float[matrix.Length / 4];
        for (var i = 0; i < values.Length; i++)
        {
            var value = BinaryPrimitives.ReadSingleLittleEndian(matrix.Slice(i * 4, 4));
            if (!float.IsFinite(value))
            {
                throw new ArgumentException(
                    $"Matrix entry {i} (row {i / definition.InputDimension}, column {i % definition.InputDimension}) is not finite.",
                    nameof(matrix));
            }

            values[i] = value;
        }

        return new RandomProjectionMatrix(definition, values, device ?? CPU, sparse: false);
    }

    /// <summary>The matrix as float32 little-endian bytes, row-major <c>[k, d]</c> (row = output coordinate).</summary>
    public byte[] ExportMatrix()
    {
        var values = ToArray();
        var bytes = new byte[values.Length * 4L];
        if (BitConverter.IsLittleEndian)
        {
            MemoryMarshal.AsBytes(values.AsSpan()).CopyTo(bytes);
        }
        else
        {
            for (var i = 0; i < values.Length; i++)
            {
                BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(i * 4, 4), values[i]);
            }
        }

        return bytes;
    }

    /// <summary>A copy of the matrix, row-major <c>[k, d]</c>.</summary>
    public float[] ToArray()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var host = _matrix.cpu();
        return host.data<float>().ToArray();
    }

    /// <summary>
    /// Projects <paramref name="input"/> <c>[n, d]</c> (float32, any device) to <c>[n, k]</c> = <c>input · Rᵀ</c>, on
    /// <see cref="Device"/>. Differentiable with respect to <paramref name="input"/>. The result belongs to the caller.
    /// </summary>
    public Tensor Apply(Tensor input)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        ArgumentNullException.ThrowIfNull(input);
        if (input.dim() != 2 || input.shape[1] != InputDimension)
        {
            throw new ArgumentException(
                $"input has shape [{string.Join(", ", input.shape)}]; expected [n, {InputDimension}].", nameof(input));
        }

        if (input.dtype != ScalarType.Float32)
        {
            throw new ArgumentException($"input has element type {input.dtype}; expected Float32.", nameof(input));
        }

        using var scope = NewDisposeScope();
        var x = input.to(Device);
        var y = _sparse is null
            ? nn.functional.linear(x, _matrix)
            : _sparse.mm(x.t()).t().contiguous();
        return y.MoveToOuterDisposeScope();
    }

    /// <summary>An independent copy (same definition, same bytes) on <paramref name="device"/>, or on this projection's device.</summary>
    public RandomProjectionMatrix Clone(Device? device = null)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        return new RandomProjectionMatrix(Definition, ToArray(), device ?? Device, sparse: _sparse is not null);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        _sparse?.Dispose();
        _matrix.Dispose();
    }

    /// <summary>Generates the matrix; <paramref name="sparse"/> also keeps a COO copy that <see cref="Apply"/> multiplies with.</summary>
    internal static RandomProjectionMatrix Create(RandomProjectionDefinition definition, Device? device, bool sparse)
    {
        ArgumentNullException.ThrowIfNull(definition);
        ThrowIfInvalid(definition);
        if (definition.GeneratorVersion != CurrentGeneratorVersion)
        {
            throw new ArgumentException(
                $"Generator version {definition.GeneratorVersion} is not implemented by this build (it implements " +
                $"{CurrentGeneratorVersion}); import the saved matrix bytes instead.", nameof(definition));
        }

        var matrix = ProjectionGenerator.Generate(definition.Kind, definition.Seed, definition.InputDimension, definition.OutputDimension);
        return new RandomProjectionMatrix(definition, matrix, device ?? CPU, sparse);
    }

    /// <summary>Fails unless <paramref name="definition"/> is valid and <paramref name="length"/> is its matrix's <c>4·k·d</c> bytes.</summary>
    internal static void ThrowIfNotImportable(RandomProjectionDefinition definition, long length)
    {
        ArgumentNullException.ThrowIfNull(definition);
        ThrowIfInvalid(definition);
        var expected = 4L * definition.InputDimension * definition.OutputDimension;
        if (length != expected)
        {
            throw new ArgumentException(
                $"A {definition.OutputDimension} × {definition.InputDimension} float32 matrix is {expected} bytes; got {length}.", "matrix");
        }
    }

    private static void ThrowIfInvalid(RandomProjectionDefinition definition)
    {
        var errors = definition.Validate();
        if (errors.Count > 0)
        {
            throw new ArgumentException("Invalid random projection: " + string.Join(" ", errors), nameof(definition));
        }
    }
}
