"""Engine and precision choices, GPU selection, and bf16 / OpenVINO against float32 Keras."""
import numpy as np
import pytest
from pyspark.resource import ResourceInformation

from covidspark.engines import (
    cpu_flags,
    gpu_visible_devices,
    resolve_engine,
    resolve_precision,
)
from covidspark.featurizer import DeepImageFeaturizer


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
    assert resolve_engine("auto", installed=True) == "openvino"
    assert resolve_engine("auto", on_gpu=True, installed=True) == "keras"
    assert resolve_engine("auto", installed=False) == "keras"
    assert resolve_engine("keras", installed=True) == "keras"
    with pytest.raises(ValueError, match="CPU workers"):
        resolve_engine("openvino", on_gpu=True, installed=True)
    with pytest.raises(ImportError, match=r"covidspark\[openvino\]"):
        resolve_engine("openvino", installed=False)
    with pytest.raises(ValueError, match="keras, openvino, auto"):
        resolve_engine("tensorrt")


def test_gpu_selection_from_spark_task_resources():
    assert gpu_visible_devices({"gpu": ResourceInformation("gpu", ["1", "3"])}) == "1,3"
    assert gpu_visible_devices({"gpu": ResourceInformation("gpu", [])}) is None
    assert gpu_visible_devices({}) is None and gpu_visible_devices(None) is None


def test_cpu_flags_parses_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16\nbogomips\t: 4890\n")
    assert cpu_flags(str(info)) == {"fpu", "avx2", "amx_bf16"}
    assert cpu_flags(str(tmp_path / "absent")) == set()


def _cosines(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("precision, engine", [
    ("bfloat16", "keras"),
    pytest.param("float32", "openvino", marks=pytest.mark.skipif(
        __import__("importlib").util.find_spec("openvino") is None, reason="openvino absent")),
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
    with pytest.raises(ValueError, match="keras, openvino, auto"):
        DeepImageFeaturizer(inputCol="c", modelName="ResNet50", engine="onnx")


@pytest.mark.skipif(__import__("importlib").util.find_spec("openvino") is None,
                    reason="openvino absent")
@pytest.mark.parametrize("model_name", ["DenseNet121", "VGG16", "VGG19", "Xception"])
def test_every_backbone_featurizes_and_persists_on_both_engines(spark, images_df, model_name,
                                                                tmp_path):
    # ResNet50 and InceptionV3 are compared with plain Keras in test_featurizer.py.
    from covidspark.models import BACKBONES

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
