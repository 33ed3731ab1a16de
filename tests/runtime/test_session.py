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


# Prints the session's settings as JSON after one stage of 1.5 s (Spark draws
# its console bar for a stage that runs over 0.5 s).
PROBE = (
    "import json, time\n"
    "from covidspark.runtime.session import get_spark, resolve_master\n"
    "master = resolve_master()\n"
    "spark = get_spark('probe')\n"
    "spark.sparkContext.parallelize(range(2), 2).map(lambda x: time.sleep(1.5) or x).count()\n"
    "conf = spark.sparkContext.getConf()\n"
    "heap = spark.sparkContext._jvm.java.lang.Runtime.getRuntime().maxMemory() // 2**20\n"
    "print('HEAP_MB %d' % heap)\n"
    "print('PROBE ' + json.dumps({'resolved': master, 'master': spark.sparkContext.master,\n"
    "    'app': spark.sparkContext.appName,\n"
    "    'partitions': spark.conf.get('spark.sql.shuffle.partitions'),\n"
    "    'reuse': conf.get('spark.python.worker.reuse'),\n"
    "    'log_level': conf.get('spark.log.level')}))\n"
    "spark.stop()\n")


def run_script(command, script, submit_args=None, drop=()):
    """``command script`` without the caller's Spark and covidspark settings (and ``drop``),
    its workers on this Python, stderr a pipe (not a terminal); it must succeed."""
    env = {k: v for k, v in os.environ.items() if k not in (
        "PYSPARK_SUBMIT_ARGS", "COVIDSPARK_SPARK_LOG_LEVEL", "COVIDSPARK_VERBOSE", *drop)}
    env["PYSPARK_PYTHON"] = sys.executable
    if submit_args:
        env["PYSPARK_SUBMIT_ARGS"] = submit_args
    done = subprocess.run([*command, str(script)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def run_probe(tmp_path, command, submit_args=None, get_spark_args="'probe'"):
    """The probe's settings and its stderr, run by ``command``."""
    script = tmp_path / "probe.py"
    script.write_text(PROBE.replace("get_spark('probe')", f"get_spark({get_spark_args})"))
    done = run_script(command, script, submit_args)
    line = next(line for line in done.stdout.splitlines() if line.startswith("PROBE "))
    heap = next(line for line in done.stdout.splitlines() if line.startswith("HEAP_MB "))
    return {**json.loads(line[len("PROBE "):]), "heap_mb": int(heap.split()[1])}, done.stderr


@pytest.mark.subprocess
def test_under_spark_submit_the_master_is_the_one_submitted(tmp_path):
    """spark-submit's JVM holds --master; get_spark reads it there before choosing defaults."""
    probe, stderr = run_probe(tmp_path, [venv_bin("spark-submit"), "--master", "local[1]"])
    del probe["heap_mb"]
    assert probe == {"resolved": "local[1]", "master": "local[1]", "app": "probe",
                     "partitions": "8", "reuse": "true", "log_level": "WARN"}
    assert "[Stage " not in stderr


@pytest.mark.subprocess
def test_settings_given_to_spark_submit_win_over_covidspark_defaults(tmp_path):
    """--conf (and spark-defaults.conf) are the user's word; covidspark's are only defaults."""
    probe, _ = run_probe(tmp_path, [
        venv_bin("spark-submit"), "--master", "local[1]",
        "--conf", "spark.sql.shuffle.partitions=50", "--conf", "spark.python.worker.reuse=false",
        "--conf", "spark.log.level=ERROR", "--name", "nightly-xrays"])
    del probe["heap_mb"]
    assert probe == {"resolved": "local[1]", "master": "local[1]", "app": "nightly-xrays",
                     "partitions": "50", "reuse": "false", "log_level": "ERROR"}


@pytest.mark.subprocess
def test_spark_console_bar_stays_out_of_a_log_unless_asked_for(tmp_path):
    """pyspark starts its JVM as a shell, which draws Spark's bar on stderr, file or not."""
    probe, stderr = run_probe(tmp_path, [sys.executable], "--master local[2] pyspark-shell")
    assert (probe["partitions"], probe["master"], probe["app"]) == ("8", "local[2]", "probe")
    assert "[Stage " not in stderr
    assert probe["heap_mb"] < 1100  # Spark's 1 GB default
    probe, stderr = run_probe(tmp_path, [sys.executable], (
        "--master local[2] --conf spark.ui.showConsoleProgress=true "
        "--conf spark.sql.shuffle.partitions=3 pyspark-shell"))
    assert probe["partitions"] == "3"
    assert "[Stage " in stderr


@pytest.mark.subprocess
def test_the_callers_conf_reaches_the_jvm_it_starts(tmp_path):
    """spark.driver.memory acts only when the JVM starts: get_spark's conf goes with its launch."""
    probe, _ = run_probe(tmp_path, [sys.executable], "--master local[1] pyspark-shell",
                         "'probe', conf={'spark.driver.memory': '1536m', "
                         "'spark.sql.shuffle.partitions': '5'}")
    assert probe["partitions"] == "5"
    assert 1300 < probe["heap_mb"] <= 1536


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


# A task of 3 MB (its partition's data), then the words Spark's DAGScheduler logs
# for a random forest's large task binaries, and a warning of each logger that stays.
LARGE_TASKS = (
    "from covidspark.runtime.session import get_spark\n"
    "sc = get_spark('probe').sparkContext\n"
    "print(sc.parallelize([b'x' * 3 * 2**20], 1).map(len).sum())\n"
    "logs = sc._jvm.org.apache.logging.log4j.LogManager\n"
    "dag = logs.getLogger('org.apache.spark.scheduler.DAGScheduler')\n"
    "dag.warn('Broadcasting large task binary with size 1043.7 KiB')\n"
    "dag.warn('PROBE another DAGScheduler warning')\n"
    "logs.getLogger('org.apache.spark.scheduler.TaskSetManager').warn('PROBE another one')\n")


@pytest.mark.subprocess
def test_large_task_warnings_stay_out_of_a_jobs_log(tmp_path):
    """MLlib's trees ride in every task: Spark warns once per tree level, to no end."""
    script = tmp_path / "large_tasks.py"
    script.write_text(LARGE_TASKS)
    # get_spark gives its own JVM covidspark's log4j2 file only without SPARK_SUBMIT_OPTS.
    done = run_script([sys.executable], script, drop=("SPARK_SUBMIT_OPTS",))
    assert done.stdout.split() == [str(3 * 2**20)]
    assert "contains a task of very large size" not in done.stderr
    assert "Broadcasting large task binary" not in done.stderr
    assert "WARN DAGScheduler: PROBE another DAGScheduler warning" in done.stderr
    assert "WARN TaskSetManager: PROBE another one" in done.stderr


@pytest.mark.subprocess
def test_mllib_does_not_say_it_could_not_open_a_blas_library_that_is_not_there(tmp_path):
    """netlib prints "JNI_OnLoad: dlopen(libblas.so.3) failed" mid-job where none is installed."""
    installed = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True,
                               text=True).stdout
    script = tmp_path / "fit.py"
    script.write_text(
        "from pyspark.ml.classification import LogisticRegression\n"
        "from pyspark.ml.linalg import Vectors\n"
        "from covidspark.runtime.session import get_spark\n"
        "spark = get_spark('blas', master='local[1]')\n"
        "rows = [(float(i % 2), Vectors.dense([i, i * 0.5, 1.0 - i])) for i in range(20)]\n"
        "LogisticRegression(maxIter=5).fit(spark.createDataFrame(rows, ['label', 'features']))\n"
        "print('ALLOW', spark._jvm.java.lang.System.getProperty("
        "'dev.ludovic.netlib.blas.allowNative'))\n")
    done = run_script([sys.executable], script)
    assert "JNI_OnLoad" not in done.stderr
    # Native BLAS stays allowed where the system has it (EMR images with OpenBLAS).
    expected = "None" if "libblas.so.3 " in installed else "false"
    assert f"ALLOW {expected}" in done.stdout
