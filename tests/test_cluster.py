"""The jobs against a real Spark standalone cluster: one master, two workers, on localhost."""
import glob
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT, venv_bin

pytestmark = [pytest.mark.cluster, pytest.mark.subprocess]

CLUSTER_SH = os.path.join(REPO_ROOT, "cluster_configs", "standalone", "cluster.sh")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("standalone")
    env = {**os.environ, "COVIDSPARK_CLUSTER_DIR": str(state), "PYSPARK_PYTHON": sys.executable,
           "SPARK_MASTER_PORT": str(_free_port()), "SPARK_MASTER_WEBUI_PORT": str(_free_port())}
    try:
        started = subprocess.run(["bash", CLUSTER_SH, "start", "2", "1", "3g"], env=env,
                                 capture_output=True, text=True, timeout=240)
        assert started.returncode == 0, started.stderr + "".join(
            open(f).read()[-2000:] for f in glob.glob(str(state / "*.log")))
        yield started.stdout.strip().splitlines()[-1], state, env
    finally:
        subprocess.run(["bash", CLUSTER_SH, "stop"], env=env, timeout=120)
    assert "running" not in subprocess.run(["bash", CLUSTER_SH, "status"], env=env,
                                           capture_output=True, text=True).stdout


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
    from covidspark.cli import build_parser
    from covidspark.featurizer import DeepImageFeaturizer
    from covidspark.features import FeatureStore

    master, state, env = cluster
    store = str(tmp_path / "store")
    # OpenVINO: the executors read the model the suite's workers cached on local disk
    # (same host, same COVIDSPARK_CACHE), as a real cluster's later jobs do.
    _submit(master, env, "featurize.py", "--data", fixture_dir, "--weights", "random",
            "--engine", "openvino", "--features", store)
    out = tmp_path / "cluster-run"
    train_flags = ["--data", fixture_dir, "--weights", "random", "--engine", "openvino",
                   "--features", store, "--bootstrap", "0", "--no-baseline",
                   "--duplicates", "ignore"]
    _submit(master, env, "train_lr.py", *train_flags, "--out", str(out))

    # The cluster's features are the local-mode features of the same images.
    featurizer = DeepImageFeaturizer(inputCol="content", modelName="ResNet50", weights="random",
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
    args = build_parser().parse_args(["train", *train_flags, "--out", str(tmp_path / "local-run")])
    local_run = args.func(args)
    cluster_run = json.loads((out / "metrics.json").read_text())
    assert cluster_run["environment"]["master"] == master
    assert cluster_run["counts"] == local_run["counts"]
    assert cluster_run["metrics"]["confusion_matrix"]["counts"] == \
        local_run["metrics"]["confusion_matrix"]["counts"]
    assert cluster_run["metrics"]["roc_auc"] == pytest.approx(local_run["metrics"]["roc_auc"])
    assert cluster_run["feature_store"]["computed"] == 0  # train reused the cluster's features

    # Both workers ran tasks (executor logs under each worker's work dir).
    for worker in ("worker-1", "worker-2"):
        logs = glob.glob(str(state / worker / "app-*" / "*" / "stderr"))
        assert any("Running task" in open(log).read() for log in logs), worker
