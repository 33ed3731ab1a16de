"""Train and compare as the jobs run them (in this process, on the suite's Spark session)."""
import io
import json
import os
import shutil

import numpy as np
import pytest

from covidspark.cli import build_parser
from covidspark.runtime.filesystem import local_path


def _run(argv):
    """Run a command as the CLI does; its result as plain data (the run's dict)."""
    import dataclasses

    args = build_parser().parse_args(argv)
    result = args.func(args)
    for field in ("run", "comparison"):
        if hasattr(result, field):
            return getattr(result, field)
    return dataclasses.asdict(result)


def test_tuned_weighted_thresholded_run_featurizes_once(fixture_dir, tmp_path):
    from pyspark.ml import PipelineModel

    out = tmp_path / "run"
    run = _run(["train", "--classifier", "dt", "--data", fixture_dir, "--task", "binary",
                "--weights", "random", "--tune", "cv", "--folds", "3", "--class-weight",
                "balanced", "--threshold", "0.3", "--bootstrap", "100", "--out", str(out)])
    # 6 grid settings x 3 folds + the refit, on features computed once per image.
    assert run["images_featurized"] == run["counts"]["total"] == 12
    # Where the network ran: every image on Keras, float32, the CPU of this machine.
    import socket

    assert run["ran_on"] == {f"keras float32 cpu @ {socket.gethostname()}": 12}
    assert len(run["tuning"]["results"]) == 6 and run["tuning"]["folds"] == 3
    assert run["tuning"]["best"] in [r["params"] for r in run["tuning"]["results"]]
    assert run["class_weight"]["weights"] == {"covid": 1.0, "normal": 1.0}
    assert run["threshold"]["threshold"] == 0.3
    assert [r["threshold"] for r in run["threshold"]["test_table"]].count(0.3) == 1
    assert run["baseline"]["name"].startswith("baseline") and "verdict" in run["baseline"]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["schema_version"] == 3 and saved["images_featurized"] == 12
    # Where the job's time went, step by step: no step longer than the whole.
    timing = saved["timing_s"]
    assert {"read, check and deduplicate", "featurize", "fit and evaluate",
            "save the model", "total"} <= set(timing)
    # Each figure is rounded to 0.01 s: the parts may exceed the whole by that much each.
    parts = [v for k, v in timing.items() if k != "total"]
    assert sum(parts) <= timing["total"] + 0.005 * (len(parts) + 1)
    # The baseline ran beside the fit, within that step's time.
    assert 0 < saved["baseline"]["seconds"] <= timing["fit and evaluate"]
    assert {"roc.png", "pr.png", "confusion_by_row.png"} <= set(os.listdir(out))
    report = (out / "report.md").read_text()
    for heading in ("## Results", "baseline: LR on 32x32 pixels", "## Decision threshold",
                    "## Model selection", "normalised by column", "class weights"):
        assert heading in report
    # The saved model predicts with the chosen threshold and the tuned tree.
    model = PipelineModel.load(str(out / "model"))
    tree = model.stages[2]
    assert tree.getThresholds() == [0.7, 0.3]
    assert tree.getWeightCol() == "class_weight"
    assert tree.getMaxDepth() == run["tuning"]["best"]["maxDepth"]


def test_train_on_one_source_test_on_another(fixture_dir, tmp_path):
    from covidspark.data.synthetic import synthetic

    other = synthetic(str(tmp_path / "site-b"), n_per_class=3, seed=7)
    copied = sorted(os.listdir(os.path.join(fixture_dir, "covid")))[0]
    shutil.copy(os.path.join(fixture_dir, "covid", copied),
                os.path.join(other, "covid", "copy-" + copied))
    site_a = os.path.basename(fixture_dir.rstrip("/"))
    run = _run(["train", "--data", fixture_dir, "--data", other, "--train-source", site_a,
                "--test-source", "site-b", "--weights", "random", "--threshold", "f1",
                "--validation-fraction", "0.34", "--bootstrap", "50", "--no-baseline",
                "--out", str(tmp_path / "x")])
    # Train and validation come from site A (12 binary images); test is site B minus the copy
    # of a training image, which is listed rather than silently dropped.
    assert run["counts"]["train"] + run["counts"]["validation"] == 12
    assert run["counts"]["validation"] >= 2
    assert run["counts"]["test"] == 6
    assert [p.rsplit("/", 1)[-1] for p in run["split"]["cross_source_duplicates"]] == \
        ["copy-" + copied]
    assert "train on source" in run["split"]["method"]
    assert 0 < run["threshold"]["threshold"] < 1 and run["threshold"]["warning"]


def test_compare_grid_from_one_feature_store(fixture_dir, tmp_path):
    out = tmp_path / "cmp"
    comparison = _run(["compare", "--data", fixture_dir, "--weights", "random",
                       "--models", "ResNet50,InceptionV3", "--classifiers", "dt",
                       "--tasks", "binary,3class",
                       "--features", str(tmp_path / "store"), "--bootstrap", "50",
                       "--out", str(out)])
    # Each backbone featurized each image exactly once, for all tasks and classifiers.
    assert comparison["featurized"]["ResNet50"]["images"] == 18
    assert comparison["featurized"]["InceptionV3"]["images"] == 18
    for task, n_test in (("binary", 2), ("3class", 3)):
        runs = comparison["tasks"][task]["runs"]
        assert [(r["model"], r["classifier"]) for r in runs] == [
            ("ResNet50", "dt"), ("InceptionV3", "dt")]
        assert all(r["metrics"]["n"] == n_test for r in runs)
        assert comparison["tasks"][task]["baseline"]["metrics"]["n"] == n_test
        for r in runs:
            assert (out / r["report"]).exists()
            assert (out / task / f"{r['model']}-{r['classifier']}" / "model").is_dir()
    table = (out / "comparison.md").read_text()
    assert "| ResNet50 + dt |" in table and "| InceptionV3 + dt |" in table
    assert table.count("baseline: LR on 32x32 pixels") == 2
    saved = json.loads((out / "comparison.json").read_text())
    assert saved["schema_version"] == 3
    # Per-class numbers in the comparison are the same as in each run's own report.
    run = json.loads((out / "3class" / "InceptionV3-dt" / "metrics.json").read_text())
    got = next(r for r in saved["tasks"]["3class"]["runs"] if r["model"] == "InceptionV3"
               and r["classifier"] == "dt")
    assert np.isclose(got["metrics"]["accuracy"], run["metrics"]["accuracy"])


def test_threshold_needs_the_binary_task():
    with pytest.raises(ValueError, match="binary task"):
        _run(["train", "--task", "3class", "--threshold", "f1", "--weights", "random"])


def test_predict_and_evaluate_with_a_saved_model(fixture_dir, trained_model, tmp_path):
    import pandas as pd
    from PIL import Image

    from covidspark.cli import main
    from covidspark.data.reading import IngestError

    model = trained_model  # covidspark train ... --threshold 0.4
    images = tmp_path / "incoming"
    shutil.copytree(fixture_dir, images / "batch-1")
    (images / "batch-1" / "covid" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(IngestError, match="broken.png"):
        _run(["predict", "--model-dir", model, "--images", str(images), "--out",
              str(tmp_path / "p.csv")])
    result = _run(["predict", "--model-dir", model, "--images", str(images), "--lenient",
                   "--out", str(tmp_path / "p.csv"), "--heatmaps", str(tmp_path / "heat")])
    assert result["images"] == 18 and [p.rsplit("/", 1)[-1] for p, _ in result["rejected"]] == \
        ["broken.png"]
    predicted = pd.read_csv(tmp_path / "p.csv")
    assert len(predicted) == 18 and set(predicted.predicted_label) <= {"normal", "covid"}
    # One overlay per image, as large as the X-ray (the fixture's sides are <= 1024).
    # Written by the driver through the filesystem layer, at the URIs the table gives.
    assert all(h.startswith(f"file:{tmp_path}/heat/") for h in predicted.heatmap)
    assert sorted(os.listdir(tmp_path / "heat")) == sorted(os.path.basename(h)
                                                           for h in predicted.heatmap)
    for image, heatmap in zip(predicted.path, predicted.heatmap):
        assert Image.open(local_path(heatmap)).size == Image.open(local_path(image)).size
    np.testing.assert_allclose(predicted.p_normal + predicted.p_covid, 1.0, atol=1e-9)
    # The saved threshold is used, and reported: COVID exactly when p_covid > 0.4.
    assert ((predicted.p_covid > 0.4) == (predicted.predicted_label == "covid")).all()
    assert (predicted.threshold == 0.4).all()
    # With heat maps each image goes through the backbone once (prediction and map
    # together): the same predictions as the Spark pipeline's without heat maps.
    _run(["predict", "--model-dir", model, "--images", str(images), "--lenient",
          "--out", str(tmp_path / "plain.csv")])
    plain = pd.read_csv(tmp_path / "plain.csv").set_index("path").loc[predicted.path]
    assert list(plain.predicted_label) == list(predicted.predicted_label)
    np.testing.assert_allclose(plain.p_covid, predicted.p_covid, atol=1e-5)
    # And the same overlay as the single-image explainer draws (the service's).
    from covidspark.serving.explain import explain, overlay_png
    from covidspark.serving.predictor import Predictor

    local = Predictor(model)
    first = predicted.iloc[0]
    with open(local_path(first.path), "rb") as f:
        _, heat, image = explain(local, f.read())
    want = np.asarray(Image.open(io.BytesIO(overlay_png(image, heat))), dtype=float)
    got = np.asarray(Image.open(local_path(first.heatmap)), dtype=float)
    assert np.abs(got - want).max() <= 2, np.abs(got - want).max()

    run = _run(["evaluate", "--model-dir", model, "--data", fixture_dir, "--bootstrap", "50",
                "--out", str(tmp_path / "eval")])
    assert run["task"] == "binary" and run["metrics"]["n"] == 12
    assert run["data"]["excluded"] == {"pneumonia": 6}
    truth = predicted.path.str.extract(r"/(covid|normal|pneumonia)/")[0]
    binary = truth != "pneumonia"
    accuracy = (predicted.predicted_label[binary] == truth[binary]).mean()
    assert run["metrics"]["accuracy"] == pytest.approx(accuracy)
    assert (tmp_path / "eval" / "report.md").exists()
    assert main(["evaluate", "--model-dir", str(tmp_path / "nothing"), "--out", str(tmp_path)]) == 2
