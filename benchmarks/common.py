"""Helpers shared by the benchmark scripts (run as ``python benchmarks/<name>.py``)."""
import json


def emit_json(result, path=None, indent=None):
    """Print ``result`` as one JSON document and, when ``path`` is given, write it there too."""
    text = json.dumps(result, indent=indent)
    print(text)
    if path:
        with open(path, "w") as f:
            f.write(text + "\n")
