"""What a Python worker pays before its first batch: Keras vs OpenVINO, converted vs cached.

Each measurement runs in a fresh Python process (as a new Spark Python worker
would) and times, from interpreter start, everything up to the first batch of
features: imports, building the Keras model and loading the weights, the
OpenVINO conversion or the read of the IR cached on local disk, compilation,
and one forward pass of ``--batch`` images. Seeded random weights (not
pretrained: nothing can be downloaded here). Prints one JSON object.

    python benchmarks/cold_start.py --models ResNet50,InceptionV3
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

from common import emit_json

WORKER = r"""
import os, resource, sys, time
t0 = time.time()
import numpy as np
from covidspark.models.engines import KerasBackboneRunner, OpenVinoBackboneRunner
from covidspark.models.registry import BACKBONES
spec = BACKBONES[sys.argv[1]]
engine, weights_path, weights_id, cache_dir, batch = sys.argv[2:7]
if engine == "keras":
    runner = KerasBackboneRunner(spec, weights_path)
else:
    runner = OpenVinoBackboneRunner(spec, weights_path, weights_id=weights_id, cache_dir=cache_dir)
ready = time.time() - t0
pixels = np.random.default_rng(0).uniform(0, 255, (int(batch), spec.input_size, spec.input_size, 3))
runner(pixels.astype(np.float32))
print(ready, time.time() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      "tensorflow" in sys.modules)
"""


def fresh_worker(model, engine, weights, cache_dir, batch):
    started = time.time()
    out = subprocess.run([sys.executable, "-c", WORKER, model, engine, weights.path,
                          weights.weights_id, cache_dir, str(batch)],
                         capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if out.returncode:
        sys.exit(out.stderr[-3000:])
    ready, first_batch, rss_mb, tensorflow = out.stdout.split()[-4:]
    return {"model_ready_s": round(float(ready), 2), "first_batch_s": round(float(first_batch), 2),
            "process_s": round(time.time() - started, 2), "peak_rss_mb": round(float(rss_mb)),
            "imported_tensorflow": tensorflow == "True"}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="ResNet50,InceptionV3")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)
    from covidspark.models.weights import resolve_weights

    result = {"weights": "random (seeded), NOT pretrained", "batch": args.batch}
    for model in args.models.split(","):
        weights = resolve_weights(model, "random", seed=0)
        with tempfile.TemporaryDirectory() as cache_dir:
            runs = {"keras": fresh_worker(model, "keras", weights, cache_dir, args.batch),
                    "openvino_convert": fresh_worker(model, "openvino", weights, cache_dir,
                                                     args.batch),
                    "openvino_cached_ir": fresh_worker(model, "openvino", weights, cache_dir,
                                                       args.batch)}
        runs["cached_ir_speedup_vs_keras"] = round(
            runs["keras"]["first_batch_s"] / runs["openvino_cached_ir"]["first_batch_s"], 2)
        result[model] = runs
    emit_json(result, args.json, indent=2)


if __name__ == "__main__":
    main()
