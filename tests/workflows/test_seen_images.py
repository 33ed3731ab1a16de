"""evaluate finds the model's own training images among those it scores.

The reference is how the sets are built: a model trained on source ``a`` only
(``--train-source a --test-source b``) has trained on every COVID and normal
image of ``a``. The evaluated folder holds two of them byte for byte (renamed),
one re-encoded as JPEG, images of ``b`` (the model's test side) and images of a
third synthetic set; only the three from ``a`` are copies.
"""
import json
import os
import shutil
import zipfile

import pytest
from PIL import Image

from conftest import classic_only
from covidspark.data.synthetic import synthetic
from covidspark.errors import InputError


@pytest.fixture(scope="module")
def sets(tmp_path_factory, spark):
    from covidspark.cli import build_parser

    root = tmp_path_factory.mktemp("seen")
    for name, seed in (("a", 11), ("b", 12), ("fresh", 13)):
        synthetic(str(root / name), n_per_class=3, seed=seed)
    run = root / "run"
    args = build_parser().parse_args([
        "train", "--data", str(root / "a"), "--data", str(root / "b"), "--train-source", "a",
        "--test-source", "b", "--weights", "random", "--no-baseline", "--bootstrap", "0",
        "--out", str(run)])
    args.func(args)

    evaluated, copies = root / "evaluated", {}
    for label in ("covid", "normal"):
        (evaluated / label).mkdir(parents=True)
        originals = sorted((root / "a" / label).iterdir())
        exact = evaluated / label / f"renamed-{originals[0].name}"
        shutil.copyfile(originals[0], exact)
        copies[str(exact)] = (str(originals[0]), True)
        if label == "covid":
            near = evaluated / label / "re-encoded.jpg"
            with Image.open(originals[1]) as image:
                image.convert("L").save(near, "JPEG", quality=95)
            copies[str(near)] = (str(originals[1]), False)
        for other in ("b", "fresh"):
            for image in sorted((root / other / label).iterdir())[:2]:
                shutil.copyfile(image, evaluated / label / f"{other}-{image.name}")
    return {"root": root, "model": str(run / "model"), "evaluated": str(evaluated),
            "copies": copies}


def evaluate(sets, out, *flags, model=None):
    from covidspark.cli import build_parser

    args = build_parser().parse_args([
        "evaluate", "--model-dir", model or sets["model"], "--data", sets["evaluated"],
        "--bootstrap", "0", "--out", str(sets["root"] / out), *flags])
    return args.func(args)


def local(uri):
    return uri[len("file:"):] if uri.startswith("file:") else uri


def test_evaluate_names_the_copies_of_training_images_it_scores(sets):
    result = evaluate(sets, "report")
    seen = result.run["seen_in_training"]
    assert seen["checked"] and seen["training_images"] == 6  # a's 3 COVID + 3 normal
    assert {local(c["path"]): (local(c["training_path"]), c["exact"])
            for c in seen["copies"]} == sets["copies"]
    assert (seen["exact"], seen["near"], seen["evaluated"]) == (2, 1, 11)
    assert all(c["distance"] <= 2 for c in seen["copies"])
    # Reported, not dropped: every image is scored, and the caution says so.
    assert result.metrics["n"] == 11
    assert "Caution: 3 of the 11 evaluated images are copies" in result.summary()
    saved = json.loads(open(local(result.metrics_path)).read())
    assert saved["seen_in_training"]["listed"] == 3
    assert "3 of the 11 evaluated images" in saved["warnings"][-1]


def test_seen_drop_scores_only_the_images_the_model_never_saw(sets):
    result = evaluate(sets, "drop", "--seen", "drop")
    assert result.metrics["n"] == 8
    assert "Left out: 3 of the 11" in result.summary()


def test_a_model_that_records_no_training_images_says_so(sets, tmp_path):
    old = tmp_path / "model"
    shutil.copytree(sets["model"], old)
    shutil.rmtree(old / "training_images")
    result = evaluate(sets, "old", model=str(old))
    seen = result.run["seen_in_training"]
    assert not seen["checked"] and "records no training images" in seen["reason"]
    assert result.metrics["n"] == 11
    with pytest.raises(InputError, match="--seen drop: the model records no training images"):
        evaluate(sets, "old-drop", "--seen", "drop", model=str(old))


@classic_only("reads the shipped archive back through SparkFiles on the driver")
def test_the_hashes_stay_on_the_driver(spark, sets):
    """The archive shipped to executors (predict --heatmaps) leaves the training images out."""
    from pyspark import SparkFiles

    from covidspark.serving.heatmaps import ship_model

    with zipfile.ZipFile(SparkFiles.get(ship_model(spark, sets["model"]))) as z:
        names = z.namelist()
    assert any(n.startswith("metadata/") for n in names)
    assert not any(n.startswith("training_images") for n in names)


@pytest.mark.realdata
def test_ozturk_holds_a_downscaled_copy_of_each_full_resolution_image(spark, tmp_path):
    """On the real sets: ozturk/ is every original downscaled and re-encoded as JPEG, and
    ozturk-fullres/ 120 of the originals unchanged; each manifest names the original's sha256.

    A model "trained" on all of ozturk-fullres must find exactly the ozturk rows whose
    original is one of those 120 files.
    """
    import csv

    from pyspark.sql import functions as F

    from conftest import SHARED_DATA, require_path
    from covidspark.data.reading import read_images
    from covidspark.evaluation.seen_images import remember_training_images, seen_in_training

    fullres = os.path.join(SHARED_DATA, "ozturk-fullres")
    ozturk = os.path.join(SHARED_DATA, "ozturk")
    require_path(os.path.join(fullres, "manifest.csv"))

    def originals(folder):
        with open(os.path.join(folder, "manifest.csv")) as f:
            return {os.path.join(folder, r["path"]): r["original_sha256"] for r in csv.DictReader(f)}

    training = read_images(spark, fullres).withColumn("split", F.lit("train"))
    model = str(tmp_path / "model")
    remember_training_images(training, model)
    seen = seen_in_training(spark, read_images(spark, os.path.join(ozturk, "images")), model)

    trained_on = set(originals(fullres).values())
    expected = {p for p, original in originals(os.path.join(ozturk)).items()
                if original in trained_on}
    assert len(trained_on) == 120 and len(expected) == 120
    assert {local(c["path"]) for c in seen["copies"]} == expected
    # Each copy is matched to its own original, not only to some training image.
    fullres_original = originals(fullres)
    ozturk_original = originals(ozturk)
    assert all(fullres_original[local(c["training_path"])] == ozturk_original[local(c["path"])]
               for c in seen["copies"])
    assert seen["exact"] == 0  # re-encoded, never the same bytes
