"""Inference engines that run a backbone inside a Python worker.

- :class:`KerasBackboneRunner`: the Keras model behind one compiled
  ``tf.function`` (not ``model.predict`` per batch), float32 or bfloat16
  (Keras' ``mixed_bfloat16`` policy: weights in float32, compute in bfloat16).
- :class:`OpenVinoBackboneRunner`: the same Keras model, built and weighted by
  Keras, converted once per worker with ``openvino.convert_model`` and run by
  OpenVINO's CPU plugin (optional extra ``covidspark[openvino]``).
- :class:`~covidspark.models.torch_engine.TorchBackboneRunner`: the same Keras
  model on Keras 3's PyTorch backend, CPU or CUDA (optional extra
  ``covidspark[torch]``). One Keras backend per process
  (:mod:`covidspark.models.keras_backend`).

Both take ``(n, size, size, 3)`` float32 images in [0, 255] and return
``(n, feature_dim)`` float32 features. ``"auto"`` choices are resolved on the
worker, from its own hardware: bfloat16 where the CPU has AMX or AVX-512 BF16
or the GPU has compute capability 8.0 or more; OpenVINO on CPU workers where it
is installed (else Keras), PyTorch on GPU workers where it is installed (else
Keras). Measured in Spark local[2] on a 2-core AMD
EPYC without bf16 units (benchmarks/featurize.py, ResNet50, batch 32):
covidspark Keras float32 14.3 images/s, OpenVINO 18.1 (cosine to Keras
0.9999999), Keras bfloat16 11.4 (emulated: slower, so "auto" keeps float32 there).
"""
import collections
import importlib.util
import logging
import os

import numpy as np

from covidspark.errors import InputError

logger = logging.getLogger(__name__)

PRECISIONS = ("float32", "bfloat16", "auto")
ENGINES = ("keras", "openvino", "torch", "auto")


# ------------------------------------------------------------ hardware choices


def cpu_flags(cpuinfo="/proc/cpuinfo"):
    """The CPU feature flags of this machine (empty where /proc/cpuinfo is absent)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_bf16(flags):
    """AMX-BF16 or AVX-512 BF16: bfloat16 matrix units that make bf16 inference faster."""
    return bool({"amx_bf16", "avx512_bf16"} & set(flags))


def resolve_precision(precision, flags=None, gpu_capability=None):
    """``"auto"`` -> ``"bfloat16"`` on bf16 hardware, else ``"float32"``.

    Parameters
    ----------
    precision : {"float32", "bfloat16", "auto"}
    flags : set of str, optional
        CPU flags (default: this machine's).
    gpu_capability : tuple of int, optional
        Compute capability of the GPU in use, e.g. ``(8, 0)``; None on CPU.
    """
    if precision not in PRECISIONS:
        raise InputError(f"Unknown precision {precision!r}. Supported: {', '.join(PRECISIONS)}.")
    if precision != "auto":
        return precision
    if gpu_capability is not None:
        return "bfloat16" if tuple(gpu_capability) >= (8, 0) else "float32"
    return "bfloat16" if cpu_has_bf16(cpu_flags() if flags is None else flags) else "float32"


def openvino_installed():
    """Whether the optional OpenVINO runtime can be imported."""
    return importlib.util.find_spec("openvino") is not None


def resolve_engine(engine, on_gpu=False, installed=None, torch_available=None):
    """``"auto"`` -> on a GPU task PyTorch where installed, on a CPU task OpenVINO where
    installed; else Keras on TensorFlow.

    Parameters
    ----------
    engine : {"keras", "openvino", "torch", "auto"}
    on_gpu : bool
        Whether the task runs on a GPU.
    installed, torch_available : bool, optional
        Whether OpenVINO / PyTorch can be imported (default: looked up).
    """
    from covidspark.models.torch_engine import torch_installed

    if engine not in ENGINES:
        raise InputError(f"Unknown engine {engine!r}. Supported: {', '.join(ENGINES)}.")
    installed = openvino_installed() if installed is None else installed
    torch_available = torch_installed() if torch_available is None else torch_available
    if engine == "openvino":
        if on_gpu:
            raise InputError("engine='openvino' runs on CPU workers; GPU workers use 'torch' "
                             "or 'keras'")
        if not installed:
            raise ImportError("engine='openvino' needs OpenVINO: pip install 'covidspark[openvino]'")
        return "openvino"
    if engine == "torch" and not torch_available:
        raise ImportError("engine='torch' needs PyTorch: pip install 'covidspark[torch]'")
    if engine == "auto":
        if on_gpu:
            return "torch" if torch_available else "keras"
        return "openvino" if installed else "keras"
    return engine


# ------------------------------------------------------------ worker set-up


def task_cpus():
    """``spark.task.cpus`` of the running task, or None outside a task."""
    from pyspark import TaskContext

    context = TaskContext.get()
    return context.cpus() if context is not None else None


_TF_CONFIGURED = False


def configure_tensorflow():
    """Set TensorFlow's GPU memory growth and thread count, once per process.

    Every GPU stays visible (``CUDA_VISIBLE_DEVICES`` is left as the worker was
    started): a reused worker may be assigned a different GPU by its next task,
    and each model is placed on its task's device (:mod:`covidspark.models.devices`).
    Memory growth keeps a process from reserving GPUs it does not use; intra-op
    threads follow ``spark.task.cpus`` so that concurrent tasks do not
    oversubscribe the cores.

    Returns
    -------
    int or None
        The task's CPU count, when running inside a Spark task.
    """
    global _TF_CONFIGURED
    from pyspark import TaskContext

    from covidspark.models.keras_backend import require_keras_backend

    require_keras_backend("tensorflow", engine="keras")
    context = TaskContext.get()
    cpus = context.cpus() if context is not None else None
    if _TF_CONFIGURED:
        return cpus
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from covidspark.runtime.logs import quiet_native_stderr

    with quiet_native_stderr():
        import tensorflow as tf

        # Listing devices initialises CUDA, which logs cuInit failures below Python on CPU hosts.
        gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    if cpus:
        tf.config.threading.set_intra_op_parallelism_threads(cpus)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    _TF_CONFIGURED = True
    return cpus


def gpu_capability(device):
    """Compute capability of ``device``'s GPU (TensorFlow's view), or None for the CPU.

    Raises
    ------
    covidspark.models.devices.DeviceAssignmentError
        Spark assigned a GPU that TensorFlow does not see (no CUDA build, driver
        missing): running on the CPU instead would hide a misconfigured cluster.
    """
    import tensorflow as tf

    from covidspark.models.devices import DeviceAssignmentError

    if not device.on_gpu:
        return None
    gpus = tf.config.list_physical_devices("GPU")
    if device.ordinal >= len(gpus):
        raise DeviceAssignmentError(
            f"Spark assigned GPU {device.address} to this task, but TensorFlow in worker "
            f"{os.getpid()} sees {len(gpus)} GPU(s): check the node's CUDA driver and "
            f"that TensorFlow was installed with GPU support")
    details = tf.config.experimental.get_device_details(gpus[device.ordinal])
    return details.get("compute_capability")


# One model per Python worker, reused across tasks (spark.python.worker.reuse=true).
# Two entries at most: a pipeline rarely uses more than one backbone at a time, and
# each holds 100+ MB.
_MODEL_CACHE = collections.OrderedDict()
_MODEL_CACHE_SIZE = 2


def build_runner(spec, weights_path, weights_id, precision="float32", engine="keras",
                 threads=None, device=None):
    """A backbone runner for this process's hardware: the one place ``"auto"`` is resolved.

    Parameters
    ----------
    spec : covidspark.models.registry.Backbone
    weights_path : str
        Local weights file.
    weights_id : str
        Identity of the weights (keys the cached OpenVINO conversion).
    precision : {"float32", "bfloat16", "auto"}
        ``auto``: bfloat16 on a GPU of compute capability >= 8.0 or a CPU with
        AMX / AVX-512 BF16, else float32.
    engine : {"keras", "openvino", "torch", "auto"}
        ``auto``: on a GPU, PyTorch where installed; on a CPU, OpenVINO where
        installed; else Keras on TensorFlow.
    threads : int, optional
        CPU threads for OpenVINO (the Spark task's cores).
    device : covidspark.models.devices.TaskDevice, optional
        Default: inside a Spark task, the GPU Spark assigned to it (the CPU when
        it holds none); outside one, the first GPU of a GPU host, else the CPU.

    Returns
    -------
    KerasBackboneRunner, OpenVinoBackboneRunner or TorchBackboneRunner
        With ``engine``, ``precision``, ``device`` and ``on_gpu`` set.
    """
    from covidspark.models.devices import default_device
    from covidspark.models.torch_engine import TorchBackboneRunner, torch_gpu_capability

    device = default_device() if device is None else device
    chosen_engine = resolve_engine(engine, on_gpu=device.on_gpu)
    # TensorFlow is imported only where it is needed: to check a GPU for Keras and
    # to build the Keras model. A CPU worker whose OpenVINO model is cached on local
    # disk never loads it (a few seconds and ~1 GB less per worker); a torch worker
    # never does.
    if chosen_engine == "torch":
        capability = torch_gpu_capability(device)
    elif device.on_gpu:
        configure_tensorflow()
        capability = gpu_capability(device)
    else:
        capability = None
    chosen_precision = resolve_precision(precision, gpu_capability=capability)
    if chosen_engine == "torch":
        runner = TorchBackboneRunner(spec, weights_path, chosen_precision, device=device,
                                     threads=threads)
    elif chosen_engine == "openvino":
        runner = OpenVinoBackboneRunner(spec, weights_path, chosen_precision, threads=threads,
                                        weights_id=weights_id)
    else:
        configure_tensorflow()
        runner = KerasBackboneRunner(spec, weights_path, chosen_precision, device=device)
    runner.device = device
    runner.on_gpu = device.on_gpu
    return runner


def worker_model(model_name, weights_file, weights_id, precision="float32", engine="keras"):
    """The cached runner for this Python worker, built on first use (:func:`build_runner`).

    ``weights_file`` is an absolute path or the name of a file Spark shipped
    (``SparkFiles``).
    """
    from pyspark import SparkFiles

    from covidspark.models.devices import task_device
    from covidspark.models.registry import get_backbone

    # Per device: a reused worker runs each task on the GPU Spark assigned to that task.
    device = task_device()
    key = (model_name, weights_id, precision, engine, device)
    runner = _MODEL_CACHE.get(key)
    if runner is not None:
        _MODEL_CACHE.move_to_end(key)
        return runner
    path = weights_file if os.path.isabs(weights_file) else SparkFiles.get(weights_file)
    runner = build_runner(get_backbone(model_name), path, weights_id, precision, engine,
                          threads=task_cpus(), device=device)
    logger.info("Worker %d: %s on %s, %s, %s", os.getpid(), model_name, runner.engine,
                runner.precision, device)
    _MODEL_CACHE[key] = runner
    while len(_MODEL_CACHE) > _MODEL_CACHE_SIZE:
        _MODEL_CACHE.popitem(last=False)
    return runner


# ------------------------------------------------------------ runners


def _build(spec, weights_path, precision):
    import keras

    from covidspark.models.registry import build_backbone

    if precision != "bfloat16":
        return build_backbone(spec, weights_path)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        return build_backbone(spec, weights_path)
    finally:
        keras.config.set_dtype_policy(previous)


class KerasBackboneRunner:
    """A backbone with its preprocessing behind one compiled call.

    Parameters
    ----------
    spec : covidspark.models.Backbone
    weights_path : str
        Weights file to load.
    precision : {"float32", "bfloat16"}
        Compute precision; features are always returned as float32.
    device : covidspark.models.devices.TaskDevice, optional
        Where the weights live and the model runs (default: TensorFlow's choice).
    """

    def __init__(self, spec, weights_path, precision="float32", device=None):
        import contextlib

        import tensorflow as tf

        from covidspark.models.registry import preprocess_function

        self.spec = spec
        self.input_size = spec.input_size
        self.precision = precision
        self.engine = "keras"
        self.device = device
        self._placement = (lambda: tf.device(device.tensorflow_name)) if device is not None \
            else contextlib.nullcontext
        with self._placement():
            self.model = _build(spec, weights_path, precision)
        self.preprocess = preprocess_function(spec)
        model = self.model
        # A fixed signature: one trace for every batch size, no retracing.
        self._forward = tf.function(
            lambda x: tf.cast(model(x, training=False), tf.float32),
            input_signature=[tf.TensorSpec([None, spec.input_size, spec.input_size, 3],
                                           tf.float32)],
        )

    def __call__(self, pixels):
        import tensorflow as tf

        # Keras' preprocess_input may work in place; never touch the caller's array.
        x = self.preprocess(np.array(pixels, dtype=np.float32, copy=True))
        with self._placement():
            out = self._forward(tf.convert_to_tensor(x))
        return out.numpy().astype(np.float32, copy=False)


def openvino_ir_path(spec, weights_id, cache_dir=None):
    """Where this worker keeps the OpenVINO IR of a backbone and its weights (local disk).

    Keyed by model, weights and OpenVINO version; under
    ``$COVIDSPARK_CACHE/openvino`` (default ``~/.cache/covidspark``).
    """
    import hashlib

    import openvino as ov

    from covidspark.runtime.cache import default_cache_dir

    key = hashlib.sha256(f"{spec.name}|{weights_id}|{ov.__version__}".encode()).hexdigest()[:16]
    return os.path.join(cache_dir or default_cache_dir(), "openvino", f"{spec.name}-{key}.xml")


def convert_to_openvino(spec, weights_path, ir_path=None):
    """Build the Keras backbone, convert it with ``openvino.convert_model``; save the IR if asked.

    The IR is written under temporary names and renamed, ``.bin`` first and
    ``.xml`` last, so that a reader never sees a half-written pair (several
    workers on one host may convert at once; they write identical files).
    """
    import openvino as ov

    from covidspark.models.registry import build_backbone

    configure_tensorflow()
    converted = ov.convert_model(build_backbone(spec, weights_path))
    if ir_path:
        os.makedirs(os.path.dirname(ir_path), exist_ok=True)
        tmp = f"{ir_path[:-4]}.tmp-{os.getpid()}.xml"
        ov.save_model(converted, tmp, compress_to_fp16=False)
        os.replace(tmp[:-4] + ".bin", ir_path[:-4] + ".bin")
        os.replace(tmp, ir_path)
        logger.info("Saved the OpenVINO model of %s to %s", spec.name, ir_path)
    return converted


class OpenVinoBackboneRunner:
    """The Keras backbone converted to OpenVINO and compiled for this CPU.

    Parameters
    ----------
    spec : covidspark.models.Backbone
    weights_path : str
    precision : {"float32", "bfloat16"}
        OpenVINO's inference precision hint (bf16 needs AMX or AVX-512 BF16).
    threads : int, optional
        CPU threads for inference (``spark.task.cpus``).
    weights_id : str, optional
        The weights' identity: with it, the converted model is cached on local
        disk (:func:`openvino_ir_path`) and later workers load it without
        TensorFlow.
    cache_dir : str, optional
        Overrides :func:`covidspark.models.default_cache_dir`.
    """

    def __init__(self, spec, weights_path, precision="float32", threads=None, weights_id=None,
                 cache_dir=None):
        import openvino as ov

        from covidspark.models.registry import numpy_preprocess

        self.spec = spec
        self.input_size = spec.input_size
        self.precision = precision
        self.engine = "openvino"
        self.preprocess = numpy_preprocess(spec)
        self.ir_path = openvino_ir_path(spec, weights_id, cache_dir) if weights_id else None
        self.from_cache = bool(self.ir_path) and os.path.exists(self.ir_path)
        if self.from_cache:
            converted = ov.Core().read_model(self.ir_path)
        else:
            converted = convert_to_openvino(spec, weights_path, self.ir_path)
        config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bfloat16" else "f32",
                  "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
            # Several Python workers share the machine: pinned threads would all land
            # on the same cores.
            config["ENABLE_CPU_PINNING"] = False
        self._compiled = ov.Core().compile_model(converted, "CPU", config)

    def __call__(self, pixels):
        x = self.preprocess(np.array(pixels, dtype=np.float32, copy=True))
        return np.asarray(self._compiled(x)[0], dtype=np.float32)
