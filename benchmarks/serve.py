"""Load on the prediction service from a second process on localhost.

Throughput (default): ``--requests`` uploads from ``--clients`` concurrent
clients; reports requests/s and p50 / p95 / max latency.

Soak (``--soak``): 2,000 requests from 16 clients, 10 % of them bad (oversize,
non-image, truncated, decompression bomb, wrong content type, missing field),
with path-traversal file names on every request. Checks that every good request
gets 200 with the label the model gives that image, every bad one a 4xx, that
``/health`` answers throughout (polled every 0.5 s), that the service's RSS stays
bounded (start / end / peak reported), and that nothing is written outside the
service's own temporary directory. Prints one JSON object; exit status 1 if a
check fails.

    python benchmarks/serve.py --model-dir runs/demo/model --engine openvino
    python benchmarks/serve.py --model-dir runs/demo/model --soak

Without ``--model-dir`` a binary ResNet50 + LR model is trained first on the
embedded synthetic set with seeded RANDOM weights (not pretrained).
"""
import argparse
import concurrent.futures
import json
import os
import random
import sys
import tempfile
import threading
import time

import numpy as np

from common import emit_json


def bad_requests(good, limit_bytes):
    """name -> function(client) sending one bad request."""
    from service_client import decompression_bomb_png, multipart_body

    def send_raw(client, body, content_type):
        return client.request("POST", "/predict", body, {"Content-Type": content_type})

    return {
        "oversize": lambda c: c.upload("/predict", b"\0" * (limit_bytes + 1), "../../big.png"),
        "non-image": lambda c: c.upload("/predict", b"not an image\n" * 100, "../etc/passwd"),
        "truncated": lambda c: c.upload("/predict", good[: len(good) // 3], "/tmp/x/../t.png"),
        "bomb": lambda c: c.upload("/predict", decompression_bomb_png(30000, 32),
                                   "..\\..\\bomb.png"),
        "wrong content type": lambda c: send_raw(c, good, "image/png"),
        "missing field": lambda c: send_raw(c, *multipart_body(good, "a.png", field="image")),
    }


def _train_demo_model(out):
    from covidspark.cli import main

    status = main(["train", "--task", "binary", "--weights", "random", "--no-baseline",
                   "--bootstrap", "0", "--synthetic-per-class", "20", "--out", out])
    if status != 0:
        sys.exit(f"training the demo model failed ({status})")
    return os.path.join(out, "model")


def _rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _percentiles(latencies):
    if not latencies:
        return {}
    values = np.asarray(latencies) * 1000.0
    return {"p50_ms": round(float(np.percentile(values, 50)), 1),
            "p95_ms": round(float(np.percentile(values, 95)), 1),
            "max_ms": round(float(values.max()), 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", help="saved model folder (default: train a demo model)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--soak", action="store_true",
                        help="2,000 requests, 16 clients, 10 %% bad; checks every answer")
    parser.add_argument("--bad-fraction", type=float, default=0.1)
    parser.add_argument("--engine", choices=["keras", "openvino", "auto"], default=None)
    parser.add_argument("--images", type=int, default=24, help="distinct good images sent")
    parser.add_argument("--max-upload-mb", type=float, default=20.0)
    parser.add_argument("--json", help="also write the JSON here")
    args = parser.parse_args()
    if args.soak:
        args.requests, args.clients = max(args.requests, 2000), 16
    else:
        args.bad_fraction = 0.0

    from covidspark.data.synthetic import synthetic
    from covidspark.serving.predictor import Predictor
    from service_client import launch

    work = tempfile.mkdtemp(prefix="covidspark-bench-serve-")
    model = args.model_dir or _train_demo_model(os.path.join(work, "run"))
    folder = synthetic(os.path.join(work, "images"), n_per_class=max(1, args.images // 3),
                       seed=11, min_size=256, max_size=768)
    goods = []
    for label in ("covid", "normal", "pneumonia"):
        for name in sorted(os.listdir(os.path.join(folder, label))):
            with open(os.path.join(folder, label, name), "rb") as f:
                goods.append((name, f.read()))
    # The label the model gives each image, computed in this process: every answer must match.
    predictor = Predictor(model, engine=args.engine)
    expected = {name: predictor.predict(data)["label"] for name, data in goods}
    del predictor

    tmp_root = tempfile.gettempdir()
    before = set(os.listdir(tmp_root))
    extra = ["--max-upload-mb", str(args.max_upload_mb)]
    if args.engine:
        extra += ["--engine", args.engine]
    process, client = launch(model, extra_args=extra, log_path=os.path.join(work, "serve.log"))
    service_dirs = {d for d in set(os.listdir(tmp_root)) - before
                    if d.startswith("covidspark-serve-")}
    rss_start = _rss_mb(process.pid)
    limit = int(args.max_upload_mb * 2 ** 20)
    bad = bad_requests(goods[0][1], limit)
    rng = random.Random(0)
    plan = []
    for i in range(args.requests):
        if rng.random() < args.bad_fraction:
            plan.append(("bad", rng.choice(sorted(bad))))
        else:
            plan.append(("good", i % len(goods)))

    health = {"checks": 0, "failures": 0, "max_ms": 0.0}
    peak_rss = [rss_start]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            try:
                status, _, _, seconds = client.request("GET", "/health")
                health["failures"] += status != 200
                health["max_ms"] = max(health["max_ms"], seconds * 1000.0)
            except OSError:
                health["failures"] += 1
            health["checks"] += 1
            peak_rss.append(_rss_mb(process.pid))
            stop.wait(0.5)

    def send(item):
        kind, which = item
        if kind == "good":
            name, data = goods[which]
            status, _, payload, seconds = client.upload("/predict", data, f"../../{name}")
            ok = status == 200 and json.loads(payload)["label"] == expected[name]
            return kind, which, status, ok, seconds
        status, _, _, seconds = bad[which](client)
        return kind, which, status, 400 <= status < 500, seconds

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start = time.perf_counter()
    try:
        with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
            results = list(pool.map(send, plan))
    finally:
        elapsed = time.perf_counter() - start
        stop.set()
        watcher.join()
        rss_end = _rss_mb(process.pid)
        process.terminate()
        process.wait(timeout=60)

    good_results = [r for r in results if r[0] == "good"]
    bad_results = [r for r in results if r[0] == "bad"]
    by_kind = {}
    for _, which, status, ok, _ in bad_results:
        entry = by_kind.setdefault(which, {"sent": 0, "4xx": 0, "statuses": set()})
        entry["sent"] += 1
        entry["4xx"] += ok
        entry["statuses"].add(status)
    leftovers = sorted(set(os.listdir(tmp_root)) - before - service_dirs)
    leftovers = [d for d in leftovers if not d.startswith(("tmp", "pymp-"))]
    traversal = [p for p in ("big.png", "passwd", "t.png", "bomb.png")
                 if os.path.exists(os.path.join(os.getcwd(), p))]
    result = {
        "benchmark": "serve-soak" if args.soak else "serve-throughput",
        "model": os.path.abspath(model), "engine": args.engine or "saved",
        "weights_note": "seeded RANDOM weights unless --model-dir says otherwise",
        "requests": len(results), "clients": args.clients, "seconds": round(elapsed, 2),
        "requests_per_s": round(len(results) / elapsed, 2),
        "good": {"sent": len(good_results), "ok_200_correct_label": sum(r[3] for r in good_results),
                 **_percentiles([r[4] for r in good_results])},
        "bad": {"sent": len(bad_results), "answered_4xx": sum(r[3] for r in bad_results),
                "by_kind": {k: {**v, "statuses": sorted(v["statuses"])}
                            for k, v in sorted(by_kind.items())}},
        "health": {**health, "max_ms": round(health["max_ms"], 1)},
        "rss_mb": {"start": round(rss_start, 1), "end": round(rss_end, 1),
                   "peak": round(max(peak_rss), 1)},
        "service_temp_dirs_removed": not any(os.path.exists(os.path.join(tmp_root, d))
                                             for d in service_dirs),
        "files_written_outside_service_temp": leftovers + traversal,
    }
    checks = {
        "every good request 200 with the right label":
            result["good"]["ok_200_correct_label"] == result["good"]["sent"],
        "every bad request 4xx": result["bad"]["answered_4xx"] == result["bad"]["sent"],
        "health answered throughout": health["failures"] == 0 and health["checks"] > 0,
        "nothing written outside the service's temp dir":
            not result["files_written_outside_service_temp"],
    }
    if args.soak:
        # Bounded: the end within 25 % of the start (the first requests allocate buffers).
        checks["rss bounded (end <= 1.25 x start)"] = rss_end <= 1.25 * rss_start
    result["checks"] = checks
    result["passed"] = all(checks.values())
    emit_json(result, args.json, indent=2)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
