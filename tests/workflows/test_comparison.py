"""Compare as the job runs it: a grid of backbones, classifiers and tasks from one
feature store (in this process, on the suite's Spark session)."""
import json

import numpy as np
import pandas as pd
import pytest

from conftest import run_command

LABELS = {"binary": ("normal", "covid"), "3class": ("normal", "covid", "pneumonia")}


# On Spark 3.5 its Spark path (features from the store, several fits on them) is
# tests/ml/test_feature_store.py's featurize-then-train.
@pytest.mark.spark35_covered
def test_compare_grid_from_one_feature_store(fixture_dir, tmp_path):
    # Two backbones of other input sizes and preprocessing (ResNet50: 224 px, caffe;
    # SmallCNN: 96 px, tf). Not InceptionV3, whose features test_featurizer.py checks
    # against Keras: this test runs three times in CI (classic, Spark 3.5, Connect),
    # and with InceptionV3 it took 92 s here against 79 s.
    out = tmp_path / "cmp"
    comparison = run_command(["compare", "--data", fixture_dir, "--weights", "random",
                       "--models", "ResNet50,SmallCNN", "--classifiers", "dt",
                       "--tasks", "binary,3class",
                       "--features", str(tmp_path / "store"), "--bootstrap", "50",
                       "--out", str(out)])
    # Each backbone featurized each image exactly once, for all tasks and classifiers.
    assert comparison["featurized"]["ResNet50"]["images"] == 18
    assert comparison["featurized"]["SmallCNN"]["images"] == 18
    for task, n_test in (("binary", 2), ("3class", 3)):
        runs = comparison["tasks"][task]["runs"]
        assert [(r["model"], r["classifier"]) for r in runs] == [
            ("ResNet50", "dt"), ("SmallCNN", "dt")]
        assert all(r["metrics"]["n"] == n_test for r in runs)
        assert comparison["tasks"][task]["baseline"]["metrics"]["n"] == n_test
        for r in runs:
            assert (out / r["report"]).exists()
            assert (out / task / f"{r['model']}-{r['classifier']}" / "model").is_dir()
            # The images each model was fitted on, for evaluate: the task's, less its test side.
            seen = pd.read_parquet(out / task / f"{r['model']}-{r['classifier']}" / "model"
                                   / "training_images")
            assert len(seen) == 18 - len(set(LABELS[task]) ^ set(LABELS["3class"])) * 6 - n_test
            assert set(seen["label"]) == set(LABELS[task])
            assert seen["image_id"].is_unique and seen["phash64"].notna().all()
        # Each run beside the most accurate on the same test images (the first of a tie).
        accuracy = {f"{r['model']} + {r['classifier']}": r["metrics"]["accuracy"] for r in runs}
        best = comparison["tasks"][task]["best"]
        assert best == max(accuracy, key=lambda name: accuracy[name])
        for name, r in zip(accuracy, runs):
            if name == best:
                assert r["best_minus_this"] is None
            else:
                assert r["best_minus_this"]["difference"] == pytest.approx(
                    accuracy[best] - accuracy[name])
    table = (out / "comparison.md").read_text()
    assert "| ResNet50 + dt |" in table and "| SmallCNN + dt |" in table
    assert table.count("baseline: LR on 32x32 pixels") == 2
    assert table.count("best's accuracy minus this (paired)") == 2
    saved = json.loads((out / "comparison.json").read_text())
    assert saved["schema_version"] == 3
    # Per-class numbers in the comparison are the same as in each run's own report.
    run = json.loads((out / "3class" / "SmallCNN-dt" / "metrics.json").read_text())
    got = next(r for r in saved["tasks"]["3class"]["runs"] if r["model"] == "SmallCNN"
               and r["classifier"] == "dt")
    assert np.isclose(got["metrics"]["accuracy"], run["metrics"]["accuracy"])
