"""Databricks' FUSE mounts: what Spark is given for their paths, and where Python opens them.

Databricks mounts Unity Catalog volumes (``/Volumes``), DBFS (``/dbfs``) and
workspace files (``/Workspace``) on the driver and the executors. Python opens
files there with plain calls; Spark is given the spelling Databricks documents
for it ("Work with files on Databricks"), never ``file:/Volumes/...``: JVM
processes cannot open volume files through the FUSE path on every access mode.
"""
import os

#: Set on Databricks' driver and executors, classic and serverless (its runtime's version).
DATABRICKS_ENV = "DATABRICKS_RUNTIME_VERSION"
#: Where Databricks installs Spark on every node: the sign of one should a process
#: (a Python worker started with a trimmed environment) lack the variable.
DATABRICKS_SPARK_HOME = "/databricks/spark"

#: Databricks' FUSE mounts and how its documentation spells each for Spark
#: ("Work with files on Databricks"): volumes and the DBFS mount on ``dbfs:``,
#: workspace files as ``file:``.
DATABRICKS_SPARK_SPELLINGS = (("/Volumes/", "dbfs:/Volumes/"), ("/dbfs/", "dbfs:/"),
                              ("/Workspace/", "file:/Workspace/"))

#: ``dbfs:`` URIs and the folders Databricks mounts them on (driver and executors),
#: most specific first: Python reads and writes those files with plain file calls.
FUSE_MOUNTS = (("dbfs:/Volumes/", "/Volumes/"), ("dbfs:/", "/dbfs/"))


def on_databricks():
    """Whether this process runs on Databricks (its driver or an executor)."""
    return bool(os.environ.get(DATABRICKS_ENV)) or os.path.isdir(DATABRICKS_SPARK_HOME)


def databricks_spelling(path):
    """What Spark is given for a path under one of Databricks' mounts, on Databricks; else None.

    ``/Volumes/c/s/v/x`` -> ``dbfs:/Volumes/c/s/v/x``, ``/dbfs/x`` -> ``dbfs:/x``,
    ``/Workspace/x`` -> ``file:/Workspace/x``. Elsewhere (a Mac's ``/Volumes/Disk``)
    such a path is an ordinary one.
    """
    if not on_databricks():
        return None
    for mount, spelling in DATABRICKS_SPARK_SPELLINGS:
        if path.startswith(mount):
            return spelling + path[len(mount):]
    return None


def fuse_path(uri):
    """The mounted path of a ``dbfs:`` URI on a Databricks machine that mounts it; else None.

    Only on Databricks: a Mac's ``/Volumes`` holds its disks, not Unity Catalog.
    """
    if not on_databricks() or not uri.lower().startswith("dbfs:"):
        return None
    uri = "dbfs:/" + uri.split(":", 1)[1].lstrip("/")
    for prefix, mount in FUSE_MOUNTS:
        if uri.startswith(prefix):
            return mount + uri[len(prefix):] if os.path.isdir(mount) else None
    return None
