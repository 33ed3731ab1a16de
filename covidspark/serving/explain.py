"""Heat maps that show where a fitted pipeline looks: Grad-CAM and occlusion.

Grad-CAM (Selvaraju et al., 2017) for logistic regression heads. The class
score ``s_c = w_c . f + b_c`` is linear in the pooled backbone features ``f``,
so the gradient of ``s_c`` flows from the classifier's coefficients through the
global average pooling into the backbone's last convolutional layer ``A``
(the registry's ``last_conv_layer``). The map is ``ReLU(sum_k alpha_k A_k)`` with
``alpha_k`` the spatial mean of ``d s_c / d A_k``, computed by TensorFlow's
gradient tape (so layers between ``A`` and the pooling, such as VGG's last max
pooling, are handled too), then upsampled to the image.

Trees have no gradient. For RF and DT heads (or on request for LR) an
occlusion map is computed instead: the drop in the class probability when each
cell of a grid over the network's input is replaced by the image's mean grey.

A Grad-CAM explanation costs one forward and one backward pass: the features
the classifier reads and the activations the map is made of come from the same
pass (:func:`predict_with_grad_cam`).

Both maps are in the original image's coordinates, in [0, 1] (1 = the
strongest evidence for the class), and :func:`overlay_png` renders one over the
X-ray. These maps are research aids, not a check that a model is safe to use.
"""
import io

import numpy as np

from covidspark.errors import InputError

METHODS = ("gradcam", "occlusion", "auto")


class ExplainError(InputError):
    """A heat map that cannot be computed for this model (the message says why)."""


def check_method(method):
    """``method`` if it is one of ``METHODS``; else an :class:`ExplainError` that lists them."""
    if method not in METHODS:
        raise ExplainError(f"Unknown method {method!r}. Supported: {', '.join(METHODS)}.")
    return method


def class_index(predictor, label):
    """The index of ``label`` (None: the predicted class is chosen by the caller)."""
    if label not in predictor.labels:
        raise ExplainError(f"Unknown class {label!r}; the model's classes: {predictor.labels}")
    return predictor.labels.index(label)


def class_score_weights(head, index):
    """``(w, b)`` with ``s = w . f + b`` the logit of class ``index`` of an LR head.

    Binary models store class 1's log-odds ``m``: class 1's score is ``m`` and
    class 0's is ``-m``. Multinomial models have one row per class.
    """
    if head.kind != "lr":
        raise ExplainError(
            f"Grad-CAM needs a gradient; a {head.kind.upper()} classifier has none. "
            f"Use method='occlusion' for tree models.")
    if head.multinomial:
        return head.coefficients[index], float(head.intercepts[index])
    sign = 1.0 if index == 1 else -1.0
    return sign * head.coefficients[0], sign * float(head.intercepts[0])


def grad_cam(model, layer_name, inputs, weights, bias=0.0):
    """Grad-CAM of the score ``weights . model(inputs) + bias`` at a layer's resolution.

    Parameters
    ----------
    model : keras.Model
        A functional model whose output is a feature vector (e.g. a backbone
        with global average pooling).
    layer_name : str
        The convolutional layer to explain (its output is ``(1, h, w, k)``).
    inputs : numpy.ndarray
        One preprocessed input, ``(1, ...)``.
    weights : numpy.ndarray
        ``(feature_dim,)`` class-score weights (an LR head's coefficients).
    bias : float

    Returns
    -------
    numpy.ndarray
        ``(h, w)``: ``ReLU(sum_k alpha_k A_k)``, ``alpha_k`` the spatial mean of
        the score's gradient with respect to ``A_k``.
    """
    import tensorflow as tf

    w = tf.constant(np.asarray(weights, dtype=np.float32))
    with tf.GradientTape() as tape:
        activations, features = _activations_and_features(model, layer_name)(
            tf.convert_to_tensor(inputs), training=False)
        score = tf.reduce_sum(features[0] * w) + float(bias)
    return _cam(activations, tape.gradient(score, activations))


def _cam(activations, gradients):
    """``ReLU(sum_k alpha_k A_k)`` with ``alpha_k`` the spatial mean of the gradient."""
    import tensorflow as tf

    alpha = tf.reduce_mean(gradients, axis=(1, 2))                 # (1, channels)
    return tf.nn.relu(tf.reduce_sum(activations * alpha[:, None, None, :], axis=-1))[0].numpy()


def _activations_and_features(model, layer_name):
    """The model mapping inputs to (the layer's output, the features), built once per model."""
    import keras

    cache = model.__dict__.setdefault("_covidspark_gradcam", {})
    if layer_name not in cache:
        cache[layer_name] = keras.Model(model.inputs,
                                        [model.get_layer(layer_name).output, model.output])
    return cache[layer_name]


def predict_with_grad_cam(predictor, pixels, label=None):
    """The prediction and its Grad-CAM from **one** forward pass (and one backward).

    The features for the classifier and the last convolutional layer's
    activations come out of the same pass; the class to explain (``label``, or
    the predicted one) is chosen from those features, and its score's gradient
    is taken on the same tape.

    Returns
    -------
    (dict, int, numpy.ndarray)
        :meth:`Predictor.classify`'s result, the explained class index, and the
        map at the input resolution in [0, 1].
    """
    import tensorflow as tf

    head = predictor.pipeline.head
    class_score_weights(head, 0)  # a tree head has no gradient: say so before any work
    runner = predictor.keras_runner
    x = tf.convert_to_tensor(runner.preprocess(np.array(pixels[None], dtype=np.float32)))
    with predictor.lock:
        both = _activations_and_features(runner.model, predictor.spec.last_conv_layer)
        with tf.GradientTape() as tape:
            activations, features = both(x, training=False)
            result = predictor.classify(np.asarray(features[0], dtype=np.float64))
            index = class_index(predictor, label or result["label"])
            weights, bias = class_score_weights(head, index)
            score = tf.reduce_sum(features[0] * tf.constant(np.asarray(weights, np.float32)))
            score = score + float(bias)
        cam = _cam(activations, tape.gradient(score, activations))
    return result, index, upsample(cam, predictor.spec.input_size)


def grad_cam_input(predictor, pixels, index):
    """Grad-CAM of class ``index`` of a predictor's LR head at the input resolution, in [0, 1].

    Parameters
    ----------
    predictor : covidspark.serving.predictor.Predictor
    pixels : numpy.ndarray
        ``(size, size, 3)`` network input before preprocessing (``predictor.pixels``).
    index : int
        Class index.

    Returns
    -------
    numpy.ndarray
        ``(size, size)`` float32, non-negative, max 1 unless the map is all zero.
    """
    weights, bias = class_score_weights(predictor.pipeline.head, index)
    runner = predictor.keras_runner
    x = runner.preprocess(np.array(pixels[None], dtype=np.float32))
    with predictor.lock:
        cam = grad_cam(runner.model, predictor.spec.last_conv_layer, x, weights, bias)
    return upsample(cam, predictor.spec.input_size)


def occlusion_input(predictor, pixels, index, grid=7):
    """Occlusion map of class ``index`` at the input resolution, in [0, 1].

    Each of ``grid`` x ``grid`` cells is filled with the image's mean grey in
    turn (one batch of ``grid**2`` forward passes); a cell's value is how much
    the class probability falls without it.
    """
    size = pixels.shape[0]
    edges = np.linspace(0, size, grid + 1).round().astype(int)
    batch = np.repeat(pixels[None], grid * grid, axis=0)
    fill = float(pixels.mean())
    for k in range(grid * grid):
        i, j = divmod(k, grid)
        batch[k, edges[i]:edges[i + 1], edges[j]:edges[j + 1], :] = fill
    head = predictor.pipeline.head
    base = head.predict(predictor.features(pixels)[0])[0][index]
    occluded = np.array([head.predict(f)[0][index] for f in predictor.features(batch)])
    drop = np.maximum(base - occluded, 0.0).reshape(grid, grid)
    cells = np.zeros((size, size), dtype=np.float32)
    for i in range(grid):
        for j in range(grid):
            cells[edges[i]:edges[i + 1], edges[j]:edges[j + 1]] = drop[i, j]
    return _normalise(cells)


def _normalise(heat):
    heat = np.asarray(heat, dtype=np.float32)
    peak = float(heat.max()) if heat.size else 0.0
    return heat / peak if peak > 0 else np.zeros_like(heat)


def upsample(heat, size):
    """A map resized to ``size`` x ``size`` (bilinear), non-negative, max 1."""
    from PIL import Image

    resized = Image.fromarray(np.asarray(heat, dtype=np.float32)).resize(
        (size, size), Image.Resampling.BILINEAR)
    return _normalise(np.maximum(np.asarray(resized), 0.0))


def to_image_coordinates(heat, width, height, crop=1.0):
    """Map an input-resolution heat map back onto the original ``width`` x ``height`` image.

    The featurizer crops the centre (``crop``) and squashes it to a square, so
    the map is stretched back over the crop box; outside it the map is zero.
    """
    from PIL import Image

    from covidspark.data.decoding import crop_box

    left, top, right, bottom = crop_box(width, height, crop)
    stretched = Image.fromarray(np.asarray(heat, dtype=np.float32)).resize(
        (right - left, bottom - top), Image.Resampling.BILINEAR)
    full = np.zeros((height, width), dtype=np.float32)
    full[top:bottom, left:right] = np.maximum(np.asarray(stretched), 0.0)
    return _normalise(full)  # resampling moves the peak: 1 again at the strongest point


def method_for(logistic_head):
    """What ``method="auto"`` means: Grad-CAM explains a logistic regression (its map comes
    from the classifier's own weights), occlusion a tree model (which has no gradient)."""
    return "gradcam" if logistic_head else "occlusion"


def explain(predictor, data, label=None, method="auto", name="<upload>"):
    """Predict one encoded image and compute its heat map.

    Parameters
    ----------
    predictor : covidspark.serving.predictor.Predictor
    data : bytes
        PNG, JPEG or DICOM bytes.
    label : str, optional
        The class to explain (default: the predicted one).
    method : {"auto", "gradcam", "occlusion"}
        ``"auto"``: Grad-CAM for logistic regression, occlusion for trees.
    name : str
        Names the image in error messages.

    Returns
    -------
    (dict, numpy.ndarray, PIL.Image.Image)
        The prediction (as :meth:`Predictor.predict`, plus ``explained`` and
        ``method``), the heat map in the image's coordinates and the decoded image.
    """
    if check_method(method) == "auto":
        method = method_for(predictor.pipeline.head.kind == "lr")
    image = predictor.open(data, name)
    pixels = predictor.pixels(image)
    if method == "gradcam":
        result, index, heat = predict_with_grad_cam(predictor, pixels, label)
    else:
        result = predictor.classify(predictor.features(pixels)[0])
        index = class_index(predictor, label or result["label"])
        heat = occlusion_input(predictor, pixels, index)
    result.update(explained=predictor.labels[index], method=method)
    return result, to_image_coordinates(heat, *image.size, predictor.options["crop"]), image


def overlay(image, heat, max_side=1024, alpha=0.45):
    """The X-ray in grey with the heat map over it (jet colours, opacity grows with heat).

    Returns an RGB Pillow image no larger than ``max_side`` on its longer side.
    """
    from matplotlib import colormaps
    from PIL import Image

    from covidspark.data.decoding import to_grayscale_float

    gray = Image.fromarray(np.clip(to_grayscale_float(image), 0, 255).astype(np.uint8))
    heat_image = Image.fromarray(np.asarray(heat, dtype=np.float32))
    scale = min(1.0, max_side / max(gray.size))
    if scale < 1.0:
        size = (max(1, round(gray.size[0] * scale)), max(1, round(gray.size[1] * scale)))
        gray = gray.resize(size, Image.Resampling.BOX)
        heat_image = heat_image.resize(size, Image.Resampling.BILINEAR)
    base = np.repeat(np.asarray(gray, dtype=np.float32)[:, :, None], 3, axis=2) / 255.0
    h = np.clip(np.asarray(heat_image), 0.0, 1.0)
    colours = colormaps["jet"](h)[:, :, :3]
    weight = alpha * h[:, :, None]
    blended = (1.0 - weight) * base + weight * colours
    return Image.fromarray(np.clip(blended * 255.0 + 0.5, 0, 255).astype(np.uint8), "RGB")


def overlay_png(image, heat, max_side=1024):
    """:func:`overlay` encoded as PNG bytes."""
    buffer = io.BytesIO()
    overlay(image, heat, max_side).save(buffer, format="PNG")
    return buffer.getvalue()
