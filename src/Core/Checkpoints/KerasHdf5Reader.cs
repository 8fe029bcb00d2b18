using System.Text;
using PureHDF;
using PureHDF.VOL.Native;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Checkpoints;

/// <summary>
/// Reads a whole Keras model saved with <c>model.save(…)</c> (HDF5, Keras 2): the root attribute <c>model_config</c> (JSON:
/// the layers in order with their class, config and inbound nodes) and the group <c>model_weights</c>, which holds one group
/// per layer (attribute <c>layer_names</c>) whose attribute <c>weight_names</c> names its datasets (<c>conv2d_1/kernel:0</c>, …).
/// </summary>
/// <remarks>
/// The weights are converted to PyTorch layout here, once, and named as the <see cref="Models.Keras.KerasModel"/> state dict
/// names them: a 4-d <c>kernel</c> <c>[kh, kw, in, out]</c> becomes <c>layer.weight</c> <c>[out, in, kh, kw]</c>; a 2-d
/// <c>kernel</c> <c>[in, out]</c> becomes <c>layer.weight</c> <c>[out, in]</c>; <c>bias</c> → <c>layer.bias</c>;
/// BatchNormalization <c>gamma</c>, <c>beta</c>, <c>moving_mean</c>, <c>moving_variance</c> → <c>layer.weight</c>,
/// <c>layer.bias</c>, <c>layer.running_mean</c>, <c>layer.running_var</c>. Any other weight keeps its Keras name after the
/// layer's (<c>layer.name</c>), so a model without it reports it as unexpected. Metadata: <c>keras_model_config</c> (the JSON),
/// <c>keras_version</c>, <c>backend</c>. The optimizer state is not read.
/// </remarks>
internal static class KerasHdf5Reader
{
    /// <summary>Metadata key of the model's JSON configuration.</summary>
    public const string ModelConfigKey = "keras_model_config";

    public static (Dictionary<string, Tensor>, IReadOnlyDictionary<string, string>) Read(string filePath)
    {
        NativeFile file;
        try
        {
            file = H5File.OpenRead(filePath);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new CheckpointException(filePath, $"is not a readable HDF5 file: {e.Message}", e);
        }

        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            using (file)
            {
                var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
                if (!file.AttributeExists("model_config"))
                {
                    throw new CheckpointException(
                        filePath, "is an HDF5 file without a 'model_config' attribute, so not a whole Keras model (save it with model.save, not save_weights).");
                }

                metadata[ModelConfigKey] = ReadText(file.Attribute("model_config"));
                foreach (var name in new[] { "keras_version", "backend" })
                {
                    if (file.AttributeExists(name))
                    {
                        metadata[name] = ReadText(file.Attribute(name));
                    }
                }

                if (!file.LinkExists("model_weights"))
                {
                    throw new CheckpointException(filePath, "is a Keras HDF5 file without a 'model_weights' group.");
                }

                var weights = file.Group("model_weights");
                foreach (var layer in ReadNames(weights, "layer_names"))
                {
                    if (!weights.LinkExists(layer))
                    {
                        throw new CheckpointException(filePath, $"names layer '{layer}' in model_weights/layer_names but has no group for it.");
                    }

                    var group = weights.Group(layer);
                    foreach (var weightName in ReadNames(group, "weight_names"))
                    {
                        var (name, value) = Convert(filePath, layer, weightName, group.Dataset(weightName));
                        if (!tensors.TryAdd(name, value))
                        {
                            value.Dispose();
                            throw new CheckpointException(filePath, $"holds two weights that both map to '{name}'.");
                        }
                    }
                }

                return (tensors, metadata);
            }
        }
        catch (Exception e)
        {
            foreach (var t in tensors.Values)
            {
                t.Dispose();
            }

            if (e is CheckpointException)
            {
                throw;
            }

            throw new CheckpointException(filePath, $"could not be read as a Keras model: {e.Message}", e);
        }
    }

    private static string ReadText(IH5Attribute attribute) =>
        attribute.Type.Class == H5DataTypeClass.String || attribute.Type.Class == H5DataTypeClass.VariableLength
            ? attribute.Read<string>()
            : Encoding.UTF8.GetString(attribute.Read<byte[]>()).TrimEnd('\0');

    /// <summary>A string-array attribute; Keras writes an empty float array when a layer has no weights.</summary>
    private static string[] ReadNames(IH5Object owner, string attribute)
    {
        if (!owner.AttributeExists(attribute))
        {
            return [];
        }

        var value = owner.Attribute(attribute);
        if (value.Type.Class != H5DataTypeClass.String && value.Type.Class != H5DataTypeClass.VariableLength)
        {
            return [];
        }

        return value.Read<string[]>();
    }

    private static (string Name, Tensor Value) Convert(string filePath, string layer, string weightName, IH5Dataset dataset)
    {
        var shape = dataset.Space.Dimensions.Select(d => (long)d).ToArray();
        if (dataset.Type.Class != H5DataTypeClass.FloatingPoint || dataset.Type.Size is not (4 or 8))
        {
            throw new CheckpointException(filePath, $"weight '{weightName}' of layer '{layer}' is not float32 or float64.");
        }

        using var scope = NewDisposeScope();
        var raw = dataset.Type.Size == 4
            ? tensor(dataset.Read<float[]>(), shape)
            : tensor(dataset.Read<double[]>(), shape).to_type(ScalarType.Float32);
        if (!isfinite(raw).all().item<bool>())
        {
            throw new CheckpointException(filePath, $"weight '{weightName}' of layer '{layer}' holds a non-finite value (NaN or ±∞); nothing was loaded.");
        }

        // "conv2d_1/kernel:0" → "kernel"
        var leaf = weightName[(weightName.LastIndexOf('/') + 1)..];
        var colon = leaf.IndexOf(':', StringComparison.Ordinal);
        leaf = colon >= 0 ? leaf[..colon] : leaf;
        var (suffix, value) = (leaf, raw.dim()) switch
        {
            ("kernel", 4) => ("weight", raw.permute(3, 2, 0, 1)),
            ("kernel", 2) => ("weight", raw.t()),
            ("gamma", _) => ("weight", raw),
            ("beta", _) => ("bias", raw),
            ("moving_mean", _) => ("running_mean", raw),
            ("moving_variance", _) => ("running_var", raw),
            _ => (leaf, raw),
        };
        var result = value.contiguous().clone();
        return ($"{layer}.{suffix}", result.DetachFromDisposeScope());
    }
}
