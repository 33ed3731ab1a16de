"""The backbone registry: one dict describes every supported network.

One dict, :data:`BACKBONES`, describes every supported network: the Keras
constructor, input size, preprocessing mode, feature dimension, the last
convolutional layer (for Grad-CAM) and the ImageNet "notop" weight file with its
hash. Validation, docs and tests derive from it.

Weights are resolved by :mod:`covidspark.models.weights`.

Nothing here imports TensorFlow or Keras at module level.
"""
import dataclasses
import logging

import numpy as np
from covidspark.errors import InputError

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
# No ImageNet weights: for CPU tests and demos of fine-tuning (covidspark.models.small_cnn).
BACKBONES["SmallCNN"] = Backbone(
    name="SmallCNN", keras_module="covidspark.models.small_cnn", constructor="SmallCNN",
    input_size=96, preprocessing="tf", feature_dim=128, last_conv_layer="block4_relu",
    weights_file="", weights_url="", weights_hash="")


def has_pretrained_weights(spec):
    """Whether ``spec`` has ImageNet weights to download (SmallCNN has none)."""
    return bool(spec.weights_url)


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
        raise InputError(
            f"Unsupported modelName {model_name!r}. Supported: {', '.join(BACKBONES)}."
        ) from None


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

    from covidspark.models.keras_backend import seed_keras

    if seed is not None:
        seed_keras(seed)
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


def preprocessing_constants():
    """The per-channel constants of Keras' ``preprocess_input`` modes (float32 arrays)."""
    return {"caffe_bgr_mean": _CAFFE_BGR_MEAN, "torch_mean": _TORCH_MEAN,
            "torch_std": _TORCH_STD}


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
