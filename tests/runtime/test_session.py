"""How get_spark decides between a laptop's defaults and a cluster's settings."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, venv_bin
from covidspark.runtime.session import is_local_master, resolve_master


@pytest.mark.parametrize("master, local", [
    ("local", True), ("local[2]", True), ("local[*]", True), ("local-cluster[2,1,1024]", True),
    ("yarn", False), ("spark://10.0.0.1:7077", False), ("k8s://https://api:6443", False),
])
def test_only_local_masters_count_as_local(master, local):
    assert is_local_master(master) is local


def test_master_comes_from_the_argument_then_pyspark_submit_args(monkeypatch):
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    monkeypatch.setenv("PYSPARK_SUBMIT_ARGS", "--master yarn --deploy-mode client pyspark-shell")
    assert resolve_master("spark://h:7077") == "spark://h:7077"
    assert resolve_master() == "yarn"
    monkeypatch.delenv("PYSPARK_SUBMIT_ARGS")
    assert resolve_master() == "local[*]"


@pytest.mark.subprocess
def test_under_spark_submit_the_master_is_the_one_submitted(tmp_path):
    """spark-submit's JVM holds --master; get_spark reads it there before choosing defaults."""
    script = tmp_path / "probe.py"
    script.write_text(
        "import json, os\n"
        "from covidspark.runtime.session import get_spark, resolve_master\n"
        "master = resolve_master()\n"
        "spark = get_spark('probe')\n"
        "print('PROBE ' + json.dumps({'resolved': master, 'master': spark.sparkContext.master,\n"
        "    'partitions': spark.conf.get('spark.sql.shuffle.partitions')}))\n"
        "spark.stop()\n")
    env = {k: v for k, v in os.environ.items() if k != "PYSPARK_SUBMIT_ARGS"}
    env["PYSPARK_PYTHON"] = sys.executable
    done = subprocess.run([venv_bin("spark-submit"), "--master", "local[1]", str(script)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("PROBE "))
    probe = json.loads(line[len("PROBE "):])
    assert probe == {"resolved": "local[1]", "master": "local[1]", "partitions": "8"}


def test_a_temporary_setting_is_restored_also_after_an_error(spark):
    from covidspark.runtime.session import temporary_conf

    key = "spark.sql.sources.parallelPartitionDiscovery.parallelism"
    spark.conf.unset(key)
    default = spark.conf.get(key)  # Spark's own default, 10000
    with temporary_conf(spark, key, 8):
        assert spark.conf.get(key) == "8"
    assert spark.conf.get(key) == default
    spark.conf.set(key, "77")
    with pytest.raises(RuntimeError):
        with temporary_conf(spark, key, 8):
            assert spark.conf.get(key) == "8"
            raise RuntimeError("the block fails")
    assert spark.conf.get(key) == "77"
    spark.conf.unset(key)
