"""The torch engine: the registry's Keras backbones on Keras 3's PyTorch backend.

The pytest process already runs Keras on TensorFlow (the plain-Keras
references), and a process holds one Keras backend, so the torch side runs in
its own process: a Python script here, a Spark session's Python workers there.
"""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import require_module
from covidspark.models.registry import BACKBONES

pytestmark = require_module("torch")

TORCH_FEATURES = """
import json, sys
import numpy as np
from covidspark.models.devices import CPU
from covidspark.models.engines import build_runner
from covidspark.models.keras_backend import KerasBackendConflictError, require_keras_backend
from covidspark.models.registry import get_backbone
from covidspark.models.weights import resolve_weights

inputs = np.load(sys.argv[1])
features = {}
for name in sys.argv[3].split(","):
    weights = resolve_weights(name, "random", seed=0)
    runner = build_runner(get_backbone(name), weights.path, weights.weights_id, "float32",
                          "torch", device=CPU)
    assert (runner.engine, runner.precision, runner.device) == ("torch", "float32", CPU)
    features[name] = runner(inputs[str(get_backbone(name).input_size)])
    # The same images as one grey uint8 channel (how the featurizer's worker feeds
    # this engine): three channels and preprocess_input are made by the engine.
    gray = inputs[str(get_backbone(name).input_size)][..., 0].astype(np.uint8)
    features["gray:" + name] = runner(gray)
try:
    require_keras_backend("tensorflow", engine="keras")
    refused = None
except KerasBackendConflictError as error:
    refused = str(error)
import keras, torch
np.savez(sys.argv[2], **features)
print(json.dumps({"backend": keras.backend.backend(), "refused": refused,
                  "torch": torch.__version__}))
"""


def _cosines(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _pillow_pixels(fixture_dir, size, n=2):
    """The first n fixture images, gray to RGB, resized by Pillow (the reference decode)."""
    import glob

    from PIL import Image

    paths = sorted(glob.glob(f"{fixture_dir}/*/*"))[:n]
    return np.stack([np.asarray(Image.open(p).convert("L").convert("RGB").resize(
        (size, size), Image.BOX), dtype=np.float32) for p in paths])


@pytest.mark.subprocess
def test_torch_features_equal_plain_keras_for_every_backbone(fixture_dir, tmp_path):
    import importlib

    import keras

    from covidspark.models.weights import resolve_weights

    names = list(BACKBONES)
    # Generated here (once per cache), so that the torch process only reads them.
    weights = {name: resolve_weights(name, "random", seed=0).path for name in names}
    inputs = {str(size): _pillow_pixels(fixture_dir, size)
              for size in {BACKBONES[n].input_size for n in names}}
    np.savez(tmp_path / "inputs.npz", **inputs)
    script = tmp_path / "torch_features.py"
    script.write_text(TORCH_FEATURES)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "inputs.npz"),
                           str(tmp_path / "torch.npz"), ",".join(names)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["backend"] == "torch"
    # That process, holding torch-backed Keras, refuses the TensorFlow engine.
    assert "already runs Keras on the 'torch' backend" in report["refused"]
    torch_features = np.load(tmp_path / "torch.npz")
    for name in names:
        spec = BACKBONES[name]
        # Plain Keras on TensorFlow: the application, its own preprocess_input, same file.
        module = importlib.import_module(spec.keras_module)
        model = getattr(module, spec.constructor)(
            include_top=False, weights=None, pooling="avg",
            input_shape=(spec.input_size, spec.input_size, 3))
        model.load_weights(weights[name])
        expected = np.asarray(model(module.preprocess_input(
            inputs[str(spec.input_size)].copy()), training=False))
        got = torch_features[name]
        assert got.shape == expected.shape == (2, spec.feature_dim), name
        assert _cosines(got, expected).min() >= 0.9999, (name, _cosines(got, expected))
        # Every preprocessing mode (caffe, tf, torch) takes grey uint8 batches exactly.
        np.testing.assert_allclose(torch_features["gray:" + name], got, rtol=1e-5, atol=1e-5)
        keras.backend.clear_session()


def test_a_process_on_tensorflow_keras_refuses_the_torch_engine():
    from covidspark.models.keras_backend import KerasBackendConflictError, require_keras_backend
    from covidspark.models.torch_engine import TorchBackboneRunner

    import keras  # noqa: F401 - this process's Keras, on TensorFlow

    with pytest.raises(KerasBackendConflictError, match="already runs Keras on the "
                                                        "'tensorflow' backend.*'torch'"):
        require_keras_backend("torch", engine="torch")
    with pytest.raises(KerasBackendConflictError, match="spark.python.worker.reuse=false"):
        TorchBackboneRunner(BACKBONES["ResNet50"], "unused.h5")


SPARK_TORCH = """
import json, sys
from covidspark import DeepImageFeaturizer, read_images
from covidspark.runtime.session import get_spark
spark = get_spark("torch-engine", master="local[1]")
featurizer = DeepImageFeaturizer(inputCol="content", modelName="ResNet50", weights="random",
                                 engine="torch", batchSize=4)
rows = featurizer.transform(read_images(spark, sys.argv[1])).select("path", "features").collect()
json.dump({r.path: r.features.toArray().tolist() for r in rows}, open(sys.argv[2], "w"))
"""


@pytest.mark.subprocess
def test_featurizer_on_the_torch_engine_equals_the_tensorflow_engine(resnet_features, fixture_dir,
                                                                     tmp_path):
    script = tmp_path / "spark_torch.py"
    script.write_text(SPARK_TORCH)
    done = subprocess.run([sys.executable, str(script), fixture_dir, str(tmp_path / "out.json")],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    with open(tmp_path / "out.json") as f:
        torch_rows = json.load(f)
    tensorflow_rows, _ = resnet_features
    assert torch_rows.keys() == tensorflow_rows.keys() and len(torch_rows) == 18
    paths = sorted(torch_rows)
    got = np.array([torch_rows[p] for p in paths])
    expected = np.array([tensorflow_rows[p] for p in paths])
    assert _cosines(got, expected).min() >= 0.9999


SEEDED_WEIGHTS = """
import os, sys
import numpy as np
os.environ["KERAS_BACKEND"] = "torch"
import keras
from covidspark.models.registry import build_backbone, get_backbone

spec = get_backbone("SmallCNN")


def weights(model):
    head = keras.layers.Dense(3)  # the fine-tuning head draws its seed from the same state
    head.build((None, 8))
    # Unseeded keras.random (dropout) draws from Keras' global SeedGenerator.
    unseeded = keras.random.uniform((4,))
    return np.concatenate([keras.ops.convert_to_numpy(w).ravel()
                           for w in [*model.weights, head.kernel, unseeded]])


keras.random.uniform((2,))  # a draw before seeding: the global generator exists, advanced
ours = weights(build_backbone(spec, seed=5))
imported = "tensorflow" in sys.modules
keras.utils.set_random_seed(5)  # Keras' own seeding (it imports TensorFlow)
theirs = weights(build_backbone(spec))
np.savez(sys.argv[1], ours=ours, theirs=theirs)
print("TENSORFLOW", imported, "tensorflow" in sys.modules)
"""


@pytest.mark.subprocess
def test_seeded_build_on_torch_equals_keras_own_seeding_without_importing_tensorflow(tmp_path):
    script = tmp_path / "seeded.py"
    script.write_text(SEEDED_WEIGHTS)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "weights.npz")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    # Not imported by our seeding; imported by Keras' own (so the check can fail).
    assert done.stdout.split("TENSORFLOW ", 1)[1].split() == ["False", "True"]
    weights = np.load(tmp_path / "weights.npz")
    np.testing.assert_array_equal(weights["ours"], weights["theirs"])
