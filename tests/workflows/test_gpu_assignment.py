"""One GPU per task, on a standalone cluster whose worker declares two (made-up) GPUs.

The worker's discovery script reports GPU addresses "3" and "5" (no GPU is
needed: Spark only hands the addresses out). The executor runs two tasks at a
time, one per GPU, on reused Python workers. Jobs of two tasks whose finishing
order alternates make the idle Python workers swap GPUs from one job to the
next, so one worker process sees tasks of both GPUs: the device each task picks
must be its own assignment, not the first one its worker saw.
"""
import json
import stat
import subprocess
import textwrap

import pytest

from conftest import standalone_cluster, venv_bin

pytestmark = [pytest.mark.cluster, pytest.mark.subprocess]

FAKE_GPUS = ["3", "5"]

RECORD_DEVICES = textwrap.dedent('''
    import json, os, sys, time

    from pyspark import TaskContext
    from pyspark.sql import SparkSession

    def record(batches):
        import pandas as pd

        from covidspark.models.devices import task_device

        for batch in batches:
            context = TaskContext.get()
            job = int(batch["id"].iloc[0]) // 2
            # Which task of the pair finishes first alternates from job to job.
            time.sleep(0.8 if (job + context.partitionId()) % 2 else 0.05)
            gpus = context.resources().get("gpu")
            device = task_device()
            yield pd.DataFrame({
                "job": [job], "pid": [os.getpid()],
                "assigned": [",".join(gpus.addresses) if gpus else ""],
                "device": [device.address or device.kind],
                "ordinal": [-1 if device.ordinal is None else device.ordinal]})

    spark = SparkSession.builder.appName("gpu-assignment").getOrCreate()
    schema = "job int, pid long, assigned string, device string, ordinal long"
    rows = [row for job in range(12)
            for row in spark.range(2 * job, 2 * job + 2, numPartitions=2)
            .mapInPandas(record, schema).collect()]
    result = {"tasks": [r.asDict() for r in rows]}
    if sys.argv[2] == "featurize":
        # The featurizer on a task given a GPU that TensorFlow cannot see (there is none
        # here): it must refuse, not quietly run on the CPU.
        from covidspark.ml.featurizer import DeepImageFeaturizer

        images = spark.read.format("binaryFile").load(sys.argv[3] + "/*/*").limit(2)
        try:
            DeepImageFeaturizer(inputCol="content", modelName="ResNet50", weights="random",
                                engine="keras").transform(images).collect()
            result["featurize"] = "ran"
        except Exception as error:  # the executor's error, as Spark reports it
            result["featurize"] = str(error)
    with open(sys.argv[1], "w") as f:
        json.dump(result, f)
''')


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("gpu-standalone")
    discovery = state / "fake-gpus.sh"
    discovery.write_text("#!/usr/bin/env bash\n"
                         f"echo '{json.dumps({'name': 'gpu', 'addresses': FAKE_GPUS})}'\n")
    discovery.chmod(discovery.stat().st_mode | stat.S_IXUSR)
    worker_opts = (f"-Dspark.worker.resource.gpu.amount={len(FAKE_GPUS)} "
                   f"-Dspark.worker.resource.gpu.discoveryScript={discovery}")
    with standalone_cluster(state, 1, 2, "3g", SPARK_WORKER_OPTS=worker_opts) as (master, env):
        yield master, env


def _submit(master, env, tmp_path, *conf, featurize=None):
    script = tmp_path / "record_devices.py"
    script.write_text(RECORD_DEVICES)
    out = tmp_path / "devices.json"
    flags = [item for key_value in conf for item in ("--conf", key_value)]
    args = [str(out), "featurize", featurize] if featurize else [str(out), "devices"]
    result = subprocess.run(
        [venv_bin("spark-submit"), "--master", master, "--executor-cores", "2",
         "--executor-memory", "1500m", "--conf", "spark.python.worker.reuse=true",
         "--conf", "spark.task.maxFailures=1", *flags, str(script), *args],
        capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(out.read_text())


def test_each_task_uses_the_gpu_spark_assigned_to_it(gpu_cluster, tmp_path, fixture_dir):
    master, env = gpu_cluster
    result = _submit(master, env, tmp_path, "spark.executor.resource.gpu.amount=2",
                     "spark.task.resource.gpu.amount=1", featurize=fixture_dir)
    tasks = result["tasks"]
    assert len(tasks) == 24
    for task in tasks:
        assert task["assigned"] in FAKE_GPUS, task
        assert task["device"] == task["assigned"], task
        # No CUDA_VISIBLE_DEVICES on this worker: the address is the CUDA index.
        assert task["ordinal"] == int(task["assigned"]), task
    assert {t["assigned"] for t in tasks} == set(FAKE_GPUS)
    # The case that a per-process choice gets wrong did happen: one reused Python
    # worker ran tasks on both GPUs.
    per_worker = {}
    for task in tasks:
        per_worker.setdefault(task["pid"], set()).add(task["device"])
    assert any(len(devices) == 2 for devices in per_worker.values()), per_worker
    # The featurizer on an assigned GPU that does not exist says so, naming the address.
    assert "DeviceAssignmentError" in result["featurize"], result["featurize"][-2000:]
    assert "Spark assigned GPU" in result["featurize"]


def test_a_task_without_gpu_resources_runs_on_the_cpu_of_a_gpu_host(gpu_cluster, tmp_path):
    master, env = gpu_cluster
    tasks = _submit(master, env, tmp_path)["tasks"]
    assert len(tasks) == 24
    assert all(t["assigned"] == "" and t["device"] == "cpu" and t["ordinal"] == -1
               for t in tasks), tasks
