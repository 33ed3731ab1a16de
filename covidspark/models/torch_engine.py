"""The ``torch`` engine: the registry's Keras backbones on Keras 3's PyTorch backend.

Same constructors, same weight files (``imagenet``, a path, ``random``) as the
TensorFlow engine: Keras 3 builds the network as a ``torch.nn.Module`` and
loads the ``.h5`` / ``.weights.h5`` file itself. Inference runs under
``torch.inference_mode``; bfloat16 through ``torch.autocast`` (weights stay
float32; features are returned as float32). On a GPU the decoded batch goes
through pinned host memory and an asynchronous copy, and the model's
preprocessing (``preprocess_input``) runs on the GPU: the host thread that
feeds the GPU does no per-pixel arithmetic.

Optional extra: ``pip install 'covidspark[torch]'``. Neither PyTorch nor Keras
is imported until a runner is built.
"""
import importlib.util
import logging

import numpy as np

logger = logging.getLogger(__name__)


def torch_installed():
    """Whether PyTorch can be imported here."""
    return importlib.util.find_spec("torch") is not None


def torch_gpu_capability(device):
    """Compute capability of ``device``'s GPU as PyTorch sees it, or None for the CPU.

    Raises
    ------
    covidspark.models.devices.DeviceAssignmentError
        Spark assigned a GPU that PyTorch cannot see (CPU build, driver missing).
    """
    import torch

    from covidspark.models.devices import DeviceAssignmentError

    if not device.on_gpu:
        return None
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.ordinal >= count:
        raise DeviceAssignmentError(
            f"Spark assigned GPU {device.address} to this task, but PyTorch "
            f"{torch.__version__} sees {count} GPU(s): check the node's CUDA driver and that "
            f"a CUDA build of PyTorch is installed")
    return torch.cuda.get_device_capability(device.ordinal)


def gray_to_rgb(x):
    """A ``(n, h, w)`` grey batch as ``(n, h, w, 3)`` (R = G = B); a 4-D batch unchanged."""
    return x.unsqueeze(-1).expand(*x.shape, 3) if x.dim() == 3 else x


def torch_preprocess(spec, device):
    """``preprocess_input`` of ``spec``'s mode as PyTorch operations on ``device``.

    The same arithmetic as :func:`covidspark.models.registry.numpy_preprocess`
    (tested equal to Keras' own through the engine tests), so that a batch can be
    preprocessed where it already is: on the GPU after its copy.
    """
    import torch

    from covidspark.models.registry import preprocessing_constants

    mode = spec.preprocessing
    constants = {name: torch.as_tensor(value, device=device)
                 for name, value in preprocessing_constants().items()}
    if mode == "caffe":  # RGB -> BGR, minus the ImageNet mean, no scaling
        return lambda x: x.flip(-1) - constants["caffe_bgr_mean"]
    if mode == "tf":  # to [-1, 1]
        return lambda x: x / 127.5 - 1.0
    if mode == "torch":  # to [0, 1], then ImageNet mean and std per channel
        return lambda x: (x / 255.0 - constants["torch_mean"]) / constants["torch_std"]
    raise ValueError(f"Unknown preprocessing mode {mode!r} of {spec.name}")


def model_input_function(spec, device):
    """A CPU batch in [0, 255] -> the model's input on ``device``.

    The batch is grey ``(n, h, w)`` or ``(n, h, w, 3)``, uint8 or float32. A grey
    batch is copied as one channel and widened to three on the device, where the
    model's preprocessing runs too: on a GPU the copy (and whatever fed it: the
    featurizer's decoder, fine-tuning's DataLoader workers) moves a third of the
    bytes, or a twelfth as uint8, and no CPU core does that arithmetic.
    """
    preprocess = torch_preprocess(spec, device)
    return lambda x: preprocess(gray_to_rgb(x.to(device, non_blocking=True).float()))


class TorchBackboneRunner:
    """A backbone on Keras' PyTorch backend, on one device.

    Parameters
    ----------
    spec : covidspark.models.Backbone
    weights_path : str
        Keras weights file to load.
    precision : {"float32", "bfloat16"}
        Compute precision (bfloat16 via autocast); features are always float32.
    device : covidspark.models.devices.TaskDevice, optional
        Default: the CPU.
    threads : int, optional
        PyTorch intra-op threads on the CPU (the Spark task's cores).
    """

    def __init__(self, spec, weights_path, precision="float32", device=None, threads=None):
        from covidspark.models.devices import CPU
        from covidspark.models.keras_backend import require_keras_backend

        require_keras_backend("torch", engine="torch")
        import keras
        import torch

        from covidspark.models.registry import build_backbone, numpy_preprocess

        self.spec = spec
        self.input_size = spec.input_size
        self.precision = precision
        self.engine = "torch"
        self.device = CPU if device is None else device
        self.on_gpu = self.device.on_gpu
        self._torch_device = torch.device(self.device.torch_name)
        if threads and not self.on_gpu:
            torch.set_num_threads(int(threads))
        if self.on_gpu:
            torch.cuda.set_device(self._torch_device)
        with keras.device(self.device.torch_name):
            self.model = build_backbone(spec, weights_path)
        self.model.eval()
        #: NumPy ``preprocess_input`` (for callers that feed ``self.model`` themselves).
        self.preprocess = numpy_preprocess(spec)
        self._model_input = model_input_function(spec, self._torch_device)

    #: Takes ``(n, size, size)`` grey batches too (widened to three channels on the device).
    accepts_gray = True

    def __call__(self, pixels):
        """Features of a batch: ``(n, size, size, 3)``, or grey ``(n, size, size)``.

        Values in [0, 255], float32 or (8-bit sources) uint8; returns float32
        ``(n, features)``.
        """
        import torch

        pixels = np.asarray(pixels)
        if pixels.dtype != np.uint8:
            pixels = pixels.astype(np.float32, copy=False)
        x = torch.from_numpy(np.ascontiguousarray(pixels))
        if self.on_gpu:
            x = x.pin_memory()  # so that the copy to the GPU is asynchronous
        x = self._model_input(x)
        autocast = torch.autocast(self._torch_device.type, dtype=torch.bfloat16,
                                  enabled=self.precision == "bfloat16")
        with torch.inference_mode(), autocast:
            out = self.model(x, training=False)
        return out.float().cpu().numpy()
