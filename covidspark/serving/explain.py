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

Both maps are in the original image's coordinates, in [0, 1] (1 = the
strongest evidence for the class), and :func:`overlay_png` renders one over the
X-ray. These maps are research aids, not a check that a model is safe to use.
"""
import io
import os

import numpy as np

from covidspark.errors import InputError

METHODS = ("gradcam", "occlusion", "auto")


class ExplainError(InputError):
    """A heat map that cannot be computed for this model (the message says why)."""


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
    import keras
    import tensorflow as tf

    cache = model.__dict__.setdefault("_covidspark_gradcam", {})
    if layer_name not in cache:
        cache[layer_name] = keras.Model(model.inputs,
                                        [model.get_layer(layer_name).output, model.output])
    w = tf.constant(np.asarray(weights, dtype=np.float32))
    with tf.GradientTape() as tape:
        activations, features = cache[layer_name](tf.convert_to_tensor(inputs), training=False)
        score = tf.reduce_sum(features[0] * w) + float(bias)
    gradients = tape.gradient(score, activations)
    alpha = tf.reduce_mean(gradients, axis=(1, 2))                 # (1, channels)
    cam = tf.nn.relu(tf.reduce_sum(activations * alpha[:, None, None, :], axis=-1))[0]
    return cam.numpy()


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
    if method not in METHODS:
        raise ExplainError(f"Unknown method {method!r}. Supported: {', '.join(METHODS)}.")
    image = predictor.open(data, name)
    pixels = predictor.pixels(image)
    result = predictor.classify(predictor.features(pixels)[0])
    index = class_index(predictor, label or result["label"])
    if method == "auto":
        method = "gradcam" if predictor.pipeline.head.kind == "lr" else "occlusion"
    heat = (grad_cam_input if method == "gradcam" else occlusion_input)(predictor, pixels, index)
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


# ------------------------------------------------------------------ in Spark

# shipped model archive -> Predictor, one per Python worker (reused across tasks).
_WORKER_PREDICTORS = {}


def _worker_predictor(model_archive):
    """The Predictor of a model shipped as a zip (:func:`ship_model`), unpacked once per worker."""
    import zipfile

    from pyspark import SparkFiles

    from covidspark.serving.predictor import Predictor

    if model_archive not in _WORKER_PREDICTORS:
        _WORKER_PREDICTORS.clear()  # one model per worker: each holds a backbone
        archive = SparkFiles.get(model_archive)
        target = f"{archive}.d"
        if not os.path.isdir(target):
            tmp = f"{target}.tmp-{os.getpid()}"
            with zipfile.ZipFile(archive) as z:
                z.extractall(tmp)
            try:
                os.rename(tmp, target)
            except OSError:  # another worker of this node unpacked it first
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
        _WORKER_PREDICTORS[model_archive] = Predictor(target)
    return _WORKER_PREDICTORS[model_archive]


def ship_model(spark, model_dir):
    """Send a saved PipelineModel (any URI) to every executor as one zip; returns its name.

    The driver reads the folder through the filesystem layer, so a model on
    HDFS, S3 or a viewfs mount reaches executors that could not read it
    themselves; the archive's name carries its content hash.
    """
    import hashlib
    import tempfile
    import zipfile

    from covidspark.runtime.connect import ship_file
    from covidspark.runtime.filesystem import Files

    files = Files(spark)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for relative, data in files.read_tree(model_dir):
            if not relative.rsplit("/", 1)[-1].startswith((".", "_SUCCESS")):
                z.writestr(relative, data)
    data = buffer.getvalue()
    folder = tempfile.mkdtemp(prefix="covidspark-model-")
    path = os.path.join(folder, f"model-{hashlib.sha256(data).hexdigest()[:16]}.zip")
    with open(path, "wb") as f:
        f.write(data)
    return ship_file(spark, path)


def heatmap_file_name(image_id, path):
    """``<first 16 hex of the image id>-<file stem>.png``: unique, and readable."""
    import re

    stem = os.path.splitext(os.path.basename(str(path or "image")))[0]
    return f"{str(image_id)[:16]}-{re.sub(r'[^A-Za-z0-9._-]+', '_', stem)[:80]}.png"


HEATMAP_PNG_COL = "heatmap_png"


def add_heatmaps(df, model_dir, out_dir, content_col="content", path_col="path",
                 id_col="image_id", output_col="heatmap", method="auto"):
    """Add an overlay PNG per row, computed on the executors, and where it is to be written.

    The saved model is shipped from the driver (:func:`ship_model`), so
    ``model_dir`` may be any URI the driver can read; each Python worker loads
    it once. The result has ``output_col`` (``<out_dir>/<heatmap_file_name>``)
    and ``heatmap_png`` (the PNG bytes); :func:`write_heatmaps` writes them
    through the filesystem layer, so they land in ``out_dir`` (HDFS, S3, a
    Volume, local) rather than on the executors' disks. The heat map explains
    each image's predicted class.
    """
    from typing import Iterator, Tuple

    import pandas as pd
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf

    from covidspark.runtime.filesystem import join

    archive = ship_model(df.sparkSession, model_dir)

    def render(batches: Iterator[Tuple[pd.Series, pd.Series, pd.Series]]) -> Iterator[pd.Series]:
        predictor = _worker_predictor(archive)
        for contents, paths, ids in batches:
            pngs = []
            for content, path in zip(contents, paths):
                _, heat, image = explain(predictor, content, method=method, name=path)
                pngs.append(overlay_png(image, heat))
            yield pd.Series(pngs, dtype=object)

    udf = pandas_udf(render, "binary")
    name = F.udf(heatmap_file_name, "string")
    return (df.withColumn(HEATMAP_PNG_COL, udf(F.col(content_col), F.col(path_col),
                                               F.col(id_col)))
            .withColumn(output_col, F.concat(F.lit(join(out_dir, "")), name(id_col, path_col))))


def write_heatmaps(df, files, output_col="heatmap"):
    """Write every row's ``heatmap_png`` to its ``output_col`` URI; returns the number written.

    Rows stream to the driver one partition at a time (``toLocalIterator``):
    the driver holds one partition's PNGs at most. Persist ``df`` first when
    its other columns are written too, or the heat maps are computed twice.
    """
    written = 0
    for row in df.select(output_col, HEATMAP_PNG_COL).toLocalIterator():
        files.write_bytes(row[0], bytes(row[1]))
        written += 1
    return written
