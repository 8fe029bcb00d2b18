using System.Buffers.Binary;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using ScalableCache.Core.Data;
using ScalableCache.Core.Models;

namespace ScalableCache.Host.Serving;

/// <summary>
/// Images of one request, <c>[Count, Channels, Height, Width]</c>: 8-bit pixels (decoded PNG/JPEG) or floats in <c>[0, 1]</c> (a
/// tensor), planar, and for <c>/v1/memory</c> one label per image.
/// </summary>
internal sealed record ImageBatch(int Count, InputShape Shape, byte[]? Pixels, float[]? Values, int[]? Labels)
{
    /// <summary>Whether the images are 8-bit pixels (else floats).</summary>
    public bool IsPixels => Pixels is not null;
}

/// <summary>A request that cannot be served as sent: 400 (or <see cref="Status"/>) with a problem-details body naming <see cref="Field"/>.</summary>
internal sealed class RequestProblemException(string field, string detail, int status = StatusCodes.Status400BadRequest) : Exception($"{field}: {detail}")
{
    /// <summary>The request part at fault, e.g. <c>images[2]</c>, <c>labels[0]</c>, <c>tensor.shape</c>, <c>Content-Type</c>.</summary>
    public string Field { get; } = field;

    /// <summary>What is wrong with it.</summary>
    public string Detail { get; } = detail;

    /// <summary>The HTTP status: 400, or 415 for an unsupported media type, 413 for too large a body.</summary>
    public int Status { get; } = status;
}

/// <summary>
/// Reads the images (and labels) of a <c>POST /v1/predict</c> or <c>POST /v1/memory</c> body, in any of the documented forms:
/// <list type="bullet">
/// <item><c>application/json</c>: <c>{"images": ["&lt;base64 PNG or JPEG&gt;", …]}</c> or <c>{"tensor": {"shape": [n, C, H, W],
/// "data": [floats in [0, 1], row-major]}}</c>, with <c>"labels": [3, "cat", …]</c> (class index or name) for the memory;</item>
/// <item><c>application/x-scache-tensor</c> (<see cref="TensorMediaType"/>): <c>"SCT1"</c>, then little-endian uint32 n, C, H, W,
/// n·C·H·W float32 values in [0, 1] (planar, row-major) and, for the memory, n int32 labels;</item>
/// <item><c>image/png</c> or <c>image/jpeg</c>: one image; its label (memory) in the query, <c>?label=cat</c>;</item>
/// <item><c>multipart/form-data</c>: image files (any field name; <c>images</c> by convention) and, for the memory, <c>labels</c>
/// fields (one per image, in order, or one comma-separated list).</item>
/// </list>
/// Images must have the model's input size exactly; labels must be class indices in [0, C) or class names.
/// </summary>
internal sealed class ServeRequestReader(InputShape shape, IReadOnlyList<string> classNames, int maxImages)
{
    /// <summary>The binary tensor media type.</summary>
    public const string TensorMediaType = "application/x-scache-tensor";

    private static ReadOnlySpan<byte> TensorMagic => "SCT1"u8;

    /// <summary>Media types the endpoints accept.</summary>
    public static IReadOnlyList<string> MediaTypes { get; } = ["application/json", TensorMediaType, "image/png", "image/jpeg", "multipart/form-data"];

    /// <summary>Reads the body; <paramref name="labelled"/> for <c>/v1/memory</c>.</summary>
    /// <exception cref="RequestProblemException">The body is malformed; the exception names the field.</exception>
    public async Task<ImageBatch> ReadAsync(HttpRequest request, bool labelled, CancellationToken cancellationToken)
    {
        var type = request.ContentType?.Split(';')[0].Trim().ToLowerInvariant();
        ImageBatch batch;
        try
        {
            batch = type switch
            {
                "application/json" => await ReadJsonAsync(request, labelled, cancellationToken).ConfigureAwait(false),
                TensorMediaType => ReadTensorBinary(await ReadBodyAsync(request, cancellationToken).ConfigureAwait(false), labelled),
                "image/png" or "image/jpeg" => FromImages([await ReadBodyAsync(request, cancellationToken).ConfigureAwait(false)], "body",
                    labelled ? ParseLabels(request.Query["label"].Where(v => v is not null).Select(v => v!).ToList(), "label", 1) : null),
                "multipart/form-data" => await ReadFormAsync(request, labelled, cancellationToken).ConfigureAwait(false),
                null or "" => throw new RequestProblemException("Content-Type", $"missing; send one of {string.Join(", ", MediaTypes)}.", StatusCodes.Status415UnsupportedMediaType),
                _ => throw new RequestProblemException("Content-Type", $"'{type}' is not accepted; send one of {string.Join(", ", MediaTypes)}.", StatusCodes.Status415UnsupportedMediaType),
            };
        }
        catch (BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            throw new RequestProblemException("body", e.Message, StatusCodes.Status413PayloadTooLarge);
        }
        catch (InvalidDataException e) when (type == "multipart/form-data")
        {
            throw new RequestProblemException("body", "the multipart form cannot be read: " + e.Message);
        }

        return batch;
    }

    private async Task<ImageBatch> ReadJsonAsync(HttpRequest request, bool labelled, CancellationToken cancellationToken)
    {
        JsonDocument document;
        try
        {
            document = await JsonDocument.ParseAsync(request.Body, new JsonDocumentOptions { MaxDepth = 8 }, cancellationToken).ConfigureAwait(false);
        }
        catch (JsonException e)
        {
            throw new RequestProblemException("body", "not valid JSON: " + e.Message);
        }

        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
            {
                throw new RequestProblemException("body", "expected a JSON object with \"images\" or \"tensor\".");
            }

            var hasImages = root.TryGetProperty("images", out var images);
            var hasTensor = root.TryGetProperty("tensor", out var tensor);
            if (hasImages == hasTensor)
            {
                throw new RequestProblemException(hasImages ? "tensor" : "images", "give exactly one of \"images\" (base64 PNG/JPEG) and \"tensor\".");
            }

            int[]? labels = null;
            if (labelled)
            {
                if (!root.TryGetProperty("labels", out var labelArray) || labelArray.ValueKind != JsonValueKind.Array)
                {
                    throw new RequestProblemException("labels", "required: an array with one class index or name per image.");
                }

                labels = [.. labelArray.EnumerateArray().Select((l, i) => ParseLabel(l, $"labels[{i}]"))];
            }

            var batch = hasImages ? FromJsonImages(images) : FromJsonTensor(tensor);
            return WithLabels(batch, labels, "labels");
        }
    }

    private ImageBatch FromJsonImages(JsonElement images)
    {
        if (images.ValueKind != JsonValueKind.Array)
        {
            throw new RequestProblemException("images", "expected an array of base64-encoded PNG or JPEG images.");
        }

        var encoded = new List<byte[]>();
        var i = 0;
        foreach (var item in images.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.String || !item.TryGetBytesFromBase64(out var bytes))
            {
                throw new RequestProblemException($"images[{i}]", "not a base64 string.");
            }

            CheckCount(encoded.Count + 1, "images");
            encoded.Add(bytes);
            i++;
        }

        return FromImages(encoded, "images", null);
    }

    private ImageBatch FromJsonTensor(JsonElement tensor)
    {
        if (tensor.ValueKind != JsonValueKind.Object || !tensor.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array)
        {
            throw new RequestProblemException("tensor.shape", "required: [n, C, H, W].");
        }

        var dims = shapeElement.EnumerateArray().Select(d => d.TryGetInt32(out var v) ? v : -1).ToArray();
        var count = CheckShape(dims, "tensor.shape");
        if (!tensor.TryGetProperty("data", out var data) || data.ValueKind != JsonValueKind.Array)
        {
            throw new RequestProblemException("tensor.data", "required: n·C·H·W numbers in [0, 1], row-major.");
        }

        var expected = (long)count * shape.Channels * shape.Height * shape.Width;
        if (data.GetArrayLength() != expected)
        {
            throw new RequestProblemException("tensor.data", $"holds {data.GetArrayLength()} numbers; the shape [{string.Join(", ", dims)}] needs {expected}.");
        }

        var values = new float[expected];
        var i = 0;
        foreach (var item in data.EnumerateArray())
        {
            values[i] = item.ValueKind == JsonValueKind.Number && item.TryGetSingle(out var v) ? v : float.NaN;
            i++;
        }

        CheckValues(values, "tensor.data");
        return new ImageBatch(count, shape, null, values, null);
    }

    private ImageBatch ReadTensorBinary(byte[] body, bool labelled)
    {
        if (body.Length < 20 || !body.AsSpan(0, 4).SequenceEqual(TensorMagic))
        {
            throw new RequestProblemException("body", $"a {TensorMediaType} body starts with \"SCT1\" and four uint32 dimensions (n, C, H, W).");
        }

        var dims = Enumerable.Range(0, 4).Select(d => BinaryPrimitives.ReadUInt32LittleEndian(body.AsSpan(4 + (4 * d)))).Select(d => d > int.MaxValue ? -1 : (int)d).ToArray();
        var count = CheckShape(dims, "shape");
        var values = (long)count * shape.Channels * shape.Height * shape.Width;
        var expected = 20 + (4 * values) + (labelled ? 4L * count : 0);
        if (body.Length != expected)
        {
            throw new RequestProblemException("body", $"holds {body.Length} bytes; shape [{string.Join(", ", dims)}] needs {expected} (20-byte header, {values} float32{(labelled ? $", {count} int32 labels" : "")}).");
        }

        var data = new float[values];
        var bytes = body.AsSpan(20, (int)(4 * values));
        if (BitConverter.IsLittleEndian)
        {
            bytes.CopyTo(MemoryMarshal.AsBytes(data.AsSpan()));
        }
        else
        {
            for (var i = 0; i < data.Length; i++)
            {
                data[i] = BinaryPrimitives.ReadSingleLittleEndian(bytes[(4 * i)..]);
            }
        }

        CheckValues(data, "data");
        int[]? labels = null;
        if (labelled)
        {
            labels = new int[count];
            for (var i = 0; i < count; i++)
            {
                labels[i] = CheckLabel(BinaryPrimitives.ReadInt32LittleEndian(body.AsSpan((int)(20 + (4 * values) + (4 * i)))), $"labels[{i}]");
            }
        }

        return new ImageBatch(count, shape, null, data, labels);
    }

    private async Task<ImageBatch> ReadFormAsync(HttpRequest request, bool labelled, CancellationToken cancellationToken)
    {
        var form = await request.ReadFormAsync(cancellationToken).ConfigureAwait(false);
        if (form.Files.Count == 0)
        {
            throw new RequestProblemException("images", "the form holds no image file.");
        }

        CheckCount(form.Files.Count, "images");
        var encoded = new List<byte[]>();
        foreach (var file in form.Files)
        {
            using var stream = new MemoryStream();
            await file.CopyToAsync(stream, cancellationToken).ConfigureAwait(false);
            encoded.Add(stream.ToArray());
        }

        int[]? labels = null;
        if (labelled)
        {
            var texts = form["labels"].Concat(form["label"]).Where(v => v is not null).SelectMany(v => v!.Split(',', StringSplitOptions.TrimEntries)).ToList();
            labels = ParseLabels(texts, "labels", form.Files.Count);
        }

        return FromImages(encoded, "images", labels);
    }

    private ImageBatch FromImages(IReadOnlyList<byte[]> encoded, string field, int[]? labels)
    {
        if (encoded.Count == 0)
        {
            throw new RequestProblemException(field, "holds no image.");
        }

        CheckCount(encoded.Count, field);
        if (shape.Channels != 3)
        {
            throw new RequestProblemException(field, $"this model takes {shape.Channels}-channel images: send a tensor instead of PNG/JPEG.");
        }

        var plane = 3 * shape.Height * shape.Width;
        var pixels = new byte[(long)plane * encoded.Count];
        for (var i = 0; i < encoded.Count; i++)
        {
            var name = encoded.Count == 1 && field == "body" ? field : $"{field}[{i}]";
            DecodedImage image;
            try
            {
                image = ImageCodec.Decode(encoded[i]);
            }
            catch (InvalidDataException e)
            {
                throw new RequestProblemException(name, e.Message);
            }

            if (image.Width != shape.Width || image.Height != shape.Height)
            {
                throw new RequestProblemException(name, $"is {image.Width}×{image.Height}; this model takes {shape.Width}×{shape.Height} images.");
            }

            image.Pixels.CopyTo(pixels, (long)plane * i);
        }

        return WithLabels(new ImageBatch(encoded.Count, shape, pixels, null, null), labels, field == "body" ? "label" : "labels");
    }

    private static ImageBatch WithLabels(ImageBatch batch, int[]? labels, string field)
    {
        if (labels is null)
        {
            return batch;
        }

        return labels.Length == batch.Count
            ? batch with { Labels = labels }
            : throw new RequestProblemException(field, $"{labels.Length} labels for {batch.Count} images: give one label per image.");
    }

    private int[] ParseLabels(IReadOnlyList<string> texts, string field, int count)
    {
        if (texts.Count == 0)
        {
            throw new RequestProblemException(field, "required: one class index or name per image.");
        }

        var labels = texts.Select((t, i) => ParseLabelText(t, texts.Count == 1 ? field : $"{field}[{i}]")).ToArray();
        return labels.Length == count ? labels : throw new RequestProblemException(field, $"{labels.Length} labels for {count} images: give one label per image.");
    }

    private int ParseLabel(JsonElement label, string field) => label.ValueKind switch
    {
        JsonValueKind.Number when label.TryGetInt32(out var index) => CheckLabel(index, field),
        JsonValueKind.String => ParseLabelText(label.GetString()!, field),
        _ => throw new RequestProblemException(field, "a label is a class index (integer) or a class name."),
    };

    private int ParseLabelText(string text, string field)
    {
        if (int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var index))
        {
            return CheckLabel(index, field);
        }

        for (var c = 0; c < classNames.Count; c++)
        {
            if (string.Equals(classNames[c], text.Trim(), StringComparison.OrdinalIgnoreCase))
            {
                return c;
            }
        }

        throw new RequestProblemException(field, $"unknown label '{text}': use a class index in [0, {classNames.Count}) or one of {string.Join(", ", classNames)}.");
    }

    private int CheckLabel(int index, string field) =>
        index >= 0 && index < classNames.Count
            ? index
            : throw new RequestProblemException(field, $"unknown label {index}: class indices lie in [0, {classNames.Count}).");

    private int CheckShape(int[] dims, string field)
    {
        if (dims.Length != 4 || dims[0] < 1 || dims[1] != shape.Channels || dims[2] != shape.Height || dims[3] != shape.Width)
        {
            throw new RequestProblemException(field,
                $"[{string.Join(", ", dims)}] is not [n, {shape.Channels}, {shape.Height}, {shape.Width}] with n ≥ 1 (the model's input shape).");
        }

        CheckCount(dims[0], field);
        return dims[0];
    }

    private void CheckCount(int count, string field)
    {
        if (count > maxImages)
        {
            throw new RequestProblemException(field, $"{count} images; a request holds at most {maxImages} (Serve:MaxImagesPerRequest).");
        }
    }

    private static void CheckValues(float[] values, string field)
    {
        for (var i = 0; i < values.Length; i++)
        {
            if (!(values[i] >= 0 && values[i] <= 1))
            {
                throw new RequestProblemException($"{field}[{i}]", $"{values[i].ToString(CultureInfo.InvariantCulture)} is not a number in [0, 1] (pixels scaled to [0, 1]).");
            }
        }
    }

    private static async Task<byte[]> ReadBodyAsync(HttpRequest request, CancellationToken cancellationToken)
    {
        using var buffer = new MemoryStream();
        await request.Body.CopyToAsync(buffer, cancellationToken).ConfigureAwait(false);
        return buffer.ToArray();
    }
}
