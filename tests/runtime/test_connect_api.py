"""The helpers that differ between classic and Spark Connect sessions; run in both passes."""
import os

import pytest

from conftest import CONNECT_URL
from covidspark.runtime.connect import (ImageCounter, default_parallelism, is_connect, master,
                                        set_job_description, ship_file)


def test_the_session_is_the_kind_this_pass_asks_for(spark):
    assert is_connect(spark) == bool(CONNECT_URL)
    assert master(spark).startswith("local")
    assert default_parallelism(spark) >= 1


def test_a_shipped_file_is_read_on_the_executors(spark, tmp_path):
    from pyspark.sql import functions as F

    path = tmp_path / f"shipped-{os.getpid()}.txt"
    path.write_text("weights")
    name = ship_file(spark, str(path))
    assert ship_file(spark, str(path)) == name  # once per session

    @F.udf("string")
    def read_shipped(shipped_name):
        from pyspark import SparkFiles

        with open(SparkFiles.get(shipped_name)) as f:
            return f.read()

    # A second, different file of the same name (two fine-tuned models'
    # backbone.weights.h5) ships under its own name; the first stays readable.
    other = tmp_path / "other"
    other.mkdir()
    (other / path.name).write_text("different")
    other_name = ship_file(spark, str(other / path.name))
    assert other_name != name and other_name.endswith(path.name)
    assert ship_file(spark, str(other / path.name)) == other_name
    names = spark.createDataFrame([(name,), (other_name,)], "name string")
    read = {r[0]: r[1] for r in names.select("name", read_shipped("name")).collect()}
    assert read == {name: "weights", other_name: "different"}


def test_the_image_counter_counts_the_rows_of_an_action(spark):
    counter = ImageCounter(spark)
    set_job_description(spark, "count, 17 rows")
    frame = counter.observe(spark.range(17))
    if counter.accumulator is not None:
        from pyspark.sql import functions as F

        accumulator = counter.accumulator

        @F.udf("long")
        def counted(x):
            accumulator.add(1)
            return x

        frame = frame.select(counted("id"))
    assert counter.value == 0
    assert len(frame.collect()) == 17  # collect: a count would prune the UDF away
    assert counter.value == 17


@pytest.mark.skipif(not CONNECT_URL, reason="needs the Connect pass's server")
def test_a_command_given_remote_runs_on_that_server_without_spark_remote(fixture_dir, tmp_path):
    """``--remote sc://...`` (spark-submit's flag) reaches the server; SPARK_REMOTE is unset."""
    import json
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_REMOTE", "PYSPARK_GATEWAY_PORT")}
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "covidspark.cli", "datasets", "describe",
                           fixture_dir, "--remote", CONNECT_URL, "--json", str(report)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(report.read_text())["images"] == 18


@pytest.mark.skipif(not CONNECT_URL, reason="needs the Connect pass's server")
def test_spark_submit_remote_reaches_get_spark(tmp_path):
    """spark-submit --remote sets no SPARK_REMOTE; pyspark's own builder then asks for a master."""
    import subprocess

    from conftest import venv_bin

    script = tmp_path / "probe.py"
    script.write_text("from covidspark.runtime.session import get_spark\n"
                      "from covidspark.runtime.connect import is_connect\n"
                      "spark = get_spark('probe')\n"
                      "print('PROBE', is_connect(spark), spark.range(7).count())\n")
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_REMOTE", "PYSPARK_GATEWAY_PORT")}
    done = subprocess.run([venv_bin("spark-submit"), "--remote", CONNECT_URL, str(script)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "PROBE True 7" in done.stdout
