"""The binary LR path on real chest X-rays (../shared/data/ozturk), when present.

Uses seeded random ResNet50 weights (no pretrained weights can be downloaded
here); on this data such features separate COVID from normal largely through
source artefacts (see ../shared/data/README.md), which is what this checks runs.
"""
import csv
import os

import pytest

from conftest import SHARED_DATA, require_path

OZTURK = os.path.join(SHARED_DATA, "ozturk")

pytestmark = pytest.mark.realdata


@pytest.fixture(autouse=True)
def real_data():
    """Skips where ../shared/data is absent; fails under CI=true."""
    return require_path(os.path.join(OZTURK, "manifest.csv"))


def _subset_manifest(tmp_path, per_class=80):
    with open(os.path.join(OZTURK, "manifest.csv")) as f:
        rows = list(csv.DictReader(f))
    chosen = []
    for label in ("covid", "normal"):
        of_label = sorted((r for r in rows if r["label"] == label), key=lambda r: r["original_sha256"])
        chosen += of_label[:per_class]
    path = tmp_path / "subset.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "source"])
        for r in chosen:
            writer.writerow([os.path.join(OZTURK, r["path"]), r["label"], r["source"]])
    return str(path)


# Manifest, featurizer and LR head: the synthetic tests' path (here, real files).
@pytest.mark.same_spark_path
def test_binary_lr_on_real_xrays(spark, tmp_path):
    from covidspark.evaluation.scoring import evaluate
    from covidspark.ml.featurizer import DeepImageFeaturizer
    from covidspark.data.reading import read_images
    from covidspark.ml.pipelines import build_head, prepare_task, task_labels
    from covidspark.data.splits import stratified_split
    from covidspark.workflows.steps import persist_compact

    images = read_images(spark, manifest=_subset_manifest(tmp_path))
    data, info = prepare_task(images, "binary")
    assert info["counts"] == {"covid": 80, "normal": 80}
    featurizer = DeepImageFeaturizer(inputCol="content", modelName="ResNet50", weights="random")
    # Stored as the train job stores them: LR then runs a job per iteration over one
    # partition, not over the image scan's dozens.
    features, _ = persist_compact(
        featurizer.transform(stratified_split(data, 0.2, seed=0)).drop("content"),
        width=2048, rows=160)
    train, test = features.filter("split = 'train'"), features.filter("split = 'test'")
    model = build_head("binary", "lr").fit(train)
    metrics = evaluate(model.transform(test), task_labels("binary"))
    assert metrics["n"] == 32
    assert metrics["accuracy"] >= 0.85, metrics
