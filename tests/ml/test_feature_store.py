"""The feature store: computes only missing images; ignores runs killed mid-write."""
import contextlib
import csv
import json
import os
import shutil

import numpy as np
import pytest

from conftest import classic_only
from covidspark.ml.featurizer import DeepImageFeaturizer
from covidspark.ml.feature_store import COMMITTED, FeatureStore
from covidspark.runtime.filesystem import local_path


def _featurizer(seed=0):
    return DeepImageFeaturizer(inputCol="content", outputCol="features", modelName="ResNet50",
                               weights="random", seed=seed)


def _as_dict(df):
    return {r.image_id: r.features.toArray() for r in df.select("image_id", "features").collect()}


def test_rerun_computes_only_missing_images(spark, images_df, resnet_features, tmp_path):
    store = FeatureStore(spark, str(tmp_path / "store"))
    ids = sorted(r.image_id for r in images_df.select("image_id").collect())
    first = images_df.filter(images_df.image_id.isin(ids[:8]))
    # A progress line's total is what is computed, not what the store holds.
    progress_totals = []

    @contextlib.contextmanager
    def progress(missing):
        progress_totals.append(missing)
        yield

    features, stats = store.featurize(first, _featurizer(), progress=progress)
    assert (stats["images"], stats["computed"], stats["reused"]) == (8, 8, 0)
    assert "content" not in features.columns and features.count() == 8
    features, stats = store.featurize(images_df, _featurizer(), progress=progress)
    assert (stats["images"], stats["computed"], stats["reused"]) == (18, 10, 8)
    assert progress_totals == [8, 10]
    stored = _as_dict(features)
    expected, _ = resnet_features
    by_path = {r.image_id: r.path for r in images_df.select("image_id", "path").collect()}
    for image_id, vector in stored.items():
        np.testing.assert_allclose(vector, expected[by_path[image_id]], rtol=0, atol=1e-3)
    _, stats = store.featurize(images_df, _featurizer(), progress=progress)
    assert stats["computed"] == 0 and stats["reused"] == 18
    assert progress_totals == [8, 10]  # nothing to compute: no progress line
    assert len(store.committed_runs(_featurizer().featureSignature())) == 2


@classic_only("counts source reads with an accumulator, which Spark Connect lacks")
def test_each_image_is_read_once_however_many_chunks(spark, images_df, tmp_path):
    """The missing images are worked out in one pass; chunks do not rescan the source."""
    from pyspark.sql import functions as F

    reads = spark.sparkContext.accumulator(0)

    def read(content):  # evaluated once per source row each time the source is scanned
        reads.add(1)
        return content

    def counted(df):
        # As read_images computes it, image_id depends on the bytes read: a chunk's filter
        # on image_id cannot skip reading the other chunks' images.
        return (df.withColumn("content", F.udf(read, "binary")("content"))
                .withColumn("image_id", F.sha2("content", 256)))

    ids = sorted(r.image_id for r in images_df.select("image_id").collect())
    store = FeatureStore(spark, str(tmp_path / "store"))
    _, stats = store.featurize(counted(images_df.filter(F.col("image_id").isin(ids[:9]))),
                               _featurizer(), chunk_size=3)
    assert (stats["images"], stats["computed"]) == (9, 9)
    assert reads.value == 9  # three chunks, one read of each image
    _, stats = store.featurize(counted(images_df), _featurizer(), chunk_size=3)
    assert (stats["images"], stats["computed"], stats["reused"]) == (18, 9, 9)
    assert reads.value == 9 + 18  # one pass over all 18 to find the 9 new ones


def test_a_run_killed_while_writing_is_ignored(spark, images_df, tmp_path):
    store = FeatureStore(spark, str(tmp_path / "store"))
    signature = _featurizer().featureSignature()
    # What a killed job leaves: Parquet files without the commit marker (and wrong values).
    partial = f"{store.location(signature)}/run-killed"
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    (images_df.limit(5).select("image_id", array_to_vector(F.array(F.lit(1.0), F.lit(2.0)))
                               .alias("features"))
     .write.parquet(partial))
    features, stats = store.featurize(images_df.limit(5), _featurizer())
    assert stats["ignored_incomplete_runs"] == 1 and stats["computed"] == 5
    assert all(len(v) == 2048 for v in _as_dict(features).values())
    assert not os.path.exists(os.path.join(local_path(partial), COMMITTED))


def test_signature_separates_weights(spark, images_df, tmp_path):
    store = FeatureStore(spark, str(tmp_path / "store"))
    a, b = _featurizer(0).featureSignature(), _featurizer(1).featureSignature()
    assert a != b and store.location(a) != store.location(b)
    assert a["model"] == "ResNet50" and a["weights_id"] == "sha256:" + a["weights_sha256"]
    assert len(a["weights_sha256"]) == 64 and a["weights_sha256"] != b["weights_sha256"]
    _, stats = store.featurize(images_df.limit(2), _featurizer(0))
    # Locations are URIs, qualified as Spark would (file:/... on a local default filesystem).
    assert store.location(a).startswith("file:/")
    with open(os.path.join(local_path(store.location(a)), "signature.json")) as f:
        assert json.load(f)["weights_id"] == a["weights_id"]


def test_featurize_then_train_from_the_store(spark, fixture_dir, tmp_path, capsys):
    import pandas as pd

    from covidspark.cli import main

    # 22 bad files among the 18 images: more than a summary prints (20).
    data = tmp_path / "data"
    shutil.copytree(fixture_dir, data)
    bad = {f"bad-{k:02d}.png": "not a decodable image (no known image format)" for k in range(21)}
    for name in bad:
        (data / "covid" / name).write_bytes(b"plain text, not an image")
    (data / "normal" / "empty.jpg").write_bytes(b"")
    bad["empty.jpg"] = "empty file (0 bytes)"
    store = str(tmp_path / "store")
    common = ["--data", str(data), "--weights", "random", "--lenient"]
    assert main(["featurize", *common, "--features", store]) == 0
    printed = capsys.readouterr().out
    assert "18 images: 18 computed, 0 reused" in printed and "22 rejected" in printed
    assert printed.count("  rejected file:") == 20 and "  ... and 2 more" in printed
    # Every rejected file and its reason, in the CSV the summary names, under the store.
    listed = printed.split("all 22 rejected files, with their reasons: ")[1].split("\n")[0]
    assert listed.startswith(os.path.join(str(tmp_path), "store", "")) and "/rejected/" in listed
    rejected = pd.read_csv(listed)
    assert dict(zip(rejected.path.str.rsplit("/", n=1).str[-1], rejected.reason)) == bad
    assert all(p.startswith(f"file:{data}/") for p in rejected.path)
    out = tmp_path / "run"
    assert main(["train", "--classifier", "rf", "--task", "3class", *common, "--features", store,
                 "--out", str(out)]) == 0
    run = json.loads((out / "metrics.json").read_text())
    assert run["feature_store"]["computed"] == 0 and run["feature_store"]["reused"] == 18
    assert run["counts"]["total"] == 18 and len(run["rejected"]) == 22


@pytest.mark.parametrize("layout", ["folders", "manifest"])
def test_a_rerun_reads_only_the_files_it_has_not_stored(spark, fixture_dir, tmp_path, layout):
    """Stored files listed with the size and time they had are not read; the rest are."""
    from PIL import Image

    from covidspark.workflows.config import FeaturizeConfig
    from covidspark.workflows.featurization import featurize

    root = tmp_path / "tree"
    shutil.copytree(fixture_dir, root)
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.parent != root)
    pngs = [p for p in paths if p.suffix == ".png"]
    # The added file's space: it is loaded by name, as Spark spells its path.
    stale, changed, added = paths[0], pngs[3], root / "normal" / "added copy.png"

    def config():
        if layout == "folders":
            return FeaturizeConfig(data=[str(root)], weights="random", features=store)
        manifest = tmp_path / "m.csv"
        with open(manifest, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label"])
            writer.writerows([p.relative_to(tmp_path).as_posix(), p.parent.name]
                             for p in sorted({*paths, *root.glob("normal/added*.png")}))
        return FeaturizeConfig(manifest=str(manifest), weights="random", features=store)

    def new_image(source, target):
        with Image.open(source) as image:
            image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(target, format="PNG")

    store = str(tmp_path / "store")
    first = featurize(config())
    assert (first.computed, first.files_not_read) == (18, 0)
    # Garbage of the same size, with its old modification time: a read of it would
    # fail the strict run (not an image), so it must come from the store unread.
    status = stale.stat()
    stale.write_bytes(b"\0" * status.st_size)
    os.utime(stale, ns=(status.st_atime_ns, status.st_mtime_ns))
    new_image(changed, changed.with_name("tmp.png"))
    os.replace(changed.with_name("tmp.png"), changed)  # same path, new bytes, new time
    new_image(pngs[1], added)
    second = featurize(config())
    assert (second.images, second.computed, second.reused) == (19, 2, 17)
    assert second.files_not_read == 17 and second.rejected == []
    third = featurize(config())  # what the second run read, it recorded
    assert (third.computed, third.files_not_read) == (0, 19)
