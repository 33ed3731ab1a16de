"""Helpers shared by the benchmark scripts (run as ``python benchmarks/<name>.py``)."""
import json


def emit_json(result, path=None, indent=None):
    """Print ``result`` as one JSON document and, when ``path`` is given, write it there too."""
    text = json.dumps(result, indent=indent)
    print(text)
    if path:
        with open(path, "w") as f:
            f.write(text + "\n")


def benchmark_device():
    """GPU 0 where PyTorch sees one, else the CPU, as a ``TaskDevice``.

    Not :func:`covidspark.models.devices.default_device`: that asks Spark first,
    and the GPU benchmarks run where there is no Spark.
    """
    import torch

    from covidspark.models.devices import CPU, TaskDevice

    return TaskDevice("cuda", "0", 0) if torch.cuda.is_available() else CPU
