"""SmallCNN: a four-block convolutional network for CPU tests and demos of fine-tuning.

The registry's ImageNet networks take minutes per epoch on a laptop CPU;
SmallCNN (about 100 k weights, 96x96 input) trains in seconds, so tests and
``make demo`` can fine-tune for real. It has the signature of a
``keras.applications`` constructor and its own ``preprocess_input`` (the
``"tf"`` mode: pixels to [-1, 1]), so the registry, every engine, the
fine-tuning trainer and Grad-CAM treat it like the others. It has no
pretrained weights: ``weights="imagenet"`` is refused, and its numbers say
nothing about the large networks.
"""

FILTERS = (16, 32, 64, 128)
#: Bumped when the layers change, so cached random weights of another revision are not reused.
ARCHITECTURE_REVISION = 2
LAST_CONV_LAYER = f"block{len(FILTERS)}_relu"


def SmallCNN(include_top=False, weights=None, input_shape=None, pooling="avg", **kwargs):  # noqa: N802 - the keras.applications spelling
    """Conv(3x3, stride 2) + ReLU, four times, then global average pooling.

    Parameters
    ----------
    include_top : bool
        Must be False: the classifier is the caller's.
    weights : None
        A weights file is loaded by the caller (``model.load_weights``).
    input_shape : tuple, optional
        ``(96, 96, 3)`` by default.
    pooling : {"avg", None}

    Returns
    -------
    keras.Model
    """
    import keras
    from keras import layers

    if include_top or weights is not None:
        raise ValueError("SmallCNN is built without a top and without pretrained weights")
    inputs = keras.Input(shape=input_shape or (96, 96, 3))
    x = inputs
    for block, filters in enumerate(FILTERS, start=1):
        # No batch normalisation: trained from scratch on a few dozen images, a plain
        # He-initialised network trains and predicts the same way.
        x = layers.Conv2D(filters, 3, strides=2, padding="same", kernel_initializer="he_normal",
                          name=f"block{block}_conv")(x)
        x = layers.Activation("relu", name=f"block{block}_relu")(x)
    if pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, x, name="small_cnn")


def preprocess_input(x, data_format=None):
    """Pixels in [0, 255] to [-1, 1] (Keras' ``"tf"`` mode)."""
    return x / 127.5 - 1.0
