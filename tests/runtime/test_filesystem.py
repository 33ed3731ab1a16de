"""Paths as Spark means them: a default filesystem that is not ``file:`` (Hadoop viewfs).

``fs.defaultFS=viewfs://cluster/`` with a mount table that links ``/lake`` to a
local folder stands in for HDFS on EMR or DBFS on Databricks: a path without a
scheme must land inside the mounted folder, never in the working directory.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from conftest import REPO_ROOT, venv_bin
from covidspark.errors import InputError
from covidspark.runtime.filesystem import Files, has_scheme, join, local_path


def viewfs_conf(lake):
    return {"spark.hadoop.fs.defaultFS": "viewfs://cluster/",
            "spark.hadoop.fs.viewfs.mounttable.cluster.link./lake": f"file://{lake}"}


def test_uri_helpers_keep_schemes_and_hosts():
    assert has_scheme("s3://bucket/key") and has_scheme("file:/a") and has_scheme("dbfs:/x")
    assert not has_scheme("/Volumes/main/x") and not has_scheme("runs/lr")
    assert join("s3://bucket/runs/", "lr", "metrics.json") == "s3://bucket/runs/lr/metrics.json"
    assert local_path("file:///a/b") == "/a/b" == local_path("file:/a/b") == local_path("/a/b")
    assert local_path("hdfs://nn/a") is None and local_path("file://host/a") is None


def test_local_files_without_spark(tmp_path):
    files = Files()
    target = join(files.qualify(str(tmp_path)), "a", "metrics.json")
    files.write_text(target, "{}")
    assert (tmp_path / "a" / "metrics.json").read_text() == "{}"
    assert files.list_dirs(str(tmp_path)) == [f"file:{tmp_path}/a"]
    assert [name for name, _ in files.read_tree(str(tmp_path))] == ["a/metrics.json"]
    # Other URIs go through pyarrow, which names what it cannot open.
    with pytest.raises(InputError, match="viewfs://cluster/key: a process without a Spark "
                                         "session .* through pyarrow"):
        files.write_text("viewfs://cluster/key", "x")


def test_a_local_listing_follows_linked_folders_as_spark_s_does_and_ends_on_a_loop(tmp_path):
    # Hadoop's local filesystem follows data/covid -> /disk2/covid; os.walk did not,
    # so a hidden image there went unreported. A link back up the tree must end.
    (tmp_path / "disk2" / "covid" / "old").mkdir(parents=True)
    (tmp_path / "disk2" / "covid" / "a.png").write_bytes(b"a")
    (tmp_path / "disk2" / "covid" / "old" / "_b.png").write_bytes(b"b")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "normal.png").write_bytes(b"n")
    os.symlink(tmp_path / "disk2" / "covid", tmp_path / "data" / "covid")
    os.symlink(tmp_path / "disk2" / "covid", tmp_path / "disk2" / "covid" / "old" / "again")
    os.symlink(tmp_path / "data", tmp_path / "disk2" / "covid" / "old" / "top")
    assert Files().list_files(str(tmp_path / "data")) == [
        "covid/a.png", "covid/old/_b.png", "normal.png"]


@pytest.mark.parametrize("uri, inner", [
    ("gs://bucket/Viral Pneumonia/100%#1?é.png", "bucket/Viral Pneumonia/100%#1?é.png"),
    ("mock:///COVID 19/a%20b.png", "COVID 19/a%20b.png"),
])
def test_remote_paths_reach_pyarrow_as_spark_spells_them(uri, inner):
    # Spark's path column is decoded ("Viral Pneumonia"); pyarrow's URI parser
    # refused the space, and would have decoded a literal "%20" in a name.
    from pyarrow import fs

    from covidspark.runtime.arrow_fs import for_arrow

    with pytest.raises(Exception, match="Cannot parse URI"):
        fs.FileSystem.from_uri(uri)
    assert fs.FileSystem.from_uri(for_arrow(uri))[1] == inner
    assert for_arrow("/a b/c") == "/a b/c"  # not a URI: left alone


def test_a_bucket_s_pyarrow_filesystem_is_built_once_per_process(monkeypatch):
    # Building one can cost a network call (S3 looks up the bucket's region), and an
    # executor reading a path column opens every image: once per bucket, not per file.
    from pyarrow import fs

    from covidspark.runtime import arrow_fs

    monkeypatch.setattr(arrow_fs, "_BUILT", {})
    uris = ["gs://bucket/a/1.png", "gs://bucket/Viral Pneumonia/100%#1?é.png", "gs://bucket/",
            "gs://other/x.png", "mock:///COVID 19/a%20b.png", "mock:///b/c.png"]
    opened = {}
    for uri in uris * 2:
        filesystem, inner = arrow_fs.arrow_filesystem(uri)
        # pyarrow's own parser is the reference for where the file lies inside it.
        assert inner == fs.FileSystem.from_uri(arrow_fs.for_arrow(uri))[1]
        opened.setdefault(uri, []).append(filesystem)
    bucket = {id(f) for uri in uris[:2] for f in opened[uri]}
    assert len(bucket) == 1  # pyarrow builds a new one per call: this one was reused
    assert opened["gs://other/x.png"][0] is opened["gs://other/x.png"][1]
    assert opened["gs://other/x.png"][0] is not opened[uris[0]][0]

    # The mock filesystem starts empty each time pyarrow builds it: what one Files
    # writes, a new Files (another image of the same worker) reads back.
    Files().makedirs("mock:///COVID 19")
    Files().write_bytes("mock:///COVID 19/a%20b.png", b"\x89PNG")
    assert Files().read_bytes("mock:///COVID 19/a%20b.png") == b"\x89PNG"


@pytest.mark.subprocess
def test_viewfs_default_filesystem_library_paths(tmp_path, fixture_dir):
    """In a session whose default filesystem is viewfs: read_images, the feature store, reports."""
    from covidspark.models.weights import resolve_weights

    lake = tmp_path / "lake"
    shutil.copytree(fixture_dir, lake / "xrays")
    random_weights = resolve_weights("SmallCNN", "random", seed=0)
    shutil.copy(random_weights.path, lake / "backbone.weights.h5")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    script = f"""
import json, sys
from covidspark.runtime.session import get_spark
from covidspark.runtime.filesystem import Files
from covidspark import read_images, DeepImageFeaturizer
from covidspark.ml.feature_store import FeatureStore
from covidspark.errors import InputError
spark = get_spark("viewfs", master="local[2]", conf={json.dumps(viewfs_conf(lake))})
files = Files(spark)
images = read_images(spark, "/lake/xrays")
paths = [r.path for r in images.select("path").collect()]
store = FeatureStore(spark, "/lake/store")
f = DeepImageFeaturizer(inputCol="content", modelName="SmallCNN", weights="random")
_, stats = store.featurize(images.limit(3), f)
try:
    read_images(spark, "/elsewhere/xrays")
    missing = None
except InputError as e:
    missing = str(e)
try:
    files.check_writable("/not-mounted/run")
    refused = None
except InputError as e:
    refused = str(e)
from covidspark.workflows.config import InputConfig
from covidspark.workflows.steps import synthetic_data
synthetic_dir = synthetic_data(spark, InputConfig(synthetic_dir="/lake/synthetic",
                                                  synthetic_per_class=2))
synthetic_again = synthetic_data(spark, InputConfig(synthetic_dir="/lake/synthetic",
                                                    synthetic_per_class=2))
synthetic_images = read_images(spark, synthetic_dir).count()
remote = DeepImageFeaturizer(inputCol="content", modelName="SmallCNN",
                             weights="viewfs://cluster/lake/backbone.weights.h5").resolvedWeights()
print(json.dumps({{"paths": paths, "stats": stats["location"], "missing": missing,
                  "refused": refused, "qualified": files.qualify("/lake/run"),
                  "remote": [remote.path, remote.sha256, remote.description],
                  "synthetic": [synthetic_dir, synthetic_again, synthetic_images]}}))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(result["paths"]) == 18
    assert all(p.startswith("viewfs://cluster/lake/xrays/") for p in result["paths"])
    assert result["stats"].startswith("viewfs://cluster/lake/store/")
    assert result["qualified"] == "viewfs://cluster/lake/run"
    assert "Image folder not found: /elsewhere/xrays (viewfs://cluster/elsewhere/xrays)" \
        in result["missing"]
    assert result["refused"].startswith("--out /not-mounted/run")
    # Weights given as a URI of the session's filesystem: copied to the driver's
    # cache through it, identified by content.
    copy, sha256, description = result["remote"]
    assert sha256 == random_weights.sha256 and not copy.startswith(str(lake))
    assert description == "file viewfs://cluster/lake/backbone.weights.h5"
    # The synthetic set, written where executors read it: the viewfs folder.
    assert result["synthetic"] == ["viewfs://cluster/lake/synthetic"] * 2 + [6]
    written = sorted(os.path.relpath(os.path.join(folder, name), lake / "synthetic")
                     for folder, _, names in os.walk(lake / "synthetic") for name in names)
    assert ".synthetic.json" in written and "manifest.csv" in written
    assert len([w for w in written if w.endswith((".png", ".jpg"))]) == 6
    # The store's parquet and markers are inside the mounted folder; nothing in the cwd.
    store = lake / "store"
    assert any(name == "signature.json" for _, _, names in os.walk(store) for name in names)
    assert any(name == "_COMMITTED" for _, _, names in os.walk(store) for name in names)
    assert os.listdir(cwd) == []


@pytest.mark.subprocess
def test_viewfs_train_and_predict_jobs_write_inside_the_mount(tmp_path, fixture_dir):
    """spark-submit train and predict with --out /lake/...: every file lands in the mount."""
    lake = tmp_path / "lake"
    shutil.copytree(fixture_dir, lake / "xrays")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    conf = [arg for key, value in viewfs_conf(lake).items()
            for arg in ("--conf", f"{key}={value}")]

    def submit(job, *args):
        done = subprocess.run([venv_bin("spark-submit"), "--master", "local[2]", *conf,
                               os.path.join(REPO_ROOT, "jobs", job), *args], cwd=cwd,
                              capture_output=True, text=True, timeout=900,
                              env={**os.environ, "PYSPARK_PYTHON": sys.executable})
        assert done.returncode == 0, done.stderr[-4000:]
        return done

    # SmallCNN, no baseline: where the files land depends on neither.
    submit("train_lr.py", "--data", "/lake/xrays", "--task", "binary", "--model", "SmallCNN",
           "--weights", "random", "--no-baseline",
           "--bootstrap", "0", "--features", "/lake/store", "--out", "/lake/run")
    metrics = json.loads((lake / "run" / "metrics.json").read_text())
    assert metrics["model_dir"] == "viewfs://cluster/lake/run/model"
    for name in ("report.md", "confusion_counts.png", "roc.png", "model/metadata"):
        assert (lake / "run" / name).exists(), name
    Image.open(lake / "run" / "confusion_counts.png").verify()

    submit("predict.py", "--model-dir", "/lake/run/model", "--images", "/lake/xrays",
           "--out", "/lake/predictions.csv", "--heatmaps", "/lake/heat")
    import pandas as pd

    predicted = pd.read_csv(lake / "predictions.csv")
    assert len(predicted) == 18  # predict --images reads every image, whatever its folder
    assert all(h.startswith("viewfs://cluster/lake/heat/") for h in predicted.heatmap)
    # (Hadoop's local filesystem adds hidden .crc checksum files; HDFS does not.)
    written = [n for n in os.listdir(lake / "heat") if not n.startswith(".")]
    assert sorted(written) == sorted(h.rsplit("/", 1)[-1] for h in predicted.heatmap)
    Image.open(lake / "heat" / written[0]).verify()
    assert os.listdir(cwd) == []  # nothing landed on the "node's" local disk


def test_a_location_no_filesystem_can_open_is_named_once(spark):
    # The reason already began with the URI, and the refusal said it twice.
    with pytest.raises(InputError) as refused:
        Files(spark).check_writable("nosuch://bucket/run")
    message = str(refused.value)
    assert message.startswith("--out nosuch://bucket/run: ")
    assert message.count("nosuch://bucket/run") == 1, message
