"""Shared fixtures: one local[2] SparkSession and a generated synthetic image set.

The suite never downloads anything: backbones use explicitly named, seeded
random weights (``weights="random"``), generated once per test session into a
temporary cache (``COVIDSPARK_CACHE``) that subprocesses inherit.
"""
import contextlib
import os
import shutil
import sys
import tempfile

import numpy as np
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.environ.get(
    "COVIDSPARK_SHARED_DATA", os.path.join(os.path.dirname(REPO_ROOT), "shared", "data")
)

# Under CI (CI=true) a missing data folder, module or tool fails the test that needs it;
# on a developer's machine it skips with the reason.
IN_CI = os.environ.get("CI", "").lower() in ("true", "1", "yes")

# Set by tests/test_connect.py: the suite's core tests again, against a Spark Connect server.
CONNECT_URL = os.environ.get("COVIDSPARK_TEST_CONNECT")


def _missing(what, hint):
    message = f"{what} is missing ({hint})"
    if IN_CI:
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(message)


def module_present(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None


def require_module(name, now=False):
    """A test that needs an optional module: skip without it, fail under CI.

    As a decorator (``now=False``), or called inside the test (``now=True``).
    """
    if now:
        if not module_present(name):
            _missing(f"module {name}", "pip install -e '.[test]'")
        return None
    if IN_CI:
        # A plain (registered) marker: the test runs, and fails on the import if it is missing.
        # Usable as a decorator and in pytest.param(marks=...), unlike usefixtures().
        return pytest.mark.requires_module(name)
    return pytest.mark.skipif(not module_present(name), reason=f"module {name} is missing")


def classic_only(reason):
    """A test of something Spark Connect cannot do (the reason says what): skipped on Connect."""
    return pytest.mark.skipif(bool(CONNECT_URL),
                              reason=f"classic sessions only: {reason}")


def require_path(path, what="the real data in ../shared/data"):
    """The path of real data a test needs: skip without it, fail under CI."""
    if not os.path.exists(path):
        _missing(f"{what} ({path})", "see ../shared/data/README.md")
    return path


# Before anything resolves weights: a cache private to this test session, shared by
# its pytest-xdist workers (they inherit the controller's environment): each seeded
# random weights file and OpenVINO model is generated once per run, not once per
# worker. The cache writes each file under a temporary name and renames it.
_XDIST_WORKER = bool(os.environ.get("PYTEST_XDIST_WORKER"))
# The Connect pass's child pytest (tests/test_connect.py) shares it too; its own
# fixtures, built through Connect, lie apart (built_once_per_run).
_SHARES_CACHE = _XDIST_WORKER or bool(CONNECT_URL)
_CACHE = os.environ.get("COVIDSPARK_TEST_CACHE") if _SHARES_CACHE else None
_OWNS_CACHE = not _CACHE
if _OWNS_CACHE:
    _CACHE = tempfile.mkdtemp(prefix="covidspark-test-cache-")
    os.environ["COVIDSPARK_TEST_CACHE"] = _CACHE
os.environ["COVIDSPARK_CACHE"] = _CACHE
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# The JVMs the tests start beside their own session (spark-submit jobs, standalone
# daemons and their executors, "a new session" subprocesses) live seconds to minutes
# and spend much of their CPU in the C2 JIT compiler and G1's threads, on 2 cores.
# C1 only and the serial collector, measured here: the standalone-cluster fine-tune
# test in 129 s instead of 216 s. The suite's own long-lived session keeps the JVM's
# defaults (C1 only made tests/workflows/test_training.py 7 % slower): see `spark`.
# A user's own JAVA_TOOL_OPTIONS wins.
SHORT_LIVED_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
os.environ.setdefault("JAVA_TOOL_OPTIONS", SHORT_LIVED_JVM_OPTIONS)


@contextlib.contextmanager
def long_lived_jvm():
    """Start a JVM inside this block (here or in a subprocess given ``os.environ``) with
    the JVM's own defaults, not the short-lived options: one that serves many tests."""
    ours = os.environ.get("JAVA_TOOL_OPTIONS") == SHORT_LIVED_JVM_OPTIONS
    if ours:
        del os.environ["JAVA_TOOL_OPTIONS"]
    try:
        yield
    finally:
        if ours:
            os.environ["JAVA_TOOL_OPTIONS"] = SHORT_LIVED_JVM_OPTIONS


def built_once_per_run(name, build):
    """A folder of the run's shared cache that ``build(folder)`` fills once per test run.

    For session fixtures that cost a minute (a trained model, a backbone's features):
    the first pytest-xdist worker that asks builds it under a file lock, the others
    wait on the lock and reuse it. Built from seeded data and weights, it is what each
    worker would have built; tests read it and never write into it.
    """
    import fcntl

    # The Connect pass builds its own: that a model trains through Connect is tested too.
    folder = os.path.join(_CACHE, "test-fixtures-connect" if CONNECT_URL else "test-fixtures",
                          name)
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    # The lock and the "built" mark lie beside the folder: nothing is added to what
    # the tests read.
    with open(folder + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not os.path.exists(folder + ".built"):
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed half-way
            os.makedirs(folder)
            build(folder)
            open(folder + ".built", "w").close()
    return folder


#: The test files that take longest (CI's --durations, 2 workers), longest first; the
#: Spark 3.5 pass, which leaves some of them out, keeps this order for the rest.
#: Under ``--dist loadfile --no-loadscope-reorder`` (the Makefile) pytest-xdist hands
#: out files in collection order as workers run dry: long files first leaves short
#: ones to fill the end, so one worker does not run the 9-minute Connect pass alone at the end.
LONGEST_FILES_FIRST = (
    "tests/test_connect.py",
    "tests/finetune/test_finetune.py",
    "tests/workflows/test_cluster.py",
    "tests/runtime/test_filesystem.py",
    "tests/test_notebooks.py",
    "tests/workflows/test_training.py",
    "tests/models/test_torch_engine.py",
    "tests/models/test_engines.py",
    "tests/ml/test_featurizer.py",
    "tests/workflows/test_prediction.py",
    "tests/workflows/test_gpu_assignment.py",
    "tests/serving/test_predictor.py",
    "tests/workflows/test_comparison.py",
    "tests/ml/test_feature_store.py",
    "tests/workflows/test_reliability.py",
    "tests/ml/test_selection.py",
    "tests/test_docs.py",
    "tests/serving/test_explain.py",
    "tests/test_legacy_model.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {path: i for i, path in enumerate(LONGEST_FILES_FIRST)}
    # A stable sort: every other file keeps its place, after these.
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


def pytest_unconfigure(config):
    if _OWNS_CACHE:  # the controller ends after its workers
        shutil.rmtree(_CACHE, ignore_errors=True)


if CONNECT_URL:
    # Subprocesses (jobs, "a new session") reach the same server, as on Databricks.
    os.environ["SPARK_REMOTE"] = CONNECT_URL


@pytest.fixture(scope="session")
def spark():
    from covidspark.runtime.session import get_spark

    if CONNECT_URL:
        from pyspark.sql import SparkSession

        session = SparkSession.builder.remote(CONNECT_URL).getOrCreate()
        yield session
        session.stop()
        return
    with long_lived_jvm():
        session = get_spark("covidspark-tests", master="local[2]",
                            conf={"spark.ui.enabled": "false", "spark.driver.memory": "2g",
                                  "spark.ui.showConsoleProgress": "false"})
    yield session
    session.stop()


@pytest.fixture(scope="session")
def fixture_dir():
    """18 synthetic X-rays (6 per class), PNG and JPEG, 256-1024 px."""
    from covidspark.data.synthetic import synthetic

    # One folder for the run: resnet_features and trained_model are keyed by its paths.
    return built_once_per_run("xrays", lambda folder: synthetic(folder, n_per_class=6, seed=1))


@pytest.fixture(scope="session")
def images_df(spark, fixture_dir):
    from covidspark.data.reading import read_images

    return read_images(spark, fixture_dir).cache()


@pytest.fixture(scope="session")
def resnet_features(spark, images_df):
    """Seeded random ResNet50 features of the fixture: {path: features}, {path: label}."""
    from covidspark.ml.featurizer import DeepImageFeaturizer

    def featurize(folder):
        featurizer = DeepImageFeaturizer(inputCol="content", outputCol="features",
                                         modelName="ResNet50", weights="random", seed=0)
        rows = featurizer.transform(images_df.repartition(4)).select(
            "path", "label", "features").collect()
        np.savez(os.path.join(folder, "features.npz"), path=[r.path for r in rows],
                 label=[r.label for r in rows],
                 features=np.stack([r.features.toArray() for r in rows]))

    stored = np.load(os.path.join(built_once_per_run("resnet-features", featurize),
                                  "features.npz"))
    paths = [str(p) for p in stored["path"]]
    return (dict(zip(paths, stored["features"])),
            dict(zip(paths, (str(label) for label in stored["label"]))))


@pytest.fixture(scope="session")
def features_df(spark, resnet_features):
    """The fixture's ResNet50 features as a Spark DataFrame (path, label, features).

    One partition, as the workflows store small feature sets (``steps.persist_compact``):
    an LR iteration is a Spark job with a task per partition.
    """
    from pyspark.ml.linalg import Vectors, VectorUDT
    from pyspark.sql.types import StringType, StructField, StructType

    features, labels = resnet_features
    schema = StructType([StructField("path", StringType()), StructField("label", StringType()),
                         StructField("features", VectorUDT())])
    return spark.createDataFrame(
        [(p, labels[p], Vectors.dense(v)) for p, v in sorted(features.items())], schema
    ).coalesce(1).cache()


def png_bytes(array, **kwargs):
    """A numpy array encoded as PNG (8- or 16-bit by its dtype)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", **kwargs)
    return buffer.getvalue()


def gradient(h=64, w=48):
    """A deterministic 8-bit test image."""
    return (np.arange(h * w).reshape(h, w) % 251).astype(np.uint8)


def local_path(uri):
    """'file:/a/b' -> '/a/b'."""
    return uri[len("file:"):] if uri.startswith("file:") else uri


def free_port():
    """A TCP port nothing listens on now (for servers the tests start)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_connect_server(port, log=None, own_process_group=False):
    """``tests/connect_server.py PORT``, returned once it says it is ready.

    Its stderr goes to ``log`` (a path), else nowhere. With ``own_process_group``
    a ``killpg`` of its pid kills its JVM too (a server killed under a client).
    Stop it by closing its stdin.
    """
    import subprocess

    with open(log or os.devnull, "w") as err:
        server = subprocess.Popen(
            [sys.executable, os.path.join(REPO_ROOT, "tests", "connect_server.py"), str(port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
            start_new_session=own_process_group,
            env={**os.environ, "PYSPARK_PYTHON": sys.executable})
    if server.stdout.readline().strip() != "ready":
        server.kill()
        said = open(log).read()[-3000:] if log else ""
        raise AssertionError(f"Connect server did not start:\n{said}")
    return server


CLUSTER_SH = os.path.join(REPO_ROOT, "cluster_configs", "standalone", "cluster.sh")


@contextlib.contextmanager
def standalone_cluster(state, workers, cores, memory, **env):
    """A Spark standalone master and workers on localhost (cluster.sh); yields (url, env).

    ``env`` reaches the daemons, e.g. ``SPARK_WORKER_OPTS`` to declare resources.
    """
    import glob
    import subprocess

    env = {**os.environ, "COVIDSPARK_CLUSTER_DIR": str(state), "PYSPARK_PYTHON": sys.executable,
           "SPARK_MASTER_PORT": str(free_port()), "SPARK_MASTER_WEBUI_PORT": str(free_port()),
           **env}
    try:
        started = subprocess.run(["bash", CLUSTER_SH, "start", str(workers), str(cores), memory],
                                 env=env, capture_output=True, text=True, timeout=240)
        assert started.returncode == 0, started.stderr + "".join(
            open(f).read()[-2000:] for f in glob.glob(os.path.join(str(state), "*.log")))
        yield started.stdout.strip().splitlines()[-1], env
    finally:
        subprocess.run(["bash", CLUSTER_SH, "stop"], env=env, timeout=120)
    assert "running" not in subprocess.run(["bash", CLUSTER_SH, "status"], env=env,
                                           capture_output=True, text=True).stdout


def persistent_rdds(spark):
    """Ids of the RDDs Spark keeps (caches, local checkpoints) in this session; None
    under Spark Connect, whose client cannot list the server's RDDs."""
    from covidspark.runtime.connect import is_connect

    if is_connect(spark):
        return None
    return set(spark.sparkContext._jsc.getPersistentRDDs().keySet())


def run_command(argv):
    """Run a command as the CLI does; its result as plain data (the run's dict)."""
    import dataclasses

    from covidspark.cli import build_parser

    args = build_parser().parse_args(argv)
    result = args.func(args)
    for field in ("run", "comparison"):
        if hasattr(result, field):
            return getattr(result, field)
    return dataclasses.asdict(result)


def venv_bin(name):
    """A script installed next to the running interpreter (spark-submit, covidspark)."""
    return os.path.join(os.path.dirname(sys.executable), name)


@pytest.fixture(scope="session")
def trained_model(spark, fixture_dir):
    """A binary ResNet50 + LR model trained by ``covidspark train`` (threshold 0.4), its folder."""
    from covidspark.cli import build_parser

    def train(folder):
        args = build_parser().parse_args([
            "train", "--data", fixture_dir, "--weights", "random", "--threshold", "0.4",
            "--no-baseline", "--bootstrap", "0", "--out", os.path.join(folder, "run")])
        args.func(args)

    return os.path.join(built_once_per_run("trained-model", train), "run", "model")


def save_head_pipeline(features_df, tmp_path, task, classifier, threshold=None):
    """Fit a head on the fixture's Spark features; save it behind the fixture's featurizer."""
    from pyspark.ml import PipelineModel

    from covidspark.ml.featurizer import DeepImageFeaturizer
    from covidspark.ml.pipelines import build_head, prepare_task
    from covidspark.ml.thresholds import apply_threshold

    rows, _ = prepare_task(features_df, task)
    head = build_head(task, classifier, seed=3).fit(rows)
    if threshold is not None:
        apply_threshold(head, threshold)
    featurizer = DeepImageFeaturizer(inputCol="content", outputCol="features",
                                     modelName="ResNet50", weights="random", seed=0)
    model = PipelineModel(stages=[featurizer, *head.stages])
    path = str(tmp_path / f"{task}-{classifier}")
    model.save(path)
    return model, path, rows


def clean_env():
    """The environment of a user who did not activate the venv."""
    # As a user who did not activate the venv and exported nothing: the venv's
    # bin is not on the PATH and PYSPARK_PYTHON is unset.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "VIRTUAL_ENV", "SPARK_HOME")}
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if os.path.abspath(p) != os.path.abspath(bindir))
    return env
