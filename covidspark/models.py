"""The backbone registry and weight resolution.

One dict, :data:`BACKBONES`, describes every supported network: the Keras
constructor, input size, preprocessing mode, feature dimension, the last
convolutional layer (for Grad-CAM) and the ImageNet "notop" weight file with its
hash. Validation, docs and tests derive from it.

Weights are resolved once, on the driver (:func:`resolve_weights`), into a local
file that Spark ships to the executors; executors never reach the network.

- ``"imagenet"`` downloads through Keras' own URL and verifies Keras' hash.
- a path (``/dbfs/...``, ``/Volumes/...``, a local ``.h5`` or ``.weights.h5``)
  is used as it is.
- ``"random"`` builds the network with seeded random weights once and saves them,
  so every worker loads bit-identical weights. For offline tests and demos only:
  every report that uses them says so.

Nothing here imports TensorFlow or Keras at module level.
"""
import dataclasses
import hashlib
import logging
import os
import tempfile

import numpy as np

logger = logging.getLogger(__name__)

_KERAS_WEIGHTS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclasses.dataclass(frozen=True)
class Backbone:
    """One entry of the registry.

    Attributes
    ----------
    name : str
        The ``modelName`` users pass, as sparkdl spelled it.
    keras_module : str
        Module holding the constructor and its own ``preprocess_input``.
    constructor : str
        Name of the Keras application function in ``keras_module``.
    input_size : int
        Side of the square input image, in pixels.
    preprocessing : str
        Keras preprocessing mode, for documentation: ``"caffe"`` (BGR, mean
        subtracted), ``"tf"`` (scaled to [-1, 1]) or ``"torch"`` (ImageNet mean/std).
    feature_dim : int
        Length of the globally average-pooled feature vector.
    last_conv_layer : str
        Name of the last convolutional block's output layer (for Grad-CAM).
    weights_file : str
        File name of the ImageNet weights without the classification top.
    weights_url : str
        Where Keras downloads ``weights_file`` from.
    weights_hash : str
        Keras' hash of ``weights_file`` (md5), checked after download.
    """

    name: str
    keras_module: str
    constructor: str
    input_size: int
    preprocessing: str
    feature_dim: int
    last_conv_layer: str
    weights_file: str
    weights_url: str
    weights_hash: str


def _entry(name, module, size, mode, dim, last_conv, url_dir, weights_file, md5):
    return Backbone(
        name=name,
        keras_module=f"keras.applications.{module}",
        constructor=name,
        input_size=size,
        preprocessing=mode,
        feature_dim=dim,
        last_conv_layer=last_conv,
        weights_file=weights_file,
        weights_url=f"{_KERAS_WEIGHTS_BASE}{url_dir}/{weights_file}",
        weights_hash=md5,
    )


# Hashes and URLs are Keras' own (keras/src/applications/*.py, include_top=False).
BACKBONES = {
    b.name: b
    for b in [
        _entry("ResNet50", "resnet50", 224, "caffe", 2048, "conv5_block3_out", "resnet",
               "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
               "4d473c1dd8becc155b73f8504c6f6626"),
        _entry("InceptionV3", "inception_v3", 299, "tf", 2048, "mixed10", "inception_v3",
               "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
               "bcbd6486424b2319ff4ef7d526e38f63"),
        _entry("DenseNet121", "densenet", 224, "torch", 1024, "relu", "densenet",
               "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
               "30ee3e1110167f948a6b9946edeeb738"),
        _entry("VGG16", "vgg16", 224, "caffe", 512, "block5_conv3", "vgg16",
               "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
               "6d6bbae143d832006294945121d1f1fc"),
        _entry("VGG19", "vgg19", 224, "caffe", 512, "block5_conv4", "vgg19",
               "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
               "253f8cb515780f3b799900260a226db6"),
        _entry("Xception", "xception", 299, "tf", 2048, "block14_sepconv2_act", "xception",
               "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
               "b0042744bf5b25fce3cb969f33bebb97"),
    ]
}


class WeightsUnavailableError(RuntimeError):
    """Raised when ImageNet weights cannot be downloaded or verified."""


@dataclasses.dataclass(frozen=True)
class ResolvedWeights:
    """A weights file on the driver, ready to be shipped to executors.

    Attributes
    ----------
    path : str
        Local path (or a URI all executors can read) of the weights file.
    weights_id : str
        Stable identity of the weights, part of the featurizer's signature.
    description : str
        One line for reports, e.g. ``"random (seed 0) - NOT pretrained"``.
    pretrained : bool
        False for ``"random"`` weights.
    """

    path: str
    weights_id: str
    description: str
    pretrained: bool


def get_backbone(model_name):
    """Return the registry entry for ``model_name``.

    Raises
    ------
    ValueError
        If the name is not in the registry; the message lists the supported names.
    """
    try:
        return BACKBONES[model_name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unsupported modelName {model_name!r}. Supported: {', '.join(BACKBONES)}."
        ) from None


def default_cache_dir():
    """Directory for covidspark's generated files (``$COVIDSPARK_CACHE`` or ~/.cache)."""
    root = os.environ.get("COVIDSPARK_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "covidspark"
    )
    return root


def resolve_weights(model_name, weights="imagenet", seed=0, cache_dir=None):
    """Resolve ``weights`` for ``model_name`` into a file on the driver.

    Parameters
    ----------
    model_name : str
        A key of :data:`BACKBONES`.
    weights : str
        ``"imagenet"``, ``"random"``, or a path to a Keras weights file
        (``.h5`` in Keras' ImageNet layout, or ``.weights.h5`` saved by Keras 3).
    seed : int
        Seed for ``"random"`` weights.
    cache_dir : str, optional
        Where downloaded or generated files go. Defaults to Keras' own cache
        (``~/.keras/models``) for ImageNet files and :func:`default_cache_dir`
        for random ones.

    Returns
    -------
    ResolvedWeights

    Raises
    ------
    WeightsUnavailableError
        If ImageNet weights cannot be downloaded (no network) or fail the hash check.
    FileNotFoundError
        If a local weights path does not exist.
    """
    spec = get_backbone(model_name)
    if weights is None or weights == "":
        raise ValueError(
            f"weights must be 'imagenet', 'random' or a file path. Received: weights={weights!r}"
        )
    if weights == "imagenet":
        return _resolve_imagenet(spec, cache_dir)
    if weights == "random":
        return _resolve_random(spec, int(seed), cache_dir)
    return _resolve_local_file(weights)


def _resolve_imagenet(spec, cache_dir):
    from keras.utils import get_file

    try:
        path = get_file(
            spec.weights_file,
            spec.weights_url,
            cache_subdir="models",
            file_hash=spec.weights_hash,
            cache_dir=cache_dir,
        )
    except Exception as exc:  # Keras raises a bare Exception on URL failures.
        keras_models = os.path.join(cache_dir or "~/.keras", "models")
        raise WeightsUnavailableError(
            f"Could not download the ImageNet weights of {spec.name} "
            f"({spec.weights_file}) from {spec.weights_url}: {exc}\n"
            f"Fetch the file on a machine with network access "
            f"(curl -L -o {spec.weights_file} {spec.weights_url}; md5 {spec.weights_hash}), "
            f"then either pass weights='/path/to/{spec.weights_file}' "
            f"(--weights /path/to/{spec.weights_file}) or copy it into {keras_models}/. "
            f"For an offline test or demo, weights='random' uses seeded random weights "
            f"(not pretrained)."
        ) from exc
    return ResolvedWeights(
        path=path,
        weights_id=f"imagenet:{spec.weights_hash}",
        description=f"imagenet ({spec.weights_file})",
        pretrained=True,
    )


def _resolve_random(spec, seed, cache_dir):
    import keras

    root = os.path.join(cache_dir or default_cache_dir(), "weights")
    os.makedirs(root, exist_ok=True)
    # Keras' initialisers may change between versions; the version is part of the name.
    name = f"{spec.name.lower()}-random-seed{seed}-keras{keras.__version__}.weights.h5"
    path = os.path.join(root, name)
    if not os.path.exists(path):
        logger.info("Generating seeded random weights for %s (seed %d) at %s", spec.name, seed, path)
        model = build_backbone(spec, weights_path=None, seed=seed)
        # Write to a temporary name and rename, so that a concurrent reader never
        # sees a half-written file.
        fd, tmp = tempfile.mkstemp(dir=root, suffix=".weights.h5")
        os.close(fd)
        try:
            model.save_weights(tmp, overwrite=True)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return ResolvedWeights(
        path=path,
        weights_id=f"random:seed={seed}:keras={keras.__version__}",
        description=f"random (seed {seed}) - NOT pretrained ImageNet weights",
        pretrained=False,
    )


def _resolve_local_file(weights):
    if "://" in weights or weights.startswith("dbfs:"):
        # Remote files are shipped by Spark (addFile understands Hadoop URIs).
        return ResolvedWeights(weights, f"uri:{weights}", f"file {weights}", True)
    path = os.path.abspath(os.path.expanduser(weights))
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Weights file not found: {path}. Pass 'imagenet', 'random' or the path of a "
            f"Keras weights file. Received: weights={weights!r}"
        )
    return ResolvedWeights(
        path=path,
        weights_id=f"file:{file_sha256(path)}",
        description=f"file {path}",
        pretrained=True,
    )


def file_sha256(path, chunk_size=1 << 20):
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def build_backbone(spec, weights_path=None, seed=None):
    """Build ``spec``'s Keras network: no top, global average pooling.

    Parameters
    ----------
    spec : Backbone
    weights_path : str, optional
        Weights file to load; ``None`` keeps the (seeded) random initialisation.
    seed : int, optional
        Seeds Keras' initialisers when building random weights.

    Returns
    -------
    keras.Model
        Maps ``(batch, size, size, 3)`` preprocessed images to ``(batch, feature_dim)``.
    """
    import importlib

    import keras

    if seed is not None:
        keras.utils.set_random_seed(seed)
    constructor = getattr(importlib.import_module(spec.keras_module), spec.constructor)
    model = constructor(
        include_top=False,
        weights=None,
        input_shape=(spec.input_size, spec.input_size, 3),
        pooling="avg",
    )
    if weights_path is not None:
        model.load_weights(weights_path)
    return model


def preprocess_function(spec):
    """The model's own Keras ``preprocess_input`` (never mix them up)."""
    import importlib

    return importlib.import_module(spec.keras_module).preprocess_input


# Keras' preprocess_input modes (keras/src/applications/imagenet_utils.py), in numpy.
_CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68], dtype=np.float32)
_TORCH_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_TORCH_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def numpy_preprocess(spec):
    """``preprocess_input`` of ``spec``'s mode without importing Keras or TensorFlow.

    The OpenVINO engine uses it so that a worker whose converted model is
    cached on disk never loads TensorFlow; tested equal to Keras' own.
    """
    mode = spec.preprocessing
    if mode == "caffe":  # RGB -> BGR, minus the ImageNet mean, no scaling
        return lambda x: x[..., ::-1] - _CAFFE_BGR_MEAN
    if mode == "tf":  # to [-1, 1]
        return lambda x: x / np.float32(127.5) - np.float32(1.0)
    if mode == "torch":  # to [0, 1], then ImageNet mean and std per channel
        return lambda x: (x / np.float32(255.0) - _TORCH_MEAN) / _TORCH_STD
    raise ValueError(f"Unknown preprocessing mode {mode!r} of {spec.name}")
