import dataclasses
import socket

import h5py
import numpy as np
import pytest

from covidspark.models.registry import BACKBONES, build_backbone, get_backbone
from covidspark.models.weights import WeightsUnavailableError, file_sha256, resolve_weights


def _h5_arrays(path):
    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: arrays.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
    return arrays


# Where keras.applications keeps each backbone's "notop" ImageNet file: the module and the
# name of its URL constant. The file name and hash sit in the get_file call that uses it.
KERAS_NO_TOP = {
    "InceptionV3": ("inception_v3", "WEIGHTS_PATH_NO_TOP"),
    "DenseNet121": ("densenet", "DENSENET121_WEIGHT_PATH_NO_TOP"),
    "VGG16": ("vgg16", "WEIGHTS_PATH_NO_TOP"),
    "VGG19": ("vgg19", "WEIGHTS_PATH_NO_TOP"),
    "Xception": ("xception", "WEIGHTS_PATH_NO_TOP"),
}


PRETRAINED = sorted(n for n in BACKBONES if n != "SmallCNN")


@pytest.mark.parametrize("name", PRETRAINED)
def test_registry_urls_and_hashes_equal_keras_applications(name):
    """Against Keras' own tables (they import offline), not against the registry itself."""
    import importlib
    import inspect
    import re

    spec = BACKBONES[name]
    if name == "ResNet50":
        resnet = importlib.import_module("keras.src.applications.resnet")
        assert spec.weights_url == resnet.BASE_WEIGHTS_PATH + spec.weights_file
        assert spec.weights_hash == resnet.WEIGHTS_HASHES["resnet50"][1]  # [1]: notop
        return
    module_name, constant = KERAS_NO_TOP[name]
    module = importlib.import_module(f"keras.src.applications.{module_name}")
    assert spec.weights_url == getattr(module, constant)
    call = re.search(r'get_file\(\s*"([^"]+)",\s*' + constant
                     + r',\s*cache_subdir="models",\s*file_hash="([0-9a-f]{32})"',
                     inspect.getsource(module))
    assert call is not None, f"no get_file({constant}) call in {module.__name__}"
    assert (spec.weights_file, spec.weights_hash) == call.groups()
    # The registry's constructor is the one keras.applications exports.
    assert callable(getattr(importlib.import_module(spec.keras_module), spec.constructor))


def test_registry_entries_are_consistent():
    assert {"ResNet50", "InceptionV3"} <= set(BACKBONES)
    for name in PRETRAINED:
        spec = BACKBONES[name]
        assert spec.name == name
        assert spec.input_size in (224, 299)
        assert spec.preprocessing in ("caffe", "tf", "torch")
        assert spec.weights_url.endswith("/" + spec.weights_file)
        assert "_notop" in spec.weights_file
        assert len(spec.weights_hash) == 32
    assert BACKBONES["ResNet50"].preprocessing == "caffe"
    assert BACKBONES["InceptionV3"].preprocessing == "tf"


def test_the_small_test_network_has_no_imagenet_weights_and_says_so():
    spec = BACKBONES["SmallCNN"]
    assert (spec.input_size, spec.feature_dim, spec.weights_url) == (96, 128, "")
    with pytest.raises(ValueError, match="SmallCNN has no ImageNet weights.*weights='random'"):
        resolve_weights("SmallCNN", "imagenet")


def test_unknown_model_lists_supported_names():
    with pytest.raises(ValueError, match="Supported: ResNet50, InceptionV3"):
        get_backbone("ResNet51")


def test_random_weights_are_seeded_and_reproducible(tmp_path):
    a = resolve_weights("ResNet50", "random", seed=0, cache_dir=str(tmp_path / "a"))
    b = resolve_weights("ResNet50", "random", seed=0, cache_dir=str(tmp_path / "b"))
    c = resolve_weights("ResNet50", "random", seed=1, cache_dir=str(tmp_path / "c"))
    assert not a.pretrained and "NOT pretrained" in a.description
    # Two generations of the same weights differ in bytes (HDF5 stores times) but
    # not in identity; other weights do.
    assert file_sha256(a.path) != file_sha256(b.path)
    assert a.weights_id == b.weights_id != c.weights_id
    wa, wb, wc = _h5_arrays(a.path), _h5_arrays(b.path), _h5_arrays(c.path)
    assert wa.keys() == wb.keys() and len(wa) > 100
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    assert any(not np.array_equal(wa[k], wc[k]) for k in wa if wa[k].size > 1)


def test_weights_identity_changes_with_any_tensor(tmp_path):
    import shutil

    from covidspark.models.weights import weights_sha256

    original = resolve_weights("ResNet50", "random", seed=0).path
    changed = tmp_path / "changed.weights.h5"
    shutil.copy(original, changed)
    assert weights_sha256(str(changed)) == weights_sha256(original)
    with h5py.File(changed, "r+") as f:
        names = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset)
                     else None)
        dataset = f[sorted(names)[-1]]
        values = dataset[()]
        values.flat[0] += 1e-3
        dataset[...] = values
    assert weights_sha256(str(changed)) != weights_sha256(original)


def test_local_weights_file(tmp_path):
    random = resolve_weights("ResNet50", "random", seed=0)
    local = resolve_weights("ResNet50", random.path)
    assert local.path == random.path
    assert local.sha256 == random.sha256 and local.weights_id == "sha256:" + local.sha256
    with pytest.raises(FileNotFoundError, match="Weights file not found"):
        resolve_weights("ResNet50", str(tmp_path / "missing.h5"))


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_imagenet_download_failure_says_what_to_do(monkeypatch, tmp_path):
    # Make the download fail inside the test, the same way with or without a network:
    # point the registry at a closed port on this machine and use an empty cache.
    spec = BACKBONES["ResNet50"]
    url = f"http://127.0.0.1:{_closed_port()}/keras-applications/resnet/{spec.weights_file}"
    monkeypatch.setitem(BACKBONES, "ResNet50", dataclasses.replace(spec, weights_url=url))
    with pytest.raises(WeightsUnavailableError) as error:
        resolve_weights("ResNet50", "imagenet", cache_dir=str(tmp_path))
    message = str(error.value)
    assert spec.weights_file in message
    assert url in message
    assert f"weights='/path/to/{spec.weights_file}'" in message
    assert "--weights" in message


def test_imagenet_path_verifies_keras_hash(monkeypatch, tmp_path):
    # A file already in the cache with the wrong content fails Keras' hash check and
    # is re-downloaded; with the download failing, the user gets the same clear error.
    spec = BACKBONES["InceptionV3"]
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / spec.weights_file).write_bytes(b"not the weights")
    url = f"http://127.0.0.1:{_closed_port()}/{spec.weights_file}"
    monkeypatch.setitem(BACKBONES, "InceptionV3", dataclasses.replace(spec, weights_url=url))
    with pytest.raises(WeightsUnavailableError, match=spec.weights_file):
        resolve_weights("InceptionV3", "imagenet", cache_dir=str(tmp_path))


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_builds_with_the_registered_shape(name):
    # weights=None: shape only (as Keras' applications_test does); no download.
    spec = BACKBONES[name]
    model = build_backbone(spec, weights_path=None, seed=0)
    assert model.input_shape == (None, spec.input_size, spec.input_size, 3)
    assert model.output_shape == (None, spec.feature_dim)
    assert model.get_layer(spec.last_conv_layer) is not None
