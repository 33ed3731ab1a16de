"""A model saved by covidspark 0.1 (flat layout) loads and predicts the same after the move.

``fixtures/legacy_model_v0_1`` was saved by 0.1.0's ``covidspark train`` (see
``fixtures/make_legacy_model.py``): its featurizer stage records the class path
``covidspark.featurizer.DeepImageFeaturizer``. Backbone weights are seeded random
(not pretrained); the folder holds params and MLlib stages only.
"""
import glob
import json
import os
import sys
import warnings

import numpy as np
import pytest

from conftest import REPO_ROOT

FIXTURE = os.path.join(REPO_ROOT, "tests", "fixtures", "legacy_model_v0_1")
EXPECTED = os.path.join(REPO_ROOT, "tests", "fixtures", "legacy_model_v0_1.expected.json")


@pytest.fixture(scope="module")
def expected():
    with open(EXPECTED) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def legacy_images(tmp_path_factory, expected):
    from covidspark.data.synthetic import synthetic

    params = expected["synthetic"]
    return synthetic(str(tmp_path_factory.mktemp("legacy")), n_per_class=params["n_per_class"],
                     seed=params["seed"])


def test_the_fixture_records_the_old_class_path():
    metadata = glob.glob(os.path.join(FIXTURE, "stages", "0_*", "metadata", "part-*"))
    with open(metadata[0]) as f:
        assert json.loads(f.readline())["class"] == "covidspark.featurizer.DeepImageFeaturizer"


def test_a_model_saved_by_0_1_predicts_the_same_in_spark(spark, legacy_images, expected,
                                                         monkeypatch):
    from pyspark.ml import PipelineModel
    from pyspark.ml.functions import vector_to_array

    from covidspark.data.reading import read_images
    from covidspark.ml.featurizer import DeepImageFeaturizer

    # The alias warns when first imported; another test in this process may have
    # imported it already (pytest-xdist runs several files per process).
    monkeypatch.delitem(sys.modules, "covidspark.featurizer", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DeprecationWarning)
        model = PipelineModel.load(FIXTURE)
    # It loads as today's class, and the old path is flagged.
    assert type(model.stages[0]) is DeepImageFeaturizer
    assert any("covidspark.featurizer moved" in str(w.message) for w in caught)
    rows = (model.transform(read_images(spark, legacy_images))
            .select("path", "predicted_label", vector_to_array("probability").alias("p"))
            .collect())
    got = {os.path.relpath(r.path.replace("file:", ""), legacy_images): r for r in rows}
    assert got.keys() == expected["predictions"].keys()
    for path, want in expected["predictions"].items():
        assert got[path].predicted_label == want["predicted_label"], path
        np.testing.assert_allclose(got[path].p, want["probability"], atol=1e-5, err_msg=path)


def test_a_model_saved_by_0_1_is_served_the_same_without_spark(legacy_images, expected):
    from covidspark.serving.predictor import Predictor

    predictor = Predictor(FIXTURE)
    for path, want in expected["predictions"].items():
        with open(os.path.join(legacy_images, path), "rb") as f:
            result = predictor.predict(f.read())
        assert result["label"] == want["predicted_label"], path
        np.testing.assert_allclose([result["probabilities"][k] for k in predictor.labels],
                                   want["probability"], atol=1e-4, err_msg=path)


def test_a_resaved_model_records_the_new_class_path(spark, tmp_path):
    from pyspark.ml import PipelineModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = PipelineModel.load(FIXTURE)
    model.write().overwrite().save(str(tmp_path / "resaved"))
    metadata = glob.glob(str(tmp_path / "resaved" / "stages" / "0_*" / "metadata" / "part-*"))
    with open(metadata[0]) as f:
        assert json.loads(f.readline())["class"] == "covidspark.ml.featurizer.DeepImageFeaturizer"
