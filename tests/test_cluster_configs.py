"""Every cluster configuration parses, names real jobs and real Spark settings."""
import glob
import json
import os
import re

import pytest
import yaml

from conftest import REPO_ROOT

CONFIGS = os.path.join(REPO_ROOT, "cluster_configs")
DATABRICKS_RUNTIME = re.compile(r"^\d+\.\d+\.x-(cpu-ml|gpu-ml)-scala2\.1[23]$")
# Settings Spark accepts by pattern rather than by a registered entry.
SPARK_KEY_PATTERNS = [re.compile(p) for p in (
    r"^spark\.executorEnv\.\w+$",
    r"^spark\.yarn\.appMasterEnv\.\w+$",
    r"^spark\.(executor|driver)\.resource\.\w+\.(amount|discoveryScript|vendor)$",
    r"^spark\.task\.resource\.\w+\.amount$",
)]


def _files(*patterns):
    return sorted(f for p in patterns for f in glob.glob(os.path.join(CONFIGS, "**", p),
                                                        recursive=True))


def _load(path):
    with open(path) as f:
        return json.load(f) if path.endswith(".json") else yaml.safe_load(f)


def _spark_settings(document, path):
    """Every ``spark.*`` key of a config file, wherever it sits."""
    if path.endswith(".conf"):
        with open(path) as f:
            return [line.split()[0] for line in f if line.strip() and not line.startswith("#")]
    keys = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and key.startswith("spark."):
                    keys.append(key)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
    walk(document)
    return keys


def test_every_config_file_parses():
    files = _files("*.json", "*.yml", "*.yaml")
    assert len(files) >= 5
    for path in files:
        assert _load(path) is not None, path


#: Databricks' names for dedicated (single user) access; USER_ISOLATION / STANDARD are Connect.
DEDICATED_ACCESS_MODES = {"SINGLE_USER", "DATA_SECURITY_MODE_DEDICATED"}


@pytest.mark.parametrize("path", _files("databricks/*.json"), ids=os.path.basename)
def test_databricks_cluster_specs(path):
    spec = _load(path)
    for key in ("cluster_name", "spark_version", "node_type_id", "num_workers", "spark_conf"):
        assert key in spec, f"{path}: {key} missing"
    assert DATABRICKS_RUNTIME.match(spec["spark_version"]), spec["spark_version"]
    assert spec["spark_conf"]["spark.python.worker.reuse"] == "true"
    # Classic Spark (SparkContext, RDDs) needs dedicated access; standard access is Spark Connect.
    assert spec["data_security_mode"] in DEDICATED_ACCESS_MODES, spec.get("data_security_mode")
    if "gpu" in spec["spark_version"]:
        # One task per GPU (the engine holds one model per GPU per worker), with the
        # node's cores for decoding: g5.xlarge has 1 GPU and 4 vCPUs.
        assert spec["spark_conf"]["spark.task.resource.gpu.amount"] == "1"
        assert spec["spark_conf"]["spark.task.cpus"] == "4"
        assert spec["spark_env_vars"]["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"


def test_databricks_bundle_builds_the_wheel_and_runs_existing_jobs():
    folder = os.path.join(CONFIGS, "databricks")
    bundle = _load(os.path.join(folder, "databricks.yml"))
    assert bundle["bundle"]["name"] == "covidspark"
    wheel = bundle["artifacts"]["covidspark_wheel"]
    assert wheel["type"] == "whl"
    assert os.path.exists(os.path.join(folder, wheel["path"], "setup.py"))
    jobs = bundle["resources"]["jobs"]
    assert {"covidspark_featurize", "covidspark_compare", "covidspark_notebook"} <= set(jobs)
    notebooks = 0
    for job in jobs.values():
        clusters = {c["job_cluster_key"]: c["new_cluster"] for c in job["job_clusters"]}
        for task in job["tasks"]:
            assert DATABRICKS_RUNTIME.match(clusters[task["job_cluster_key"]]["spark_version"])
            assert clusters[task["job_cluster_key"]]["data_security_mode"] in DEDICATED_ACCESS_MODES
            assert any("whl" in lib for lib in task["libraries"])
            if "notebook_task" in task:
                # The notebook exists and defines a widget for every parameter passed.
                notebook = os.path.normpath(os.path.join(
                    folder, task["notebook_task"]["notebook_path"]))
                with open(notebook) as f:
                    source = f.read()
                for name in task["notebook_task"]["base_parameters"]:
                    assert f'dbutils.widgets.text("{name}"' in source or \
                        f'dbutils.widgets.dropdown("{name}"' in source, (notebook, name)
                notebooks += 1
                continue
            script = os.path.normpath(os.path.join(folder, task["spark_python_task"]["python_file"]))
            assert os.path.exists(script), script
            # Every flag the task passes is one the job accepts.
            from covidspark.cli import build_parser

            command = {"featurize.py": "featurize", "compare.py": "compare"}[os.path.basename(script)]
            defaults = {name: v["default"] for name, v in bundle["variables"].items()}
            values = [re.sub(r"\$\{var\.(\w+)\}", lambda m: str(defaults[m.group(1)]), str(v))
                      for v in task["spark_python_task"]["parameters"]]
            build_parser().parse_args([command, *values])
    assert notebooks == 1


def test_emr_configurations_schedule_gpus():
    folder = os.path.join(CONFIGS, "emr")
    config = {c["Classification"]: c for c in _load(os.path.join(folder, "configurations.json"))}
    yarn = config["yarn-site"]["Properties"]
    assert yarn["yarn.nodemanager.resource-plugins"] == "yarn.io/gpu"
    assert config["capacity-scheduler"]["Properties"][
        "yarn.scheduler.capacity.resource-calculator"].endswith("DominantResourceCalculator")
    nested = {c["Classification"]: c["Properties"] for c in config["container-executor"]["Configurations"]}
    assert nested["gpu"]["module.enabled"] == "true"
    spark = config["spark-defaults"]["Properties"]
    assert spark["spark.executor.resource.gpu.discoveryScript"].endswith("getGpusResources.sh")
    # One task per GPU, all the executor's cores for it, workers (and models) reused.
    assert spark["spark.executor.resource.gpu.amount"] == spark["spark.task.resource.gpu.amount"]
    assert spark["spark.task.cpus"] == spark["spark.executor.cores"]
    assert spark["spark.python.worker.reuse"] == "true"
    # GPU nodes get the torch engine's extra; the steps let each node pick its engine.
    with open(os.path.join(folder, "bootstrap.sh")) as f:
        bootstrap = f.read()
    assert 'EXTRA="torch"' in bootstrap and '${WHEEL}[${EXTRA}]' in bootstrap
    featurize_step = _load(os.path.join(folder, "steps.json"))[0]["Args"]
    assert featurize_step[featurize_step.index("--engine") + 1] == "auto"
    assert os.access(os.path.join(folder, "getGpusResources.sh"), os.X_OK)
    for script in ("bootstrap.sh", "create-cluster.sh"):
        assert os.access(os.path.join(folder, script), os.X_OK), script
    for step in _load(os.path.join(folder, "steps.json")):
        jobs = [a for a in step["Args"] if a.endswith(".py")]
        assert jobs and all(os.path.exists(os.path.join(REPO_ROOT, "jobs", os.path.basename(j)))
                            for j in jobs), step["Name"]
        # The cluster auto-terminates: every output goes to S3, none to a node's disk.
        args = step["Args"]
        for flag in ("--out", "--features", "--heatmaps"):
            if flag in args:
                assert args[args.index(flag) + 1].startswith("s3://"), (step["Name"], flag)


def test_every_spark_key_is_a_real_spark_setting(spark):
    jvm = spark.sparkContext._jvm
    # Touch the config objects so that their entries are registered.
    spark.conf.get("spark.sql.shuffle.partitions")
    find = jvm.org.apache.spark.internal.config.ConfigEntry.findEntry
    files = _files("*.json", "*.yml", "*.yaml", "*.conf")
    unknown = []
    for path in files:
        document = None if path.endswith(".conf") else _load(path)
        for key in _spark_settings(document, path):
            if find(key) is None and not any(p.match(key) for p in SPARK_KEY_PATTERNS):
                unknown.append(f"{os.path.relpath(path, CONFIGS)}: {key}")
    assert not unknown, unknown
