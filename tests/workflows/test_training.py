"""Train as the job runs it (in this process, on the suite's Spark session)."""
import json
import os
import shutil
import threading

import pytest

from conftest import persistent_rdds, run_command
from covidspark.errors import InputError


def test_tuned_weighted_thresholded_run_featurizes_once(fixture_dir, tmp_path):
    from pyspark.ml import PipelineModel

    out = tmp_path / "run"
    run = run_command(["train", "--classifier", "dt", "--data", fixture_dir, "--task", "binary",
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
    # Model and baseline scored on the same test images, paired; the verdict follows
    # the difference's interval.
    paired = run["baseline"]["difference"]
    assert paired["difference"] == pytest.approx(
        run["metrics"]["accuracy"] - run["baseline"]["metrics"]["accuracy"])
    assert paired["n_resamples"] == 100 and paired["units"] == run["counts"]["test"]
    assert run["baseline"]["warns"] == (paired["interval"][0] <= 0)
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


# The train workflow's Spark path with a split by source (a filter): the 3.5 pass takes it
# in the other train tests.
@pytest.mark.same_spark_path
def test_train_on_one_source_test_on_another(fixture_dir, tmp_path):
    from covidspark.data.synthetic import synthetic

    other = synthetic(str(tmp_path / "site-b"), n_per_class=3, seed=7)
    copied = sorted(os.listdir(os.path.join(fixture_dir, "covid")))[0]
    shutil.copy(os.path.join(fixture_dir, "covid", copied),
                os.path.join(other, "covid", "copy-" + copied))
    site_a = os.path.basename(fixture_dir.rstrip("/"))
    run = run_command(["train", "--data", fixture_dir, "--data", other, "--train-source", site_a,
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
    # A source of copies of the training images leaves nothing to test on: an error,
    # not an empty report.
    for label in ("covid", "normal"):
        shutil.copytree(os.path.join(fixture_dir, label), tmp_path / "site-c" / label)
    with pytest.raises(InputError, match=r"--test-source 'site-c': each of its 12 images is an "
                                         r"exact or near copy of a training image of "):
        run_command(["train", "--data", fixture_dir, "--data", str(tmp_path / "site-c"),
                     "--train-source", site_a, "--test-source", "site-c", "--weights", "random",
                     "--out", str(tmp_path / "y")])


def test_threshold_needs_the_binary_task():
    with pytest.raises(ValueError, match="binary task"):
        run_command(["train", "--task", "3class", "--threshold", "f1", "--weights", "random"])


# What is Spark's own here (a checkpoint's release after a failed fit) tests/runtime/
# test_lineage.py checks on Spark 3.5.
@pytest.mark.same_spark_path
def test_a_fit_that_raises_leaves_none_of_its_rows_kept(spark, fixture_dir, tmp_path,
                                                         monkeypatch):
    """The features a failed fit read are freed; a notebook's session goes on without them."""
    from covidspark.ml import experiment
    from covidspark.runtime import lineage

    before = persistent_rdds(spark)
    seen = {}
    fit = experiment.fit_and_evaluate

    def fit_that_fails(features, *args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            return fit(features, *args, **kwargs)  # the pixel baseline's, beside the fit
        seen["kept"] = persistent_rdds(spark)
        seen["features"] = lineage._checkpointed_rdd(features).id()  # local mode: a checkpoint
        raise RuntimeError("the fit failed")

    monkeypatch.setattr(experiment, "fit_and_evaluate", fit_that_fails)
    with pytest.raises(RuntimeError, match="the fit failed"):
        run_command(["train", "--data", fixture_dir, "--model", "SmallCNN", "--weights",
                     "random", "--bootstrap", "0", "--out", str(tmp_path / "run")])
    assert seen["features"] in seen["kept"]
    # Nothing the run kept is left: the features, the baseline's pixels beside the
    # fit, the images' tables (the ingest pass's on disk, the narrow one in memory).
    assert len(seen["kept"] - before) >= 3
    assert persistent_rdds(spark) == before


# Four workflows' Spark paths, which other tests take; what is Spark's own here (a
# checkpoint's and a cache's release) tests/runtime/test_lineage.py checks on Spark 3.5.
@pytest.mark.same_spark_path
def test_a_workflow_leaves_nothing_persisted_in_the_session(spark, fixture_dir, tmp_path):
    """A notebook runs train, predict, evaluate and featurize again and again in one
    session: each run's image tables and features go when it ends."""
    before = persistent_rdds(spark)
    common = ["--data", fixture_dir, "--weights", "random"]
    run = run_command(["train", *common, "--model", "SmallCNN", "--bootstrap", "0",
                       "--out", str(tmp_path / "run")])
    assert run["counts"]["total"] == 12 and persistent_rdds(spark) == before
    model = str(tmp_path / "run" / "model")
    for argv in (["predict", "--model-dir", model, "--images", fixture_dir,
                  "--out", str(tmp_path / "p.csv")],
                 ["evaluate", "--model-dir", model, "--data", fixture_dir, "--bootstrap", "0",
                  "--out", str(tmp_path / "eval")],
                 ["featurize", *common, "--model", "SmallCNN",
                  "--features", str(tmp_path / "store")]):
        run_command(argv)
        assert persistent_rdds(spark) == before, argv[0]
