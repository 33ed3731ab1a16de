"""Which device a Spark task runs its backbone on: the GPU Spark assigned to it, or the CPU.

Spark hands GPUs to *tasks*, not to Python workers: with
``spark.task.resource.gpu.amount=1`` and two GPUs per executor, one reused
Python worker may run a task on GPU ``0`` and its next task on GPU ``1``. So the
device is read from the running task's resources every time
(:func:`task_device`), never fixed per process, and models are cached per
device. A task without GPU resources runs on the CPU, also on a GPU host.

Spark's addresses are what the executor's discovery script reported (the
``nvidia-smi`` index). A framework numbers the GPUs its process can see; where
the worker process was started with ``CUDA_VISIBLE_DEVICES`` (a YARN container,
a Databricks node), the address is looked up in that list.
"""
import logging
import os
from typing import NamedTuple, Optional

from covidspark.errors import UserError

logger = logging.getLogger(__name__)

# The list the worker process was started with: read once, before any framework
# (or this library) could change it.
_VISIBLE_AT_START = os.environ.get("CUDA_VISIBLE_DEVICES")


class DeviceAssignmentError(UserError):
    """Spark assigned a GPU that this worker process cannot see: a cluster setting to fix."""


class TaskDevice(NamedTuple):
    """Where one task runs its backbone.

    Attributes
    ----------
    kind : {"cuda", "cpu"}
    address : str or None
        Spark's address of the GPU (``TaskContext.resources()["gpu"]``).
    ordinal : int or None
        The GPU's index among the devices this process can see (``cuda:N``,
        TensorFlow's ``/GPU:N``).
    """

    kind: str
    address: Optional[str] = None
    ordinal: Optional[int] = None

    def __str__(self):
        return "cpu" if self.kind == "cpu" else f"cuda:{self.ordinal} (Spark gpu {self.address})"

    @property
    def on_gpu(self):
        return self.kind == "cuda"

    @property
    def tensorflow_name(self):
        """The device string for ``tf.device``."""
        return "/CPU:0" if self.kind == "cpu" else f"/GPU:{self.ordinal}"

    @property
    def torch_name(self):
        """The device string for ``torch.device``."""
        return "cpu" if self.kind == "cpu" else f"cuda:{self.ordinal}"


CPU = TaskDevice("cpu")


def device_for_resources(resources, visible=None):
    """The device for a task's Spark resources.

    Parameters
    ----------
    resources : dict or None
        ``TaskContext.resources()``: resource name -> ``ResourceInformation``.
    visible : str, optional
        ``CUDA_VISIBLE_DEVICES`` of the worker process (default: as it was when
        this module was imported).

    Returns
    -------
    TaskDevice
        :data:`CPU` when the task holds no ``gpu`` resource; else its first GPU
        (a task given several runs one model on the first and says so in the log).

    Raises
    ------
    DeviceAssignmentError
        The assigned address is hidden from this process by ``CUDA_VISIBLE_DEVICES``.
    """
    gpus = (resources or {}).get("gpu")
    if gpus is None or not gpus.addresses:
        return CPU
    addresses = list(gpus.addresses)
    if len(addresses) > 1:
        logger.info("Task holds GPUs %s; the backbone runs on the first", ",".join(addresses))
    address = addresses[0]
    visible = _VISIBLE_AT_START if visible is None else visible
    if visible is None or visible.strip() == "":
        try:
            return TaskDevice("cuda", address, int(address))
        except ValueError:
            raise DeviceAssignmentError(
                f"Spark assigned GPU address {address!r}, which is not a GPU index; the "
                f"executor's GPU discovery script must print nvidia-smi indexes") from None
    listed = [v.strip() for v in visible.split(",") if v.strip()]
    if address not in listed:
        raise DeviceAssignmentError(
            f"Spark assigned GPU {address!r} to this task, but this worker process was "
            f"started with CUDA_VISIBLE_DEVICES={visible!r}: the discovery script and the "
            f"node's GPU isolation disagree")
    return TaskDevice("cuda", address, listed.index(address))


def task_device():
    """The device of the running Spark task (:data:`CPU` outside a task)."""
    from pyspark import TaskContext

    context = TaskContext.get()
    if context is None:
        return CPU
    return device_for_resources(context.resources())


def default_device():
    """Inside a Spark task, :func:`task_device`; outside one (the REST service, a
    script), the first visible GPU of a GPU host, else the CPU."""
    from pyspark import TaskContext

    if TaskContext.get() is not None:
        return task_device()
    return TaskDevice("cuda", "0", 0) if host_has_nvidia_gpu() else CPU


def host_has_nvidia_gpu():
    """Whether an NVIDIA GPU may be usable here, known without importing a framework.

    False when the driver exposes no GPU (``/proc/driver/nvidia/gpus`` empty or
    absent and no ``/dev/nvidia0``) or ``CUDA_VISIBLE_DEVICES`` hides them all.
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    proc = "/proc/driver/nvidia/gpus"
    return (os.path.isdir(proc) and bool(os.listdir(proc))) or os.path.exists("/dev/nvidia0")
