using System.Globalization;
using System.Text.Json;
using ScalableCache.Core.Features;
using TorchSharp;
using static TorchSharp.torch;

namespace ScalableCache.Core.Models.Keras;

/// <summary>A Keras model configuration this build cannot turn into a network; the message names the layer and what is wrong.</summary>
public sealed class KerasModelException(string message) : Exception(message);

/// <summary>
/// A Keras functional (or Sequential) image classifier rebuilt from its <c>model_config</c> JSON as a TorchSharp module: one
/// submodule per Keras layer, named as in Keras (<c>conv2d_1</c>, <c>activation_14</c>, …) so each can be tapped, run in
/// <c>model.layers</c> order along the inbound nodes. Images are NCHW here (the Keras files are channels-last: kernels are
/// converted once when the weights are read, and <c>Flatten</c> flattens in channels-last order so Dense kernels apply as saved).
/// </summary>
/// <remarks>
/// <para>Layer kinds: <c>InputLayer</c>, <c>Conv2D</c> (TensorFlow <c>same</c>/<c>valid</c> padding, no dilation),
/// <c>BatchNormalization</c> (its ε), <c>Activation</c>, <c>Add</c>, <c>AveragePooling2D</c>, <c>MaxPooling2D</c>,
/// <c>GlobalAveragePooling2D</c>, <c>Flatten</c>, <c>Dropout</c>, <c>Dense</c>; activations linear, relu, softmax, sigmoid,
/// tanh. Anything else fails with a <see cref="KerasModelException"/>.</para>
/// <para>Layers are addressable by Keras name and by their index in <c>model.layers</c> (<see cref="ResolveLayer"/>: the author's
/// scripts say <c>mem_layers = [49, 57, 64]</c>). A tap yields the Keras layer's own output (a softmax Dense yields
/// probabilities); <see cref="ImageClassifier.Logits"/> returns log-probabilities when the output layer ends in a softmax, so
/// the usual softmax of the logits gives back the model's probabilities.</para>
/// </remarks>
public sealed class KerasModel : ImageClassifier
{
    private readonly List<Node> _nodes = [];
    private readonly string _output;
    private readonly bool _softmaxOutput;
    private readonly string? _pooled;
    private readonly List<string> _blocks = [];

    private KerasModel(string name, JsonElement config)
        : base(name)
    {
        var layers = Layers(config, out var sequential);
        var shapes = new Dictionary<string, long[]>(StringComparer.Ordinal);
        var kinds = new Dictionary<string, string>(StringComparer.Ordinal);
        string? previous = null;
        foreach (var layer in layers)
        {
            var layerName = layer.GetProperty("name").GetString() ?? throw new KerasModelException("A layer has no name.");
            var kind = layer.GetProperty("class_name").GetString() ?? string.Empty;
            var settings = layer.GetProperty("config");
            if (layerName.Contains('.', StringComparison.Ordinal) || shapes.ContainsKey(layerName))
            {
                throw new KerasModelException($"Layer name '{layerName}' is repeated or contains a '.'.");
            }

            var inputs = sequential ? (previous is null ? [] : [previous]) : Inbound(layerName, layer);
            if (sequential && previous is null && kind != "InputLayer")
            {
                // A Sequential model without an explicit InputLayer: its first layer carries batch_input_shape.
                var input = new KerasIdentity("input");
                register_module("input", input);
                shapes["input"] = InputShapeOf("input", settings);
                _nodes.Add(new Node("input", input, []));
                inputs = ["input"];
            }

            foreach (var i in inputs)
            {
                if (!shapes.ContainsKey(i))
                {
                    throw new KerasModelException($"Layer '{layerName}' reads '{i}', which is not an earlier layer.");
                }
            }

            var inShapes = inputs.Select(i => shapes[i]).ToArray();
            var (module, shape) = Build(layerName, kind, settings, inShapes);
            register_module(layerName, module);
            shapes[layerName] = shape;
            kinds[layerName] = kind;
            _nodes.Add(new Node(layerName, module, inputs));
            LayerNames.Add(layerName);
            if (kind is "AveragePooling2D" or "GlobalAveragePooling2D")
            {
                _pooled = layerName;
            }

            if (inputs.Count == 1 && kinds.TryGetValue(inputs[0], out var from) && from == "Add")
            {
                _blocks.Add(layerName);
            }

            previous = layerName;
        }

        _output = sequential ? previous ?? throw new KerasModelException("The model has no layers.") : OutputLayer(config);
        if (!shapes.TryGetValue(_output, out var outputShape) || outputShape.Length != 1)
        {
            throw new KerasModelException($"The output layer '{_output}' does not output one vector per image.");
        }

        ClassCount = checked((int)outputShape[0]);
        _softmaxOutput = _nodes.Single(n => n.Name == _output).Module is KerasDense { Activation: "softmax" } or KerasActivation { Kind: "softmax" };
        if (_nodes[0].Module is not KerasIdentity)
        {
            throw new KerasModelException("The first layer is not an InputLayer.");
        }

        var inputShape = shapes[_nodes[0].Name];
        Input = new InputShape((int)inputShape[0], (int)inputShape[1], (int)inputShape[2]);
        ComputeLastUses();
        RegisterComponents();
    }

    /// <summary>The Keras layer names in <c>model.layers</c> order (index 0 is the input layer).</summary>
    public List<string> LayerNames { get; } = [];

    /// <summary>The image shape the model takes (from the input layer's <c>batch_input_shape</c>), channels first.</summary>
    public InputShape Input { get; }

    /// <inheritdoc />
    public override int ClassCount { get; }

    /// <inheritdoc />
    public override string PooledFeaturesLayer =>
        _pooled ?? throw new InvalidOperationException($"Keras model {GetName()} has no average-pooling layer.");

    /// <inheritdoc />
    public override IReadOnlyList<string>? BlockOutputs => _blocks;

    /// <summary>Builds the network described by a Keras <c>model_config</c> JSON text (weights left at zero: load them next).</summary>
    /// <exception cref="KerasModelException">The JSON is not a Keras model configuration, or a layer kind or setting is not supported.</exception>
    public static KerasModel FromConfig(string modelConfigJson)
    {
        ArgumentNullException.ThrowIfNull(modelConfigJson);
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(modelConfigJson);
        }
        catch (JsonException e)
        {
            throw new KerasModelException($"The Keras model_config is not JSON: {e.Message}");
        }

        using (document)
        {
            var root = document.RootElement;
            try
            {
                var config = root.GetProperty("config");
                var name = config.ValueKind == JsonValueKind.Object && config.TryGetProperty("name", out var n) ? n.GetString() ?? "keras" : "keras";
                var model = new KerasModel(name, root);
                model.eval();
                return model;
            }
            catch (Exception e) when (e is KeyNotFoundException or InvalidOperationException or FormatException or IndexOutOfRangeException)
            {
                throw new KerasModelException($"The Keras model_config is malformed: {e.Message}");
            }
        }
    }

    /// <summary>Builds the network a Keras <c>.h5</c> checkpoint describes (its <c>model_config</c>); load the checkpoint into it next.</summary>
    /// <exception cref="Checkpoints.CheckpointException">The checkpoint is not a Keras model, or describes a network this build cannot make.</exception>
    public static KerasModel FromCheckpoint(Checkpoints.Checkpoint checkpoint)
    {
        ArgumentNullException.ThrowIfNull(checkpoint);
        if (!checkpoint.Metadata.TryGetValue(Checkpoints.KerasHdf5Reader.ModelConfigKey, out var json))
        {
            throw new Checkpoints.CheckpointException(
                checkpoint.FilePath, $"is a {checkpoint.Format} checkpoint, not a whole Keras model (.h5 with model_config); it describes no architecture.");
        }

        try
        {
            return FromConfig(json);
        }
        catch (KerasModelException e)
        {
            throw new Checkpoints.CheckpointException(checkpoint.FilePath, e.Message, e);
        }
    }

    /// <summary>
    /// A layer's name from its Keras name or its <c>model.layers</c> index (decimal digits, e.g. <c>49</c>).
    /// </summary>
    /// <exception cref="ArgumentException">The index is out of range; the message gives the range.</exception>
    public override string ResolveLayer(string layer)
    {
        ArgumentNullException.ThrowIfNull(layer);
        var text = layer.Trim();
        if (text.Length == 0 || !text.All(char.IsAsciiDigit))
        {
            return text;
        }

        return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var index) && index < LayerNames.Count
            ? LayerNames[index]
            : throw new ArgumentException($"Layer index {text} is outside model.layers [0, {LayerNames.Count - 1}] of {GetName()}.", nameof(layer));
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        var outputs = new Tensor?[_nodes.Count];
        var index = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < _nodes.Count; i++)
        {
            var node = _nodes[i];
            var x = node.Inputs.Count switch
            {
                0 => input,
                1 => outputs[index[node.Inputs[0]]]!,
                _ => stack(node.Inputs.Select(n => outputs[index[n]]!).ToArray()),
            };
            outputs[i] = node.Module.call(x);
            index[node.Name] = i;
            foreach (var done in node.Releases)
            {
                outputs[done]!.Dispose();
                outputs[done] = null;
            }
        }

        var y = outputs[index[_output]]!;
        return (_softmaxOutput ? y.clamp_min(1e-38).log() : y).MoveToOuterDisposeScope();
    }

    private void ComputeLastUses()
    {
        var last = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < _nodes.Count; i++)
        {
            foreach (var input in _nodes[i].Inputs)
            {
                last[input] = i;
            }
        }

        for (var i = 0; i < _nodes.Count; i++)
        {
            if (_nodes[i].Name != _output && last.TryGetValue(_nodes[i].Name, out var at))
            {
                _nodes[at].Releases.Add(i);
            }
        }
    }

    private static JsonElement.ArrayEnumerator Layers(JsonElement root, out bool sequential)
    {
        var kind = root.GetProperty("class_name").GetString();
        var config = root.GetProperty("config");
        sequential = kind == "Sequential";
        if (kind is not ("Model" or "Functional" or "Sequential"))
        {
            throw new KerasModelException($"The Keras model is a '{kind}'; only Model, Functional and Sequential are supported.");
        }

        return (config.ValueKind == JsonValueKind.Array ? config : config.GetProperty("layers")).EnumerateArray();
    }

    private static List<string> Inbound(string layer, JsonElement element)
    {
        var nodes = element.GetProperty("inbound_nodes");
        if (nodes.GetArrayLength() == 0)
        {
            return [];
        }

        if (nodes.GetArrayLength() > 1)
        {
            throw new KerasModelException($"Layer '{layer}' is called {nodes.GetArrayLength()} times (a shared layer); only single calls are supported.");
        }

        var inputs = new List<string>();
        foreach (var source in nodes[0].EnumerateArray())
        {
            if (source[1].GetInt32() != 0 || source[2].GetInt32() != 0)
            {
                throw new KerasModelException($"Layer '{layer}' reads a second node or output of '{source[0].GetString()}'; not supported.");
            }

            inputs.Add(source[0].GetString()!);
        }

        return inputs;
    }

    private static string OutputLayer(JsonElement root)
    {
        var outputs = root.GetProperty("config").GetProperty("output_layers");
        if (outputs.GetArrayLength() != 1)
        {
            throw new KerasModelException($"The model has {outputs.GetArrayLength()} outputs; an image classifier has one.");
        }

        return outputs[0][0].GetString()!;
    }

    private static long[] InputShapeOf(string layer, JsonElement settings)
    {
        var shape = settings.GetProperty("batch_input_shape");
        if (shape.GetArrayLength() != 4)
        {
            throw new KerasModelException($"Input layer '{layer}' has batch_input_shape {shape}; expected [null, H, W, C].");
        }

        // channels-last [null, H, W, C] → [C, H, W]
        return [shape[3].GetInt64(), shape[1].GetInt64(), shape[2].GetInt64()];
    }

    private static (nn.Module<Tensor, Tensor> Module, long[] Shape) Build(string name, string kind, JsonElement c, long[][] inputs)
    {
        if (kind != "InputLayer" && inputs.Length == 0)
        {
            throw new KerasModelException($"Layer '{name}' ({kind}) has no input.");
        }

        if (kind != "Add" && inputs.Length > 1)
        {
            throw new KerasModelException($"Layer '{name}' ({kind}) has {inputs.Length} inputs; only Add takes several.");
        }

        var x = inputs.Length > 0 ? inputs[0] : [];
        switch (kind)
        {
            case "InputLayer":
                return (new KerasIdentity(name), InputShapeOf(name, c));
            case "Conv2D":
            {
                Require(name, x.Length == 3, "needs a [C, H, W] input");
                ChannelsLast(name, c);
                var kernel = Pair(name, c, "kernel_size");
                var strides = Pair(name, c, "strides");
                if (c.TryGetProperty("dilation_rate", out _) && Pair(name, c, "dilation_rate") is not [1, 1])
                {
                    throw new KerasModelException($"Conv2D layer '{name}' is dilated; not supported.");
                }

                var same = Padding(name, c);
                var filters = c.GetProperty("filters").GetInt64();
                var module = new KerasConv2D(name, x[0], filters, kernel, strides, same, UseBias(c), Activation(name, c));
                return (module, [filters, KerasPadding.OutputSize(x[1], kernel[0], strides[0], same), KerasPadding.OutputSize(x[2], kernel[1], strides[1], same)]);
            }

            case "BatchNormalization":
            {
                var axis = c.TryGetProperty("axis", out var a) ? (a.ValueKind == JsonValueKind.Array ? a[0].GetInt32() : a.GetInt32()) : -1;
                Require(name, axis == -1 || axis == x.Length, $"normalises axis {axis}; only the channel axis (-1) is supported");
                var epsilon = c.TryGetProperty("epsilon", out var e) ? e.GetDouble() : 1e-3;
                return (new KerasBatchNormalization(name, x[0], epsilon), x);
            }

            case "Activation":
                return (new KerasActivation(name, Activation(name, c)), x);
            case "Add":
                Require(name, inputs.Length >= 2 && inputs.All(i => i.SequenceEqual(x)), "adds inputs of different shapes (or fewer than two)");
                return (new KerasAdd(name), x);
            case "AveragePooling2D" or "MaxPooling2D":
            {
                Require(name, x.Length == 3, "needs a [C, H, W] input");
                ChannelsLast(name, c);
                Require(name, !Padding(name, c), "uses 'same' padding; only 'valid' is supported for pooling");
                var pool = Pair(name, c, "pool_size");
                var strides = c.TryGetProperty("strides", out var s) && s.ValueKind != JsonValueKind.Null ? Pair(name, c, "strides") : pool;
                return (new KerasPooling2D(name, kind == "AveragePooling2D", pool, strides),
                    [x[0], KerasPadding.OutputSize(x[1], pool[0], strides[0], false), KerasPadding.OutputSize(x[2], pool[1], strides[1], false)]);
            }

            case "GlobalAveragePooling2D":
                Require(name, x.Length == 3, "needs a [C, H, W] input");
                ChannelsLast(name, c);
                return (new KerasGlobalAveragePooling2D(name), [x[0]]);
            case "Flatten":
                return (new KerasFlatten(name), [x.Aggregate(1L, (p, d) => p * d)]);
            case "Dropout":
                return (new KerasIdentity(name), x);
            case "Dense":
            {
                Require(name, x.Length == 1, "needs a flat input (add a Flatten layer)");
                var units = c.GetProperty("units").GetInt64();
                return (new KerasDense(name, x[0], units, UseBias(c), Activation(name, c)), [units]);
            }

            default:
                throw new KerasModelException(
                    $"Layer '{name}' is a {kind}, which is not supported. Supported: InputLayer, Conv2D, BatchNormalization, Activation, Add, " +
                    "AveragePooling2D, MaxPooling2D, GlobalAveragePooling2D, Flatten, Dropout, Dense.");
        }
    }

    private static void Require(string name, bool condition, string problem)
    {
        if (!condition)
        {
            throw new KerasModelException($"Layer '{name}' {problem}.");
        }
    }

    private static void ChannelsLast(string name, JsonElement c)
    {
        if (c.TryGetProperty("data_format", out var f) && f.ValueKind == JsonValueKind.String && f.GetString() != "channels_last")
        {
            throw new KerasModelException($"Layer '{name}' uses data_format '{f.GetString()}'; only channels_last is supported.");
        }
    }

    private static bool Padding(string name, JsonElement c)
    {
        var padding = c.TryGetProperty("padding", out var p) ? p.GetString() : "valid";
        return padding switch
        {
            "same" => true,
            "valid" => false,
            _ => throw new KerasModelException($"Layer '{name}' has padding '{padding}'; only 'same' and 'valid' are supported."),
        };
    }

    private static long[] Pair(string name, JsonElement c, string property)
    {
        var value = c.GetProperty(property);
        long[] pair = value.ValueKind == JsonValueKind.Array ? [.. value.EnumerateArray().Select(v => v.GetInt64())] : [value.GetInt64(), value.GetInt64()];
        return pair.Length == 2 && pair.All(v => v > 0) ? pair : throw new KerasModelException($"Layer '{name}' has {property} {value}; expected two positive integers.");
    }

    private static bool UseBias(JsonElement c) => !c.TryGetProperty("use_bias", out var b) || b.GetBoolean();

    private static string Activation(string name, JsonElement c)
    {
        var activation = c.TryGetProperty("activation", out var a) ? a.GetString() ?? "linear" : "linear";
        return KerasActivations.Supported.Contains(activation)
            ? activation
            : throw new KerasModelException($"Layer '{name}' uses activation '{activation}'; supported: {string.Join(", ", KerasActivations.Supported)}.");
    }

    private sealed record Node(string Name, nn.Module<Tensor, Tensor> Module, List<string> Inputs)
    {
        /// <summary>Outputs of earlier nodes last read here, freed after this node runs.</summary>
        public List<int> Releases { get; } = [];
    }
}
