"""The jobs against a real Spark standalone cluster: one master, two workers, on localhost."""
import glob
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT, run_command, standalone_cluster, venv_bin

pytestmark = [pytest.mark.cluster, pytest.mark.subprocess]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("standalone")
    with standalone_cluster(state, 2, 1, "3g") as (master, env):
        yield master, state, env


def _submit(master, env, job, *args):
    result = subprocess.run(
        [venv_bin("spark-submit"), "--master", master, "--total-executor-cores", "2",
         "--executor-cores", "1", "--executor-memory", "1g",
         os.path.join(REPO_ROOT, "jobs", job), *args],
        capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_featurize_and_train_on_two_workers_equal_local_mode(cluster, fixture_dir, tmp_path,
                                                             spark, images_df):
    from covidspark.ml.featurizer import DeepImageFeaturizer
    from covidspark.ml.feature_store import FeatureStore

    master, state, env = cluster
    store = str(tmp_path / "store")
    # SmallCNN: the cluster's features equal local mode's whatever the backbone (ResNet50
    # runs on the cluster in test_featurize_survives_a_killed_executor). OpenVINO: the
    # executors and the suite's workers share the converted model's disk cache (same
    # host, same COVIDSPARK_CACHE), as a real cluster's later jobs do.
    out = tmp_path / "cluster-run"
    train_flags = ["--data", fixture_dir, "--task", "3class", "--model", "SmallCNN",
                   "--weights", "random",
                   "--engine", "openvino",
                   "--features", store, "--bootstrap", "0", "--no-baseline",
                   "--duplicates", "ignore"]
    _submit(master, env, "train_lr.py", *train_flags, "--out", str(out))

    # The cluster's features are the local-mode features of the same images.
    featurizer = DeepImageFeaturizer(inputCol="content", modelName="SmallCNN", weights="random",
                                     engine="openvino")
    stored = FeatureStore(spark, store).read(featurizer.featureSignature())
    local = {r.path: r.features.toArray()
             for r in featurizer.transform(images_df).select("path", "features").collect()}
    paths = {r.image_id: r.path for r in spark.read.format("binaryFile").load(
        f"{fixture_dir}/*/*").selectExpr("sha2(content, 256) AS image_id", "path").collect()}
    rows = stored.collect()
    assert len(rows) == 18
    for r in rows:
        np.testing.assert_allclose(r.features.toArray(), local[paths[r.image_id]],
                                   rtol=1e-4, atol=1e-4)

    # The same training run in local mode gives the same split, model and metrics.
    local_run = run_command(["train", *train_flags, "--out", str(tmp_path / "local-run")])
    cluster_run = json.loads((out / "metrics.json").read_text())
    assert cluster_run["environment"]["master"] == master
    # Local-mode defaults stay local: the cluster run kept Spark's own partition count.
    assert cluster_run["environment"]["shuffle_partitions"] == 200
    assert local_run["environment"]["shuffle_partitions"] == 8
    assert cluster_run["counts"] == local_run["counts"]
    assert cluster_run["metrics"]["confusion_matrix"]["counts"] == \
        local_run["metrics"]["confusion_matrix"]["counts"]
    assert cluster_run["metrics"]["roc_auc"] == pytest.approx(local_run["metrics"]["roc_auc"])
    assert cluster_run["feature_store"]["computed"] == 18  # all of them, on the cluster
    assert local_run["feature_store"]["computed"] == 0  # local mode reused the cluster's
    # Workers ran this environment's Python (cluster.sh passes PYSPARK_PYTHON on).
    assert cluster_run["environment"]["worker_python"] == sys.executable

    # Both workers ran tasks (executor logs under each worker's work dir).
    for worker in ("worker-1", "worker-2"):
        logs = glob.glob(str(state / worker / "app-*" / "*" / "stderr"))
        assert any("Running task" in open(log).read() for log in logs), worker


def _executor_jvms(state):
    """PIDs of this cluster's executor JVMs (they run in its workers' folders under ``state``).

    Another test's cluster may run beside this one (pytest -n): its executors are
    not this test's to kill.
    """
    pids = []
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(cmdline, "rb") as f:
                if b"CoarseGrainedExecutorBackend" not in f.read():
                    continue
            pid = int(cmdline.split("/")[2])
            if os.readlink(f"/proc/{pid}/cwd").startswith(str(state)):
                pids.append(pid)
        except OSError:
            pass
    return sorted(pids)


def _descendants(pid):
    """Every process below ``pid`` (the executor's Python daemon and workers)."""
    children = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
        except (OSError, IndexError, ValueError):
            pass
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def test_featurize_survives_a_killed_executor(cluster, spark, tmp_path):
    """Kill one executor JVM mid-stage: the job completes, one row per image, clean features.

    Relies on Spark's defaults: the tasks of a lost executor are rerun elsewhere
    (spark.task.maxFailures=4 attempts), the standalone master starts a
    replacement executor, and the feature store's write commits each task once.
    """
    import signal
    import time

    from covidspark.data.synthetic import synthetic
    from covidspark.ml.featurizer import DeepImageFeaturizer
    from covidspark.data.reading import read_images
    from test_reliability import committed, store_rows

    master, state, env = cluster
    data = synthetic(str(tmp_path / "xrays"), n_per_class=80, seed=9, min_size=48, max_size=64)
    store = str(tmp_path / "store")
    before = set(_executor_jvms(state))
    log = open(tmp_path / "job.log", "w")
    job = subprocess.Popen(
        [venv_bin("spark-submit"), "--master", master, "--total-executor-cores", "2",
         "--executor-cores", "1", "--executor-memory", "1g",
         os.path.join(REPO_ROOT, "jobs", "featurize.py"), "--data", data, "--weights", "random",
         "--engine", "openvino", "--features", store, "--batch-size", "8"],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    victim, deadline = None, time.time() + 300
    while victim is None and job.poll() is None and time.time() < deadline:
        time.sleep(0.2)
        if "Feature store: computing" not in open(tmp_path / "job.log").read():
            continue  # still ingesting
        for pid in set(_executor_jvms(state)) - before:
            # Its Python worker is running the network: the stage is under way.
            if len(_descendants(pid)) >= 2:
                time.sleep(3)
                victim = pid
                break
    assert victim is not None, open(tmp_path / "job.log").read()[-3000:]
    os.kill(victim, signal.SIGKILL)
    assert job.wait(timeout=900) == 0, open(tmp_path / "job.log").read()[-4000:]
    output = open(tmp_path / "job.log").read()
    assert re.search(r"Lost executor|Executor lost|ExecutorLost|Removed executor", output), \
        output[-3000:]
    assert "240 images: 240 computed, 0 reused" in output
    # The executor died while featurizing: the features stage lost a task.
    featurize_stage = output[output.index("Feature store: computing"):]
    assert re.search(r"Lost executor|Lost task", featurize_stage), featurize_stage[-3000:]

    rows = store_rows(committed(store))
    assert len(rows) == 240 and len({image_id for image_id, _ in rows}) == 240
    featurizer = DeepImageFeaturizer(inputCol="content", modelName="ResNet50", weights="random",
                                     engine="openvino")
    images = read_images(spark, data)
    clean = {r.image_id: r.features.toArray()
             for r in featurizer.transform(images).select("image_id", "features").collect()}
    for image_id, vector in rows:
        np.testing.assert_allclose(vector, clean[image_id], rtol=1e-4, atol=1e-4)


def test_synthetic_data_on_a_cluster_needs_a_folder_the_executors_read(cluster, tmp_path):
    """Without --data the job would write the synthetic set on the driver's disk: refused."""
    master, _, env = cluster
    result = subprocess.run(
        [venv_bin("spark-submit"), "--master", master, "--total-executor-cores", "1",
         os.path.join(REPO_ROOT, "jobs", "train_lr.py"), "--weights", "random",
         "--out", str(tmp_path / "run")],
        capture_output=True, text=True, env=env, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "--synthetic-dir" in output and f"cluster ({master})" in output
    # Refused before any work: --out (checked writable first) holds nothing.
    assert not [n for _, _, names in os.walk(tmp_path / "run") for n in names]
