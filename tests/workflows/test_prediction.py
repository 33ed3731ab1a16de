"""Predict (with heat maps) and evaluate with a saved model, as the jobs run them
(in this process, on the suite's Spark session)."""
import io
import os
import shutil

import numpy as np
import pytest

from conftest import CONNECT_URL, persistent_rdds, run_command
from covidspark.runtime.filesystem import local_path
from covidspark.runtime.remote import connect_address


# On Spark 3.5 its parts run in other tests: the heat maps below and in tests/serving, a
# saved pipeline's transform (tests/ml/test_featurizer.py), evaluate (test_seen_images.py),
# lenient reads (tests/data/test_reading.py).
@pytest.mark.spark35_covered
def test_predict_and_evaluate_with_a_saved_model(spark, fixture_dir, trained_model, tmp_path):
    import pandas as pd
    from PIL import Image

    from covidspark.cli import main
    from covidspark.data.reading import IngestError
    from covidspark.errors import InputError

    model = trained_model  # covidspark train ... --threshold 0.4
    kept_before = persistent_rdds(spark)  # None under Connect: nothing to compare
    images = tmp_path / "incoming"
    shutil.copytree(fixture_dir, images / "batch-1")
    (images / "batch-1" / "covid" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(IngestError, match="broken.png") as raised:
        run_command(["predict", "--model-dir", model, "--images", str(images), "--out",
              str(tmp_path / "p.csv")])
    # In PredictConfig's words, and in the command line's.
    assert "rejected (lenient=True skips them" in str(raised.value)
    assert "rejected (--lenient skips them" in raised.value.command_line_message()
    result = run_command(["predict", "--model-dir", model, "--images", str(images), "--lenient",
                   "--out", str(tmp_path / "p.csv"), "--heatmaps", str(tmp_path / "heat")])
    assert result["images"] == 18 and [p.rsplit("/", 1)[-1] for p, _ in result["rejected"]] == \
        ["broken.png"]
    # Listed beside the predictions, whatever their number (the summary prints 20).
    assert result["rejected_out"] == f"file:{tmp_path}/p.rejected.csv"
    rejected = pd.read_csv(tmp_path / "p.rejected.csv")
    assert list(rejected.path) == [f"file:{images}/batch-1/covid/broken.png"]
    assert rejected.reason[0].startswith("not a decodable image")
    predicted = pd.read_csv(tmp_path / "p.csv")
    assert len(predicted) == 18 and set(predicted.predicted_label) <= {"normal", "covid"}
    # One overlay per image, as large as the X-ray (the fixture's sides are <= 1024).
    # Written by the driver through the filesystem layer, at the URIs the table gives.
    assert all(h.startswith(f"file:{tmp_path}/heat/") for h in predicted.heatmap)
    # The rejected read and the heat maps' cached predictions are freed when predict ends.
    assert persistent_rdds(spark) == kept_before
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
    run_command(["predict", "--model-dir", model, "--images", str(images), "--lenient",
          "--out", str(tmp_path / "plain.csv")])
    plain = pd.read_csv(tmp_path / "plain.csv").set_index("path").loc[predicted.path]
    assert list(plain.predicted_label) == list(predicted.predicted_label)
    # A run without rejects leaves no list of an earlier run's beside its predictions.
    (images / "batch-1" / "covid" / "broken.png").unlink()
    clean = run_command(["predict", "--model-dir", model, "--images", str(images),
                         "--out", str(tmp_path / "p.csv")])
    assert clean["rejected_out"] is None and not (tmp_path / "p.rejected.csv").exists()
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

    run = run_command(["evaluate", "--model-dir", model, "--data", fixture_dir, "--bootstrap", "50",
                "--out", str(tmp_path / "eval")])
    assert run["task"] == "binary" and run["metrics"]["n"] == 12
    assert run["environment"]["spark_connect"] is bool(CONNECT_URL)  # which pass this is
    # The pass's session is built by pyspark's builder, not get_spark: its client's host.
    assert run["environment"]["connect_server"] == (
        f"sc://{connect_address(CONNECT_URL)[0]}" if CONNECT_URL else None)
    assert run["data"]["excluded"] == {"pneumonia": 6}
    truth = predicted.path.str.extract(r"/(covid|normal|pneumonia)/")[0]
    binary = truth != "pneumonia"
    accuracy = (predicted.predicted_label[binary] == truth[binary]).mean()
    assert run["metrics"]["accuracy"] == pytest.approx(accuracy)
    assert (tmp_path / "eval" / "report.md").exists()
    assert persistent_rdds(spark) == kept_before
    assert run["metrics"]["confidence_intervals"]["resampled"] == "images"
    # --patients: evaluate's bootstrap draws a patient's images together (two per
    # patient here: 6 of the 12), and predict writes each image's patient.
    files = sorted(os.path.join(fixture_dir, label, name) for label in ("covid", "normal")
                   for name in os.listdir(os.path.join(fixture_dir, label)))
    patient_of = {path: f"patient-{i // 2}" for i, path in enumerate(files)}
    patients = tmp_path / "patients.csv"
    patients.write_text("path,patient_id\n" + "".join(f"{p},{g}\n" for p, g in
                                                        patient_of.items()))
    grouped = run_command(["evaluate", "--model-dir", model, "--data", fixture_dir,
                           "--patients", str(patients), "--bootstrap", "50",
                           "--out", str(tmp_path / "eval-patients")])
    ci = grouped["metrics"]["confidence_intervals"]
    assert (ci["resampled"], ci["units"]) == ("groups", 6)
    report = (tmp_path / "eval-patients" / "report.md").read_text()
    # No near-duplicate search in evaluate: the report does not claim one.
    assert "6 groups of the 12 test images (a patient's images and identical files are one " \
        "group)" in report
    run_command(["predict", "--model-dir", model, "--images", os.path.join(fixture_dir, "covid"),
                 "--patients", str(patients), "--out", str(tmp_path / "with-patients.csv")])
    by_patient = pd.read_csv(tmp_path / "with-patients.csv")
    assert list(by_patient.columns[:2]) == ["path", "patient_id"] and len(by_patient) == 6
    assert {local_path(p): g for p, g in zip(by_patient.path, by_patient.patient_id)} == {
        p: g for p, g in patient_of.items() if "/covid/" in p}
    assert main(["evaluate", "--model-dir", str(tmp_path / "nothing"), "--out", str(tmp_path)]) == 2

    # A set of one class (an external COVID-only set): its recall is measured, the
    # rest is said not to be, and no ROC curve is drawn for a class without negatives.
    shutil.copytree(os.path.join(fixture_dir, "covid"), tmp_path / "covid-only" / "covid")
    only = run_command(["evaluate", "--model-dir", model, "--data", str(tmp_path / "covid-only"),
                        "--bootstrap", "20", "--out", str(tmp_path / "eval-covid")])
    covid = predicted[truth == "covid"]
    assert only["metrics"]["n"] == len(covid) == 6 and only["data"]["class_counts"] == {"covid": 6}
    assert only["metrics"]["per_class"]["covid"]["recall"] == pytest.approx(
        (covid.predicted_label == "covid").mean())
    assert only["metrics"]["roc_auc"] is None and only["metrics"]["curves"] == {}
    assert not (tmp_path / "eval-covid" / "roc.png").exists()
    said = ("Caution: the test images include none labelled normal. Measured: recall "
            "(sensitivity) of covid")
    assert any(w.startswith(said) for w in only["warnings"])
    assert said in (tmp_path / "eval-covid" / "report.md").read_text()
    shutil.copytree(os.path.join(fixture_dir, "pneumonia"), tmp_path / "other" / "pneumonia")
    with pytest.raises(InputError, match=r"needs images of a class; none labelled \['normal', "):
        run_command(["evaluate", "--model-dir", model, "--data", str(tmp_path / "other"),
                     "--out", str(tmp_path / "eval-other")])


def test_heat_maps_are_drawn_in_tasks_of_a_few_images(spark, images_df, trained_model, tmp_path):
    """A heat map costs a core seconds: a task draws a few of them, as many tasks on each
    core, so every core works to the last image and progress (counted as tasks end) moves."""
    from pyspark.sql import functions as F

    from covidspark.runtime.connect import default_parallelism
    from covidspark.serving import heatmaps
    from covidspark.serving.explain import ExplainError
    from covidspark.workflows.steps import load_model

    model, _ = load_model(spark, trained_model)
    images = images_df.limit(9)  # one partition: the split they arrive in
    weights = model.stages[0].resolvedWeights().path
    with pytest.raises(ExplainError, match="Unknown method 'sharp'. Supported: gradcam, "):
        heatmaps.predict_with_heatmaps(images, trained_model, weights, str(tmp_path),
                                       method="sharp")
    drawn = heatmaps.predict_with_heatmaps(images, trained_model, weights, str(tmp_path / "maps"),
                                           total=9)
    per_task = (drawn.select(F.spark_partition_id().alias("task"), "predicted_label")
                .groupBy("task").agg(F.count("predicted_label").alias("images")).collect())
    sizes = [r.images for r in per_task]
    # method "auto" (the head is not known there): occlusion's tasks of at most 4.
    assert sum(sizes) == 9 and max(sizes) <= heatmaps.IMAGES_PER_TASK["auto"] == 4
    # As many tasks on every core, and no round of tasks more than needed.
    cores = default_parallelism(spark)
    assert len(sizes) % cores == 0 and len(sizes) - cores < 9 / 4


def test_a_csv_out_that_cannot_be_written_is_named_itself(spark, tmp_path):
    """The check is of the CSV's folder; the error says which --out it was."""
    from covidspark.errors import InputError
    from covidspark.workflows.config import PredictConfig
    from covidspark.workflows.prediction import predict

    config = PredictConfig(model_dir=str(tmp_path / "never-read"), out="nosuch://bucket/p.csv")
    with pytest.raises(InputError) as error:
        predict(config)
    assert str(error.value).startswith("--out nosuch://bucket/p.csv: its folder nosuch://bucket")
