"""Ingest -> featurize -> train LR at growing sizes: does the rate hold and memory stay flat?

Generates ``max(--sizes)`` synthetic X-rays of a few hundred pixels once, then for
each size runs, in one local-mode Spark session: ``read_images`` (lenient) ->
``DeepImageFeaturizer`` (ResNet50, ``--precision auto``: bfloat16 where the
hardware has it) written to Parquet -> LR (3-class) on the features read back.
Reports images/s of the featurize stage and of the whole run, the peak RSS of
the driver's Python process and of every Python worker (sampled from /proc
every 0.5 s), and checks the targets: the per-image rate at the largest size
within 15 % of the rate at the smallest, peak worker RSS within 10 %, and the
driver's RSS flat (it never collects image bytes or features).

``--bad-fraction 0.05`` mixes bad files of every kind into the set (zero-byte,
truncated, text named .png, GIF named .jpg, .bmp, over the pixel limit, an
unknown label folder) and checks that the run completes, every bad file is a
reject with its reason, and accepted + rejected = total.

Seeded RANDOM weights (nothing can be downloaded here). Prints one JSON object.

    python benchmarks/scale.py --sizes 1000,3000,10000
    python benchmarks/scale.py --sizes 2000 --bad-fraction 0.05
"""
import argparse
import io
import os
import sys
import tempfile
import threading
import time

import numpy as np

from common import emit_json, python_worker_pids, status_kb

BAD_KINDS = ("empty", "truncated", "text", "gif", "bmp", "too-many-pixels", "unknown-label")


class RssSampler:
    """Peak VmRSS (MB) of the driver's Python and of each Python worker while running."""

    def __init__(self, interval=0.5):
        self.interval, self.workers, self.driver = interval, {}, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.driver = max(self.driver, status_kb(os.getpid(), "VmRSS") / 1024)
            for pid in python_worker_pids():
                self.workers[pid] = max(self.workers.get(pid, 0.0),
                                        status_kb(pid, "VmRSS") / 1024)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def write_bad_files(root, n, labels=("covid", "normal", "pneumonia")):
    """``n`` bad files of every kind, spread over the class folders; returns {path: kind}."""
    from PIL import Image

    written = {}
    for i in range(n):
        kind = BAD_KINDS[i % len(BAD_KINDS)]
        folder = os.path.join(root, "Lateral" if kind == "unknown-label" else labels[i % 3])
        os.makedirs(folder, exist_ok=True)
        name = {"gif": f"bad-{i}.jpg", "bmp": f"bad-{i}.bmp"}.get(kind, f"bad-{i}.png")
        path = os.path.join(folder, name)
        buffer = io.BytesIO()
        if kind in ("truncated", "unknown-label"):
            Image.fromarray((np.arange(256 * 256) % 251).reshape(256, 256).astype(np.uint8)).save(
                buffer, format="PNG")
        elif kind == "gif":
            Image.new("L", (16, 16)).save(buffer, format="GIF")
        elif kind == "too-many-pixels":
            Image.new("L", (1500, 1500)).save(buffer, format="PNG")  # over --max-pixels
        data = {"empty": b"", "text": b"a text file named .png\n" * 20,
                "bmp": b"BM not supported", "truncated": buffer.getvalue()[:300]}.get(
            kind, buffer.getvalue())
        with open(path, "wb") as f:
            f.write(data)
        written[path] = kind
    return written


def run_size(spark, manifest, n, args, work):
    """One ingest -> featurize -> train run over the first ``n`` manifest rows."""
    from covidspark.ml.featurizer import DeepImageFeaturizer
    from covidspark.data.reading import read_images
    from covidspark.ml.pipelines import ALL_LABELS, build_head

    subset = manifest.iloc[:n]
    timings = {}
    with RssSampler() as rss:
        t0 = time.time()
        result = read_images(spark, manifest=subset, base_dir=args.data_dir, strict=False,
                             max_pixels=args.max_pixels, known_labels=ALL_LABELS)
        accepted = result.accepted
        timings["ingest_s"] = time.time() - t0
        featurizer = DeepImageFeaturizer(inputCol="content", outputCol="features",
                                         modelName=args.model, weights="random",
                                         precision=args.precision, engine=args.engine)
        out = os.path.join(work, f"features-{n}")
        images = result.images.repartition(max(spark.sparkContext.defaultParallelism,
                                               -(-accepted // 128)))
        t1 = time.time()
        featurizer.transform(images).select("image_id", "label", "features").write.mode(
            "overwrite").parquet(out)
        timings["featurize_s"] = time.time() - t1
        t2 = time.time()
        features = spark.read.parquet(out)
        model = build_head("3class", "lr").fit(features)
        timings["train_s"] = time.time() - t2
        total_s = time.time() - t0
    rejects = [(r.path, r.reason) for r in result.rejects.collect()]
    return {
        "images": n, "accepted": accepted, "rejected": result.rejected,
        "reject_pairs": rejects, "reject_paths": [p for p, _ in rejects],
        **{k: round(v, 1) for k, v in timings.items()},
        "featurize_images_per_s": round(accepted / timings["featurize_s"], 2),
        "end_to_end_images_per_s": round(n / total_s, 2),
        "train_iterations": model.stages[1].summary.totalIterations
        if model.stages[1].hasSummary else None,
        "peak_rss_mb": {"driver_python": round(rss.driver, 1),
                        "python_workers": sorted(round(v, 1) for v in rss.workers.values())},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,3000,10000")
    parser.add_argument("--side", type=int, default=256, help="smallest image side, pixels")
    parser.add_argument("--model", default="ResNet50")
    parser.add_argument("--engine", default="auto", choices=["keras", "openvino", "auto"])
    parser.add_argument("--precision", default="auto", choices=["float32", "bfloat16", "auto"])
    parser.add_argument("--bad-fraction", type=float, default=0.0)
    parser.add_argument("--max-pixels", type=int, default=2_000_000)
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--work", default=None, help="folder for images and features (temp)")
    parser.add_argument("--json", help="also write the JSON here")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))

    import pandas as pd

    from covidspark.data.synthetic import synthetic
    from covidspark.runtime.session import get_spark

    work = args.work or tempfile.mkdtemp(prefix="covidspark-bench-scale-")
    biggest = sizes[-1]
    n_bad = int(round(biggest * args.bad_fraction))
    args.data_dir = os.path.join(work, "images")
    t0 = time.time()
    synthetic(args.data_dir, n_per_class=-(-(biggest - n_bad) // 3), seed=21,
              min_size=args.side, max_size=args.side + 128)
    good = pd.read_csv(os.path.join(args.data_dir, "manifest.csv"))[["path", "label"]]
    bad = write_bad_files(args.data_dir, n_bad)
    rows = [good]
    if bad:
        rows.append(pd.DataFrame({"path": [os.path.relpath(p, args.data_dir) for p in bad],
                                  "label": [os.path.relpath(p, args.data_dir).split(os.sep)[0]
                                            for p in bad]}))
    # Interleave so that every prefix holds all classes (and its share of bad files).
    manifest = pd.concat(rows).sample(frac=1.0, random_state=0).reset_index(drop=True)
    manifest = manifest.iloc[:biggest]
    generated_s = time.time() - t0

    spark = get_spark("covidspark-bench-scale", master=args.master,
                      conf={"spark.ui.showConsoleProgress": "false",
                            "spark.driver.memory": "4g"})
    runs = [run_size(spark, manifest, n, args, work) for n in sizes]
    spark.stop()

    first, last = runs[0], runs[-1]
    rate_ratio = last["featurize_images_per_s"] / first["featurize_images_per_s"]
    worker_first = max(first["peak_rss_mb"]["python_workers"] or [0])
    worker_last = max(last["peak_rss_mb"]["python_workers"] or [0])
    driver_growth = last["peak_rss_mb"]["driver_python"] - first["peak_rss_mb"]["driver_python"]
    checks = {
        "rate at largest within 15 % of smallest": rate_ratio >= 0.85,
        "peak worker RSS within 10 %": worker_last <= 1.10 * worker_first,
        "driver Python RSS flat (< 100 MB growth)": driver_growth < 100,
    }
    if args.bad_fraction:
        expected_bad = {os.path.abspath(p) for p in bad
                        if os.path.relpath(p, args.data_dir) in set(manifest.path)}
        listed = {os.path.abspath(p.replace("file:", "")) for p in last["reject_paths"]}
        checks["every bad file rejected with a reason"] = expected_bad <= listed
        reasons = {os.path.abspath(p.replace("file:", "")): r for p, r in last["reject_pairs"]}
        by_kind = {}
        for path, kind in bad.items():
            entry = by_kind.setdefault(kind, {"files": 0, "rejected": 0, "example_reason": None})
            if os.path.abspath(path) not in expected_bad:
                continue
            entry["files"] += 1
            if os.path.abspath(path) in reasons:
                entry["rejected"] += 1
                entry["example_reason"] = reasons[os.path.abspath(path)]
        last["bad_files_by_kind"] = by_kind
        checks["accepted + rejected = total"] = \
            last["accepted"] + last["rejected"] == last["images"]
    for run in runs:
        run.pop("reject_paths")
        run.pop("reject_pairs")
    import pyspark

    result = {"benchmark": "scale", "model": args.model, "engine": args.engine,
              "precision": args.precision, "weights": "random (seeded) - NOT pretrained",
              "spark": pyspark.__version__, "master": args.master, "cpus": os.cpu_count(),
              "generated_images": len(manifest), "bad_files": n_bad,
              "generate_s": round(generated_s, 1), "runs": runs,
              "rate_ratio_largest_vs_smallest": round(rate_ratio, 3),
              "worker_rss_ratio": round(worker_last / max(worker_first, 1e-9), 3),
              "driver_rss_growth_mb": round(driver_growth, 1), "checks": checks,
              "passed": all(checks.values())}
    emit_json(result, args.json, indent=2)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
