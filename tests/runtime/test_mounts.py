"""Databricks' FUSE mounts: Spark gets the spelling Databricks documents, Python the mount.

The reference is Databricks' "Work with files on Databricks" page: Spark reads
Unity Catalog volumes as ``/Volumes/...`` on its default filesystem
(``dbfs:/Volumes/...``), DBFS as ``dbfs:/...`` (``/dbfs/...`` is the mount that
plain Python opens) and workspace files as ``file:/Workspace/...``; JVM processes
cannot open volume files through the mounted path on every access mode, so Spark
must never be given ``file:/Volumes/...``.

This machine is not Databricks: the tests set ``DATABRICKS_RUNTIME_VERSION`` as
Databricks does, and point the mount table at real folders under ``tmp_path``
(Databricks mounts ``/Volumes`` and ``/dbfs``; creating those here would need root).
"""
import pytest

from covidspark.errors import InputError
from covidspark.runtime import mounts
from covidspark.runtime.filesystem import Files

# (what a user writes, what Databricks documents for Spark)
DOCUMENTED = [
    ("/Volumes/main/xray/ozturk", "dbfs:/Volumes/main/xray/ozturk"),
    ("/Volumes/main/xray/runs/lr", "dbfs:/Volumes/main/xray/runs/lr"),
    ("/dbfs/runs/lr", "dbfs:/runs/lr"),
    ("/Workspace/Users/me@example.com/manifest.csv",
     "file:/Workspace/Users/me@example.com/manifest.csv"),
]


@pytest.fixture
def databricks(monkeypatch, tmp_path):
    """This process as a Databricks driver: the runtime's variable, and its two mounts."""
    monkeypatch.setenv(mounts.DATABRICKS_ENV, "15.4")
    volumes, dbfs = tmp_path / "Volumes", tmp_path / "dbfs"
    volumes.mkdir()
    dbfs.mkdir()
    monkeypatch.setattr(mounts, "FUSE_MOUNTS", (("dbfs:/Volumes/", f"{volumes}/"),
                                                ("dbfs:/", f"{dbfs}/")))
    return volumes, dbfs


@pytest.mark.parametrize("path, documented", DOCUMENTED)
def test_mount_paths_reach_spark_as_databricks_documents_them(databricks, spark, path,
                                                              documented):
    assert Files(spark).qualify(path) == documented
    assert Files().qualify(path) == documented  # an executor or a tool: no session


def test_off_databricks_a_volumes_path_is_an_ordinary_one(monkeypatch, spark):
    # A Mac mounts its disks under /Volumes: there it is a local folder, as Spark reads it.
    monkeypatch.delenv(mounts.DATABRICKS_ENV, raising=False)
    monkeypatch.setattr(mounts, "DATABRICKS_SPARK_HOME", "/nonexistent/databricks/spark")
    assert Files(spark).qualify("/Volumes/Disk/xrays") == "file:/Volumes/Disk/xrays"
    assert mounts.fuse_path("dbfs:/Volumes/Disk/xrays") is None


def test_files_under_the_mounts_are_written_and_read_through_them(databricks, spark):
    volumes, dbfs = databricks
    files = Files(spark)  # classic: without the mount this would be Hadoop's dbfs: client
    files.write_text("/Volumes/main/xray/runs/lr/metrics.json", '{"n": 1}')
    assert (volumes / "main/xray/runs/lr/metrics.json").read_text() == '{"n": 1}'
    assert files.read_text("dbfs:/Volumes/main/xray/runs/lr/metrics.json") == '{"n": 1}'
    assert files.is_local("dbfs:/Volumes/main/xray/runs/lr/metrics.json")
    assert files.list_dirs("/Volumes/main/xray/runs") == ["dbfs:/Volumes/main/xray/runs/lr"]
    assert files.check_writable("/dbfs/runs/grid") == "dbfs:/runs/grid"
    assert (dbfs / "runs/grid").is_dir()

    (dbfs / "models").mkdir()
    (dbfs / "models/w.h5").write_bytes(b"\x89HDF")
    # An executor's Python worker reads a path column's dbfs: URI from the mount.
    assert Files().read_bytes("dbfs:/models/w.h5") == b"\x89HDF"
    assert Files().read_bytes("dbfs:///models/w.h5") == b"\x89HDF"
    assert Files(spark).arrow_location("/dbfs/models/w.h5") == (None, f"{dbfs}/models/w.h5")


def test_without_the_mount_a_dbfs_uri_is_an_error_that_names_it(databricks, monkeypatch):
    monkeypatch.setattr(mounts, "FUSE_MOUNTS", (("dbfs:/", "/nonexistent-dbfs-mount/"),))
    with pytest.raises(InputError, match="dbfs:/models/w.h5: a process without a Spark session "
                                         r"\(.*\) opens dbfs: files through Databricks' "
                                         "/Volumes and /dbfs mounts, and this machine has none"):
        Files().read_bytes("/dbfs/models/w.h5")


def test_serving_reads_a_model_train_reported_as_a_dbfs_uri(databricks):
    # metrics.json names the model as Spark spells it; `covidspark serve` is given that.
    from covidspark.errors import InputNotFoundError
    from covidspark.serving.local_model import ModelFormatError, load_pipeline

    volumes, _ = databricks
    model = "dbfs:/Volumes/main/xray/runs/lr/model"
    with pytest.raises(InputNotFoundError, match=f"No saved model at {model} "):
        load_pipeline(model)
    (volumes / "main/xray/runs/lr/model/metadata").mkdir(parents=True)
    # Read through the mount: the folder is found, and its (missing) part file named.
    with pytest.raises(ModelFormatError, match=f"{volumes}/main/xray/runs/lr/model: no "
                                               f"metadata/part-"):
        load_pipeline(model)
    with pytest.raises(ModelFormatError, match="s3://bucket/model: serving reads a model on "
                                               "this machine"):
        load_pipeline("s3://bucket/model")


def test_a_process_without_the_variable_knows_databricks_by_its_spark_home(
        databricks, monkeypatch, tmp_path):
    # A Python worker started with a trimmed environment still opens files through the mount.
    _, dbfs = databricks
    monkeypatch.delenv(mounts.DATABRICKS_ENV)
    monkeypatch.setattr(mounts, "DATABRICKS_SPARK_HOME", str(tmp_path / "databricks/spark"))
    assert mounts.fuse_path("dbfs:/models/w.h5") is None
    (tmp_path / "databricks/spark").mkdir(parents=True)
    assert mounts.fuse_path("dbfs:/models/w.h5") == f"{dbfs}/models/w.h5"


def test_the_synthetic_set_is_written_straight_into_a_mounted_volume(databricks, spark):
    from covidspark.data.synthetic import STAMP
    from covidspark.workflows.config import InputConfig
    from covidspark.workflows.steps import synthetic_data

    volumes, _ = databricks
    root = synthetic_data(spark, InputConfig(synthetic_dir="/Volumes/main/xray/synthetic",
                                             synthetic_per_class=2))
    assert root == f"{volumes}/main/xray/synthetic"
    written = sorted(p.name for p in (volumes / "main/xray/synthetic").rglob("*.*"))
    assert len([n for n in written if n.endswith((".png", ".jpg"))]) == 3 * 2
    assert (volumes / "main/xray/synthetic" / STAMP).is_file()
