"""Fine-tuning under TorchDistributor: Keras on PyTorch, real Spark, real processes.

SmallCNN on the synthetic X-rays, from seeded random weights (no ImageNet
weights here). The references are independent of the code under test: plain
Keras on TensorFlow for the model's outputs and the exported backbone, each
process's own record of the weights it ended with, and an uninterrupted run
for the resumed one.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import scipy.special

from conftest import REPO_ROOT, local_path, require_module, standalone_cluster, venv_bin

pytestmark = [require_module("torch"), pytest.mark.subprocess]

# Short, but every part runs: both phases, augmentation, re-sampling, checkpoints.
RECIPE = dict(modelName="SmallCNN", weights="random", headEpochs=2, headLr=3e-3,
              finetuneEpochs=4, finetuneLr=3e-4, batchSize=8, loaderWorkers=0)

FIT_SCRIPT = """
import json, sys
from pyspark.sql import functions as F
from covidspark.data.reading import read_images
from covidspark.data.splits import split_images
from covidspark.finetune.trainer import ImageClassifierTrainer
from covidspark.runtime.session import get_spark

data, out, recipe = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
spark = get_spark("finetune-test", master="local[2]")
images = read_images(spark, data).filter(F.col("label").isin("covid", "normal"))
split, _ = split_images(images, test_fraction=0.25, validation_fraction=0.15, seed=0)
trainer = ImageClassifierTrainer(outputLocation=out, numProcesses=2, **recipe)
trainer.fit(split)
print("SUMMARY " + json.dumps(trainer.lastFitSummary()))
"""


def _ranks(out):
    folder = os.path.join(out, "ranks")
    return [json.load(open(os.path.join(folder, name))) for name in sorted(os.listdir(folder))]


def _descendants(pid):
    """Every process below ``pid`` (from /proc), whatever session it runs in."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _session(pid):
    try:
        return os.getsid(pid)
    except ProcessLookupError:
        return None


def _alive(pid):
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    from covidspark.data.synthetic import synthetic

    folder = str(tmp_path_factory.mktemp("finetune-data"))
    synthetic(folder, n_per_class=30, seed=0, min_size=128, max_size=256)
    return folder


@pytest.fixture(scope="module")
def fitted(synthetic_dir, tmp_path_factory):
    """An uninterrupted two-process fit in its own driver process."""
    out = str(tmp_path_factory.mktemp("finetune") / "run")
    script = os.path.join(out + "-fit.py")
    with open(script, "w") as f:
        f.write(FIT_SCRIPT)
    done = subprocess.run([sys.executable, script, synthetic_dir, out, json.dumps(RECIPE)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout.split("SUMMARY ", 1)[1].splitlines()[0])
    return out, summary, script


def test_two_processes_train_different_shards_and_end_with_identical_weights(fitted):
    out, summary, _ = fitted
    ranks = _ranks(out)
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["shard_ids_sha256"] != ranks[1]["shard_ids_sha256"]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"] == summary["weights_sha256"]
    counts = summary["counts"]
    assert sum(r["train_images"] for r in ranks) == sum(counts["train"].values())
    assert sum(r["validation_images"] for r in ranks) == sum(counts["validation"].values())
    history = summary["history"]
    assert [h["epoch"] for h in history] == list(range(1, 7))
    assert [h["phase"] for h in history] == ["head"] * 2 + ["finetune"] * 4
    assert all(np.isfinite(h["train_loss"]) and h["val_loss"] is not None for h in history)


def test_the_model_predicts_what_plain_keras_computes_and_loads_in_a_new_session(
        fitted, spark, synthetic_dir):
    """The saved PipelineModel (backbone in the featurizer, head as MLlib LR) against the
    trained Keras network itself, on TensorFlow: softmax of its logits."""
    import keras
    from pyspark.ml import PipelineModel

    from covidspark.data.decoding import decode_image
    from covidspark.data.reading import read_images
    from covidspark.finetune.loop import MODEL_FILE
    from covidspark.models.registry import build_backbone, get_backbone, preprocess_function

    out, summary, _ = fitted
    images = read_images(spark, synthetic_dir).filter("label IN ('covid', 'normal')").limit(12)
    model = PipelineModel.load(os.path.join(out, "model"))
    rows = model.transform(images).select("content", "probability", "predicted_label").collect()

    spec = get_backbone("SmallCNN")
    backbone = build_backbone(spec)
    inputs = keras.Input((spec.input_size, spec.input_size, 3))
    moments = np.load(os.path.join(out, "head.npz"))
    x = keras.layers.Normalization(mean=moments["mean"], variance=moments["variance"],
                                   name="standardise")(backbone(inputs, training=False))
    reference = keras.Model(inputs, keras.layers.Dense(2, name="head")(x))
    reference.load_weights(os.path.join(out, MODEL_FILE))
    pixels = np.stack([decode_image(r.content, spec.input_size) for r in rows])
    logits = np.asarray(reference(preprocess_function(spec)(pixels), training=False))
    # scipy's softmax subtracts the row maximum first: a trained head can give float32 logits
    # past exp's overflow (about 88), where exp(x) / sum(exp(x)) is inf / inf = nan.
    expected = scipy.special.softmax(logits.astype(np.float64), axis=1)
    got = np.array([r.probability.toArray() for r in rows])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    labels = np.array(["normal", "covid"])
    assert [r.predicted_label for r in rows] == list(labels[expected.argmax(1)])
    # Fine-tuned from random weights: not pretrained, in the Spark model and the service's.
    from covidspark.serving.predictor import Predictor

    service = Predictor(os.path.join(out, "model")).weights
    for weights in (model.stages[0].resolvedWeights(), service):
        assert not weights.pretrained and weights.description.endswith(
            "backbone.weights.h5, fine-tuned from random (seed 0) - NOT pretrained ImageNet "
            "weights")


def test_the_exported_backbone_gives_the_same_features_on_every_engine(fitted, spark,
                                                                       synthetic_dir, tmp_path):
    from covidspark.data.reading import read_images
    from covidspark.ml.featurizer import DeepImageFeaturizer

    out, summary, _ = fitted
    backbone = summary["backbone"]
    images = read_images(spark, synthetic_dir).limit(6)
    by_engine = {}
    for engine in ("keras", "openvino"):
        f = DeepImageFeaturizer(inputCol="content", modelName="SmallCNN", weights=backbone,
                                engine=engine)
        by_engine[engine] = {r.image_id: r.features.toArray()
                             for r in f.transform(images).select("image_id", "features").collect()}
    # The torch engine in its own process (a process holds one Keras backend).
    contents = {r.image_id: bytes(r.content) for r in images.select("image_id", "content").collect()}
    np.savez(tmp_path / "in.npz", **{k: np.frombuffer(v, np.uint8) for k, v in contents.items()})
    script = tmp_path / "torch_features.py"  # not torch.py: it would shadow the package
    script.write_text(
        "import sys, numpy as np\n"
        "from covidspark.data.decoding import decode_image\n"
        "from covidspark.models.engines import build_runner\n"
        "from covidspark.models.registry import get_backbone\n"
        "from covidspark.models.weights import resolve_weights\n"
        "spec = get_backbone('SmallCNN')\n"
        "w = resolve_weights('SmallCNN', sys.argv[2])\n"
        "runner = build_runner(spec, w.path, w.weights_id, 'float32', 'torch')\n"
        "data = np.load(sys.argv[1])\n"
        "ids = sorted(data.files)\n"
        "px = np.stack([decode_image(data[i].tobytes(), spec.input_size) for i in ids])\n"
        "np.savez(sys.argv[3], **dict(zip(ids, runner(px))))\n")
    local_backbone = backbone[len("file:"):] if backbone.startswith("file:") else backbone
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "in.npz"), local_backbone,
                           str(tmp_path / "out.npz")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    torch_features = np.load(tmp_path / "out.npz")
    by_engine["torch"] = {k: torch_features[k] for k in torch_features.files}
    ids = sorted(contents)
    reference = np.array([by_engine["keras"][i] for i in ids])
    assert reference.std() > 0
    for engine in ("openvino", "torch"):
        got = np.array([by_engine[engine][i] for i in ids])
        cos = (got * reference).sum(1) / (np.linalg.norm(got, axis=1)
                                          * np.linalg.norm(reference, axis=1))
        assert cos.min() >= 0.9999, (engine, cos)


def test_a_killed_fit_resumes_from_its_last_checkpoint_and_ends_as_an_uninterrupted_one(
        fitted, synthetic_dir, tmp_path):
    out_ref, summary, script = fitted
    out = str(tmp_path / "killed")
    command = [sys.executable, script, synthetic_dir, out, json.dumps(RECIPE)]
    latest = os.path.join(out, "checkpoints", "latest.json")
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and first.poll() is None:
        if os.path.exists(latest) and json.load(open(latest))["epoch"] >= 1:
            break
        time.sleep(0.02)
    assert first.poll() is None, "the fit ended before it could be killed"
    # Kill the driver's process group only (what a cancelled job does). torchrun
    # starts each rank in a session of its own, out of that group: the ranks must
    # die with their agent (PR_SET_PDEATHSIG), not train on.
    ranks = [pid for pid in _descendants(first.pid) if _session(pid) not in (first.pid, None)]
    assert ranks, "no training process found outside the driver's session"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    survivors = ranks
    for _ in range(150):
        survivors = [pid for pid in survivors if _alive(pid)]
        if not survivors:
            break
        time.sleep(0.2)
    for pid in survivors:  # leave nothing behind even when the assertion fails
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"training processes outlived the killed driver: {survivors}"
    time.sleep(1)
    killed_at = json.load(open(latest))["epoch"]
    assert killed_at < 5, "killed after the last epoch: nothing left to resume"

    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"resuming from the checkpoint of epoch {killed_at + 1}" in done.stdout + done.stderr
    resumed = json.loads(done.stdout.split("SUMMARY ", 1)[1].splitlines()[0])
    assert [h["epoch"] for h in resumed["history"]] == list(range(1, 7))
    # Same data order, augmentation and optimizer state: the same weights, bit for bit.
    assert resumed["weights_sha256"] == summary["weights_sha256"]
    for a, b in zip(resumed["history"], summary["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)


@pytest.mark.cluster
def test_the_finetune_job_trains_on_two_executors_of_a_standalone_cluster(tmp_path):
    state = tmp_path / "standalone"
    state.mkdir()
    out = tmp_path / "cluster-run"
    with standalone_cluster(state, 2, 1, "3g") as (master, env):
        done = subprocess.run(
            [venv_bin("spark-submit"), "--master", master, "--total-executor-cores", "2",
             "--executor-cores", "1", "--executor-memory", "1g",
             os.path.join(REPO_ROOT, "jobs", "finetune.py"), "--model", "SmallCNN",
             "--weights", "random", "--synthetic-per-class", "12", "--synthetic-dir",
             str(tmp_path / "syn"), "--head-epochs", "1", "--finetune-epochs", "1",
             "--batch-size", "8", "--loader-workers", "0", "--num-processes", "2", "--cluster",
             "--bootstrap", "50", "--out", str(out)],
            capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = _ranks(str(out))
    assert len(ranks) == 2 and ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    assert ranks[0]["shard_ids_sha256"] != ranks[1]["shard_ids_sha256"]
    run = json.loads((out / "metrics.json").read_text())
    assert run["classifier"] == "fine-tuned" and run["finetuning"]["processes"] == 2
    assert [h["epoch"] for h in run["finetuning"]["history"]] == [1, 2]
    assert "learning_curves.png" in run["plots"] and (out / "learning_curves.png").exists()
    assert run["metrics"]["n"] == run["counts"]["test"] > 0
    # The images it was fitted on, kept with the model for evaluate (--seen).
    seen = pd.read_parquet(os.path.join(local_path(run["model_dir"]), "training_images"))
    assert len(seen) == run["counts"]["train"] + run["counts"].get("validation", 0) > 0
    assert run["baseline"]["verdict"]
    report = (out / "report.md").read_text()
    assert "## Fine-tuning" in report and "NOT pretrained" in report
