"""Engine and precision choices, GPU selection, and bf16 / OpenVINO against float32 Keras."""
import os

import numpy as np
import pytest
from pyspark.resource import ResourceInformation

from conftest import require_module
from covidspark.models.devices import CPU, DeviceAssignmentError, device_for_resources
from covidspark.models.engines import cpu_flags, resolve_engine, resolve_precision
from covidspark.ml.featurizer import DeepImageFeaturizer


@pytest.mark.parametrize("precision, flags, gpu, expected", [
    ("auto", {"avx2", "fma"}, None, "float32"),              # AMD EPYC here: no bf16 units
    ("auto", {"avx512f", "avx512_bf16"}, None, "bfloat16"),  # Cooper Lake / Zen 4
    ("auto", {"amx_bf16", "amx_tile"}, None, "bfloat16"),    # Sapphire Rapids
    ("auto", set(), (8, 0), "bfloat16"),                     # A100 and newer
    ("auto", set(), (7, 5), "float32"),                      # T4
    ("float32", {"amx_bf16"}, None, "float32"),              # explicit wins
    ("bfloat16", set(), None, "bfloat16"),
])
def test_resolve_precision(precision, flags, gpu, expected):
    assert resolve_precision(precision, flags=flags, gpu_capability=gpu) == expected


def test_resolve_engine():
    assert resolve_engine("auto", installed=True, torch_available=True) == "openvino"
    assert resolve_engine("auto", on_gpu=True, installed=True, torch_available=True) == "torch"
    assert resolve_engine("auto", on_gpu=True, installed=True, torch_available=False) == "keras"
    assert resolve_engine("auto", installed=False, torch_available=True) == "keras"
    assert resolve_engine("keras", installed=True) == "keras"
    assert resolve_engine("torch", on_gpu=True, torch_available=True) == "torch"
    with pytest.raises(ImportError, match=r"covidspark\[torch\]"):
        resolve_engine("torch", torch_available=False)
    with pytest.raises(ValueError, match="CPU workers"):
        resolve_engine("openvino", on_gpu=True, installed=True)
    with pytest.raises(ImportError, match=r"covidspark\[openvino\]"):
        resolve_engine("openvino", installed=False)
    with pytest.raises(ValueError, match="keras, openvino, torch, auto"):
        resolve_engine("tensorrt")


def test_device_from_spark_task_resources():
    gpus = {"gpu": ResourceInformation("gpu", ["3", "1"])}
    # No CUDA_VISIBLE_DEVICES in the worker: Spark's address is the CUDA index.
    device = device_for_resources(gpus, visible="")
    assert (device.kind, device.address, device.ordinal) == ("cuda", "3", 3)
    assert (device.torch_name, device.tensorflow_name) == ("cuda:3", "/GPU:3")
    # A worker started with CUDA_VISIBLE_DEVICES=1,3 numbers GPU 3 as its second device.
    assert device_for_resources(gpus, visible="1,3").ordinal == 1
    with pytest.raises(DeviceAssignmentError, match="CUDA_VISIBLE_DEVICES='0,1'"):
        device_for_resources(gpus, visible="0,1")
    with pytest.raises(DeviceAssignmentError, match="not a GPU index"):
        device_for_resources({"gpu": ResourceInformation("gpu", ["GPU-5f2a"])}, visible="")
    # No GPU resources: the CPU, also on a GPU host.
    assert device_for_resources({"gpu": ResourceInformation("gpu", [])}) == CPU
    assert device_for_resources({}) == CPU and device_for_resources(None) == CPU
    assert CPU.tensorflow_name == "/CPU:0" and not CPU.on_gpu


def test_cpu_flags_parses_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16\nbogomips\t: 4890\n")
    assert cpu_flags(str(info)) == {"fpu", "avx2", "amx_bf16"}
    assert cpu_flags(str(tmp_path / "absent")) == set()


def _cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.same_spark_path  # ResNet50 on Keras float32 takes it in test_featurizer.py
@pytest.mark.parametrize("precision, engine", [
    ("bfloat16", "keras"),
    pytest.param("float32", "openvino", marks=require_module("openvino")),
])
def test_other_engines_match_float32_keras(images_df, resnet_features, precision, engine):
    features, _ = resnet_features
    featurizer = DeepImageFeaturizer(inputCol="content", modelName="ResNet50", weights="random",
                                     precision=precision, engine=engine, batchSize=4)
    rows = featurizer.transform(images_df.limit(4)).select("path", "features").collect()
    got = np.stack([r.features.toArray() for r in rows])
    expected = np.stack([features[r.path] for r in rows])
    assert got.dtype == np.float64 and got.shape == (4, 2048)
    assert _cosines(got, expected).min() >= 0.999


def test_bad_precision_and_engine_are_named():
    with pytest.raises(ValueError, match="float32, bfloat16, auto"):
        DeepImageFeaturizer(inputCol="c", modelName="ResNet50", precision="fp8")
    with pytest.raises(ValueError, match="keras, openvino, torch, auto"):
        DeepImageFeaturizer(inputCol="c", modelName="ResNet50", engine="onnx")


@require_module("openvino")
# One backbone is enough to check the Spark path on another Spark version (CI's 3.5 pass).
@pytest.mark.parametrize("model_name", [
    pytest.param("DenseNet121", marks=pytest.mark.same_spark_path), "VGG16",
    pytest.param("VGG19", marks=pytest.mark.same_spark_path),
    pytest.param("Xception", marks=pytest.mark.same_spark_path)])
def test_every_backbone_featurizes_and_persists_on_both_engines(spark, images_df, model_name,
                                                                tmp_path):
    # ResNet50 and InceptionV3 are compared with plain Keras in test_featurizer.py.
    from covidspark.models.registry import BACKBONES

    sample = images_df.limit(2).cache()
    vectors = {}
    for engine in ("keras", "openvino"):
        featurizer = DeepImageFeaturizer(inputCol="content", modelName=model_name,
                                         weights="random", engine=engine, batchSize=2)
        featurizer.save(str(tmp_path / engine))
        loaded = DeepImageFeaturizer.load(str(tmp_path / engine))
        rows = loaded.transform(sample).select("path", "features").orderBy("path").collect()
        vectors[engine] = np.stack([r.features.toArray() for r in rows])
        assert vectors[engine].shape == (2, BACKBONES[model_name].feature_dim)
        assert np.isfinite(vectors[engine]).all()
    assert _cosines(vectors["keras"], vectors["openvino"]).min() >= 0.999


@pytest.mark.parametrize("model_name", ["ResNet50", "InceptionV3", "DenseNet121", "VGG16",
                                        "VGG19", "Xception"])
def test_numpy_preprocessing_equals_keras(model_name):
    from covidspark.models.registry import BACKBONES, numpy_preprocess, preprocess_function

    spec = BACKBONES[model_name]
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype(np.float32)
    expected = np.asarray(preprocess_function(spec)(x.copy()))
    np.testing.assert_allclose(numpy_preprocess(spec)(x), expected, rtol=1e-5, atol=1e-4)


@require_module("openvino")
@pytest.mark.subprocess
def test_openvino_model_is_cached_on_disk_and_loads_without_tensorflow(tmp_path):
    import subprocess
    import sys

    from covidspark.models.engines import OpenVinoBackboneRunner
    from covidspark.models.registry import BACKBONES
    from covidspark.models.weights import resolve_weights

    spec = BACKBONES["ResNet50"]
    weights = resolve_weights("ResNet50", "random", seed=0)
    pixels = np.random.default_rng(1).uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    first = OpenVinoBackboneRunner(spec, weights.path, weights_id=weights.weights_id,
                                   cache_dir=str(tmp_path))
    assert not first.from_cache and first.ir_path.startswith(str(tmp_path))
    assert sorted(os.listdir(tmp_path / "openvino")) == sorted(
        [os.path.basename(first.ir_path), os.path.basename(first.ir_path)[:-4] + ".bin"])
    expected = first(pixels)
    np.save(tmp_path / "pixels.npy", pixels)
    # A fresh worker process: the cached IR, numpy preprocessing, no TensorFlow import.
    code = (
        "import sys, numpy as np\n"
        "from covidspark.models.engines import OpenVinoBackboneRunner\n"
        "from covidspark.models import BACKBONES\n"
        f"r = OpenVinoBackboneRunner(BACKBONES['ResNet50'], '/nonexistent.h5', "
        f"weights_id={weights.weights_id!r}, cache_dir={str(tmp_path)!r})\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, r(np.load({str(tmp_path / 'pixels.npy')!r})))\n"
        "print(r.from_cache, 'tensorflow' in sys.modules, 'keras' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "False", "False"]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, rtol=1e-4, atol=1e-4)
