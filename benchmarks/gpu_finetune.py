"""Fine-tuning's training step on one device, without Spark: throughput and test metrics.

What each ``torchrun`` process of ``covidspark finetune`` runs
(:func:`covidspark.finetune.loop.train_process`), started here by this script
itself under ``torchrun`` (one process per GPU) on the image table that
:func:`covidspark.finetune.shards.write_shards` writes on Spark, here written
with pyarrow. Starting weights are **seeded random, not ImageNet** (nothing is
downloaded). Two stages, one JSON:

- ``throughput``: the training images repeated ``--repeat`` times (distinct
  ids), one head epoch and ``--throughput-epochs`` epochs of the whole
  network at ``--throughput-batch``; training images/s per process from the
  loop's own history (``train_images_per_s``: steps and loader, not
  validation), the last epoch's being the steady one.
- ``fit``: the real split (patient groups of ``patients.csv``, duplicate pairs
  of ``duplicates.csv`` kept in one group; 70/10/20 by group, per class,
  seeded), the recipe of the flags with early stopping on the validation
  share, then the test images through the fitted network (its backbone on the
  torch engine, then the folded softmax head: what the saved PipelineModel
  computes), beside two references on the same split: features of the same
  starting weights + logistic regression (scikit-learn, standardised), and the
  32x32-pixel baseline (the same). Accuracy, macro F1 and ROC-AUC with
  bootstrap intervals (:mod:`covidspark.evaluation.metrics`).

    torchrun --standalone --nproc_per_node 1 benchmarks/gpu_finetune.py \\
        --data ../shared/data/ozturk --json finetune.json
    # a quick CPU check
    python benchmarks/gpu_finetune.py --data ../shared/data/ozturk --model SmallCNN \\
        --repeat 1 --head-epochs 1 --finetune-epochs 1 --throughput-epochs 1 --limit 120
"""
import argparse
import csv
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time

import numpy as np

from common import benchmark_device, emit_json

# The training processes use Keras' PyTorch backend, chosen before Keras is imported.
os.environ.setdefault("KERAS_BACKEND", "torch")
SPLITS = (("train", 0.7), ("validation", 0.1), ("test", 0.2))


def read_rows(data, limit=None):
    """``[{path, label, group, content, image_id}]`` from the dataset's manifest and groups."""
    with open(os.path.join(data, "manifest.csv")) as f:
        rows = [{"path": r["path"], "label": r["label"]} for r in csv.DictReader(f)]
    groups = {}
    if os.path.exists(os.path.join(data, "patients.csv")):
        with open(os.path.join(data, "patients.csv")) as f:
            groups = {r["path"]: r["patient_group"] for r in csv.DictReader(f)}
    parent = {r["path"]: groups.get(r["path"], r["path"]) for r in rows}

    def root(p):  # union-find over groups: a duplicate pair joins its two groups
        while parent.get(p, p) != p:
            p = parent[p]
        return p

    if os.path.exists(os.path.join(data, "duplicates.csv")):
        with open(os.path.join(data, "duplicates.csv")) as f:
            for r in csv.DictReader(f):
                if "different" not in r.get("visual_check", ""):
                    a, b = root(r["path_a"]), root(r["path_b"])
                    if a != b:
                        parent[a] = b
    if limit:
        rows = [rows[i] for i in np.random.default_rng(1).permutation(len(rows))[:limit]]
    for r in rows:
        r["group"] = root(r["path"])
        with open(os.path.join(data, r["path"]), "rb") as f:
            r["content"] = f.read()
        r["image_id"] = hashlib.sha256(r["content"]).hexdigest()
    return rows


def grouped_split(rows, seed):
    """Split name per row: whole groups, 70/10/20 of each class's groups (by first label)."""
    by_label = {}
    for r in rows:
        by_label.setdefault(r["label"], {}).setdefault(r["group"], None)
    assigned = {}
    rng = np.random.default_rng(seed)
    for label in sorted(by_label):
        groups = [g for g in by_label[label] if g not in assigned]
        cut, start = 0.0, 0
        order = rng.permutation(len(groups))
        for name, share in SPLITS:
            cut += share
            end = round(cut * len(groups))
            for i in order[start:end]:
                assigned[groups[i]] = name
            start = end
    return [assigned[r["group"]] for r in rows]


def write_table(location, rows, split, labels, repeat=1):
    """The one-shard image table (train and validation rows) and its manifest."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from covidspark.finetune.shards import SHARD_MANIFEST

    keep = [(r, s) for r, s in zip(rows, split) if s in ("train", "validation")]
    table = {"image_id": [], "content": [], "label_index": [], "split": []}
    counts = {}
    for r, s in keep:
        for k in range(repeat if s == "train" else 1):
            table["image_id"].append(r["image_id"] + (f"#{k}" if k else ""))
            table["content"].append(r["content"])
            table["label_index"].append(labels.index(r["label"]))
            table["split"].append(s)
            counts.setdefault(s, {}).setdefault(r["label"], 0)
            counts[s][r["label"]] += 1
    os.makedirs(os.path.join(location, "shard=0"), exist_ok=True)
    pq.write_table(pa.table({**table, "label_index": pa.array(table["label_index"], pa.int32())}),
                   os.path.join(location, "shard=0", "part-0.parquet"))
    with open(os.path.join(location, SHARD_MANIFEST), "w") as f:
        json.dump({"world": 1, "labels": labels, "counts": counts}, f)
    return counts


def train(args, rows, split, labels, out, recipe, repeat):
    """Write the table, run the training process here (this process is the one rank)."""
    import torch

    from covidspark.finetune.loop import train_process
    from covidspark.models.weights import resolve_weights

    start = resolve_weights(args.model, "random", seed=args.seed)
    write_table(os.path.join(out, "table"), rows, split, labels, repeat)
    t0 = time.perf_counter()
    result = train_process({
        "model_name": args.model, "weights": start.path, "labels": labels,
        "table": os.path.join(out, "table"), "out": out,
        "recipe": dataclasses.asdict(recipe), "use_gpu": torch.cuda.is_available(),
        "precision": args.precision, "threads": os.cpu_count()})
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result, start


def featurizer(spec, weights_path):
    """The torch engine's runner for ``weights_path`` in float32 (built once per weights file)."""
    from covidspark.models.torch_engine import TorchBackboneRunner

    return TorchBackboneRunner(spec, weights_path, "float32", device=benchmark_device(),
                               threads=os.cpu_count())


def features(runner, contents, batch_size):
    """Pooled features of encoded images (the featurizer's decode)."""
    from covidspark.data.decoding import decode_image

    spec = runner.spec
    out = []
    for i in range(0, len(contents), batch_size):
        out.append(runner(np.stack([decode_image(c, spec.input_size, compact=True)
                                    for c in contents[i:i + batch_size]])))
    return np.concatenate(out).astype(np.float64)


def logistic_regression(x_train, y_train, x_test):
    """Class probabilities of a standardised multinomial logistic regression (scikit-learn)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return model.fit(x_train, y_train).predict_proba(x_test)


def report(y_true, probability, labels):
    from covidspark.evaluation.metrics import (bootstrap_intervals, confusion_from_arrays,
                                               metrics_from_confusion, score_metrics)

    y_pred = probability.argmax(1)
    metrics = metrics_from_confusion(confusion_from_arrays(y_true, y_pred, len(labels)), labels)
    scores = score_metrics(y_true, probability, labels)
    return {"accuracy": _round(metrics["accuracy"]),
            "macro_f1": _round(metrics["macro_avg"]["f1"]),
            "roc_auc": _round(scores["roc_auc"]),  # 3 classes: the macro mean over classes
            "covid_recall": _round(metrics["per_class"]["covid"]["recall"]),
            "ci95": {k: [_round(v) for v in value] if isinstance(value, list) else value
                     for k, value in bootstrap_intervals(y_true, y_pred, labels,
                                                         probability=probability).items()}}


def _round(value):
    return None if value is None else round(float(value), 4)


def evaluate(args, rows, split, labels, out, start):
    """The fitted network, frozen starting features + LR, and 32x32 pixels + LR on the test rows."""
    from covidspark.data.decoding import decode_image
    from covidspark.finetune.loop import BACKBONE_FILE, HEAD_FILE
    from covidspark.models.registry import get_backbone

    spec = get_backbone(args.model)
    train_rows = [r for r, s in zip(rows, split) if s == "train"]
    test_rows = [r for r, s in zip(rows, split) if s == "test"]
    y_train = np.array([labels.index(r["label"]) for r in train_rows])
    y_test = np.array([labels.index(r["label"]) for r in test_rows])
    head = np.load(os.path.join(out, HEAD_FILE))
    logits = features(featurizer(spec, os.path.join(out, BACKBONE_FILE)),
                      [r["content"] for r in test_rows], args.eval_batch) \
        @ head["kernel"] + head["bias"]
    logits -= logits.max(1, keepdims=True)
    finetuned = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    starting = featurizer(spec, start.path)

    def frozen(subset):
        return features(starting, [r["content"] for r in subset], args.eval_batch)

    def thumbnails(subset):
        return np.stack([decode_image(r["content"], 32)[:, :, 0].ravel() / 255.0
                         for r in subset])

    return {"test_images": len(test_rows), "train_images": len(train_rows),
            "finetuned": report(y_test, finetuned, labels),
            "frozen_features_lr": report(y_test, logistic_regression(
                frozen(train_rows), y_train, frozen(test_rows)), labels),
            "pixel_baseline_lr": report(y_test, logistic_regression(
                thumbnails(train_rows), y_train, thumbnails(test_rows)), labels)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="dataset folder with manifest.csv")
    parser.add_argument("--model", default="ResNet50")
    parser.add_argument("--precision", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--stages", default="throughput,fit")
    parser.add_argument("--repeat", type=int, default=8,
                        help="throughput stage: each training image this many times")
    parser.add_argument("--throughput-batch", type=int, default=256)
    parser.add_argument("--throughput-epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32, help="fit stage")
    parser.add_argument("--head-epochs", type=int, default=3)
    parser.add_argument("--head-lr", type=float, default=1e-3)
    parser.add_argument("--finetune-epochs", type=int, default=20)
    parser.add_argument("--finetune-lr", type=float, default=1e-4)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--unfreeze", default="all",
                        help="fit stage, phase 2: 'all' or the number of top layers trained")
    parser.add_argument("--loader-workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    parser.add_argument("--eval-batch", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, help="use this many images (a quick check)")
    parser.add_argument("--work", default="/tmp/covidspark-gpu-finetune")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()

    import keras
    import torch

    from covidspark.finetune.recipe import Recipe

    shutil.rmtree(args.work, ignore_errors=True)  # a fresh fit, not a resumed one
    rows = read_rows(args.data, args.limit)
    labels = sorted({r["label"] for r in rows})
    split = grouped_split(rows, args.seed)
    result = {
        "benchmark": "gpu_finetune", "model": args.model, "precision": args.precision,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "versions": {"torch": torch.__version__, "keras": keras.__version__,
                     "cuda": torch.version.cuda, "python": sys.version.split()[0]},
        "weights": "random (seeded) - NOT pretrained ImageNet weights",
        "images": len(rows), "labels": labels,
        "split": {s: split.count(s) for s, _ in SPLITS}, "loader_workers": args.loader_workers}
    common = {"seed": args.seed, "loader_workers": args.loader_workers}
    stages = args.stages.split(",")
    if "throughput" in stages:
        recipe = Recipe(head_epochs=1, finetune_epochs=args.throughput_epochs,
                        batch_size=args.throughput_batch, balance="none", **common)
        fitted, _ = train(args, rows, split, labels, os.path.join(args.work, "throughput"),
                          recipe, args.repeat)
        history = fitted["history"]
        result["throughput"] = {
            "batch_size": args.throughput_batch, "repeat": args.repeat,
            "epochs": [{k: h[k] for k in ("phase", "images", "seconds", "train_images_per_s")}
                       for h in history],
            "whole_network_images_s": history[-1]["train_images_per_s"],
            "seconds": fitted["seconds"]}
        print(json.dumps(result["throughput"]), file=sys.stderr, flush=True)
    if "fit" in stages:
        recipe = Recipe(head_epochs=args.head_epochs, head_lr=args.head_lr,
                        finetune_epochs=args.finetune_epochs, finetune_lr=args.finetune_lr,
                        unfreeze=args.unfreeze if args.unfreeze == "all" else int(args.unfreeze),
                        batch_size=args.batch_size, patience=args.patience, **common)
        out = os.path.join(args.work, "fit")
        fitted, start = train(args, rows, split, labels, out, recipe, 1)
        result["fit"] = {"recipe": dataclasses.asdict(recipe), "seconds": fitted["seconds"],
                         "best_epoch": fitted["best_epoch"],
                         "stopped_early": fitted["stopped_early"],
                         "history": fitted["history"],
                         **evaluate(args, rows, split, labels, out, start)}
    emit_json(result, args.json, indent=1)


if __name__ == "__main__":
    main()
