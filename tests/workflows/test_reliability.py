"""What a killed job leaves behind: the rerun completes it, computing only what is missing."""
import glob
import os
import re
import signal
import subprocess
import time

import numpy as np
import pytest

from conftest import REPO_ROOT, clean_env, venv_bin

pytestmark = pytest.mark.subprocess


def store_rows(run_dirs):
    """(image_id, features) of the Parquet files of run folders, read without Spark."""
    import pyarrow.parquet as pq

    rows = []
    for run in run_dirs:
        for part in sorted(glob.glob(os.path.join(run, "*.parquet"))):
            table = pq.read_table(part).to_pydict()
            for image_id, vector in zip(table["image_id"], table["features"]):
                rows.append((image_id, np.asarray(vector["values"])))
    return rows


def committed(store):
    return sorted(os.path.dirname(m) for m in glob.glob(os.path.join(store, "*", "run-*",
                                                                     "_COMMITTED")))


def test_killed_featurize_job_resumes_computing_only_the_missing_images(spark, tmp_path):
    from covidspark.data.synthetic import synthetic
    from covidspark.ml.featurizer import DeepImageFeaturizer
    from covidspark.ml.feature_store import FeatureStore
    from covidspark.data.reading import read_images

    data = synthetic(str(tmp_path / "xrays"), n_per_class=20, seed=5, min_size=64, max_size=96)
    store = str(tmp_path / "store")
    command = [venv_bin("spark-submit"), "--master", "local[2]",
               os.path.join(REPO_ROOT, "jobs", "featurize.py"), "--data", data,
               "--weights", "random", "--engine", "openvino", "--features", store,
               "--chunk-size", "15"]
    # As a user who did not activate the venv: spark-submit itself must give the
    # workers this environment's Python (else they cannot import covidspark).
    env = clean_env()
    log = open(tmp_path / "killed.log", "w")
    job = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                           start_new_session=True)
    deadline = time.time() + 600
    while not committed(store) and job.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    # Kill the driver, its JVM and Python workers, right after the first chunk commits.
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    kept = committed(store)
    assert 1 <= len(kept) < 4, open(tmp_path / "killed.log").read()[-3000:]
    kept_ids = {image_id for image_id, _ in store_rows(kept)}

    # Every decode in the rerun's Python workers is counted (one byte each).
    from covidspark.data.decoding import COUNT_DECODES_ENV, counted_decodes

    decodes = tmp_path / "decodes"
    decodes.mkdir()
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=900,
                           env={**env, COUNT_DECODES_ENV: str(decodes)})
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    counts = re.search(r"(\d+) images: (\d+) computed, (\d+) reused", rerun.stdout)
    total, computed, reused = map(int, counts.groups())
    assert total == 60 and reused == len(kept_ids) and computed == 60 - len(kept_ids)
    # Stored images are neither decode-checked again nor featurized: two decodes
    # (the ingest check, the network) of each missing image, none of the others.
    assert counted_decodes(str(decodes)) == 2 * computed
    # A quiet console: covidspark's own lines, no Spark INFO start-up log, no native
    # TensorFlow lines (spark-submit got the log4j2 file from `spark-env --write`).
    spark_info = [line for line in rerun.stderr.splitlines()
                  if re.match(r"\d\d/\d\d/\d\d \d\d:\d\d:\d\d INFO ", line)]
    assert not spark_info, spark_info[:5]
    assert "cudart_stub" not in rerun.stderr and "absl::InitializeLog" not in rerun.stderr
    assert "Feature store" in rerun.stderr or "featurize" in rerun.stdout

    # The final store: one row per image, no duplicates, equal to a clean run's.
    final = store_rows(committed(store))
    assert len(final) == 60 and len({i for i, _ in final}) == 60
    featurizer = DeepImageFeaturizer(inputCol="content", modelName="ResNet50", weights="random",
                                     engine="openvino")
    clean, _ = FeatureStore(spark, str(tmp_path / "clean")).featurize(
        read_images(spark, data), featurizer)
    expected = {r.image_id: r.features.toArray() for r in clean.select("image_id",
                                                                         "features").collect()}
    for image_id, vector in final:
        np.testing.assert_allclose(vector, expected[image_id], rtol=1e-4, atol=1e-4)
