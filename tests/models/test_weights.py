"""Weights files: what a fine-tuned backbone's file says it started from."""
import shutil

import h5py

from covidspark.models.weights import FINE_TUNED_FROM_ATTR, mark_fine_tuned, resolve_weights


def test_a_backbone_fine_tuned_from_random_weights_is_not_pretrained(tmp_path):
    random = resolve_weights("SmallCNN", "random", seed=0)
    plain = tmp_path / "plain.weights.h5"
    shutil.copy(random.path, plain)
    marked = tmp_path / "tuned.weights.h5"
    shutil.copy(random.path, marked)
    mark_fine_tuned(str(marked), vars(random))
    # An HDF5 attribute beside the tensors, read here with h5py itself.
    with h5py.File(marked, "r") as f:
        assert '"pretrained": false' in f.attrs[FINE_TUNED_FROM_ATTR]
    tuned = resolve_weights("SmallCNN", str(marked))
    assert not tuned.pretrained
    assert tuned.description == (f"file {marked}, fine-tuned from random (seed 0) - NOT "
                                 f"pretrained ImageNet weights")
    # Same tensors, same identity (the feature store's key); an unmarked file is taken
    # for pretrained weights, as before.
    untouched = resolve_weights("SmallCNN", str(plain))
    assert tuned.sha256 == untouched.sha256 == random.sha256
    assert untouched.pretrained and untouched.description == f"file {plain}"
    # Fine-tuned from pretrained weights: pretrained.
    again = tmp_path / "again.weights.h5"
    shutil.copy(plain, again)
    mark_fine_tuned(str(again), {"description": "imagenet (x.h5)", "pretrained": True})
    assert resolve_weights("SmallCNN", str(again)).pretrained
