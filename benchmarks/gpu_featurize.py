"""The torch engine's own path, without Spark: encoded files -> decode -> preprocess -> forward -> features.

What one Python worker does with its batches, measured on one device (a GPU
where there is one, else the CPU), in one run, with seeded random weights (not
pretrained; nothing is downloaded). Per backbone and precision, three arms:

- ``covidspark``: covidspark's torch engine end to end. A pool of CPU threads
  reads and decodes the files (:func:`covidspark.data.decoding.decode_image`:
  grayscale, resize; one channel, uint8 for 8-bit files, as the featurizer's
  worker decodes for this engine) ``--prefetch`` batches ahead, while the
  device runs the previous batch (:class:`TorchBackboneRunner`: pinned memory,
  asynchronous copy, three channels and ``preprocess_input`` on the device,
  bfloat16 autocast).
- ``keras_predict``: the common recipe: decode a batch in the main thread with
  the same decoder, then ``model.predict(batch)`` of the same Keras model on the
  same device.
- ``model_only``: the ceiling: an already-preprocessed batch resident on the
  device, forward passes only (synchronised before the clock stops).

Inputs: the images under ``--data`` (e.g. ``../shared/data/ozturk/images``:
1,124 real X-rays) cycled to ``--files`` paths, each read from disk when used.
With ``--workers 2,4``, the covidspark and model-only arms also run as that
many processes sharing the device, each with its own model and a share of the
decoding threads: how Spark runs several tasks per GPU (one Python worker
each), and the way past one process's GIL (decoding) and Python dispatch
(Keras calls every layer from Python).

Prints one JSON object (device name, library versions, images/s per arm, and
the ratios the targets name: covidspark / model_only and covidspark /
keras_predict), and writes it to ``--json`` when given.

    python benchmarks/gpu_featurize.py --data ../shared/data/ozturk/images --files 10000
    python benchmarks/gpu_featurize.py --data ../shared/data/ozturk/images --files 64 \\
        --batch-size 16 --models ResNet50 --precisions float32   # a quick CPU check
"""
import argparse
import glob
import os
import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from common import benchmark_device, emit_json

# Keras reads its backend once, at first import: this benchmark is the torch engine's.
os.environ.setdefault("KERAS_BACKEND", "torch")


def image_paths(data, n_files):
    paths = sorted(p for p in glob.glob(os.path.join(data, "**", "*"), recursive=True)
                   if p.lower().endswith((".png", ".jpg", ".jpeg")))
    if not paths:
        sys.exit(f"no images under {data}")
    return [paths[i % len(paths)] for i in range(n_files)], len(paths)


def decode_file(path, size, compact=False):
    from covidspark.data.decoding import decode_image

    with open(path, "rb") as f:
        return decode_image(f.read(), size, name=path, compact=compact)


def decoded_batches(paths, size, batch_size, threads, prefetch, compact):
    """Batches of decoded images, decoded by ``threads`` threads up to ``prefetch`` batches ahead.

    ``compact``: one grey channel (uint8 for 8-bit files), as the featurizer's
    worker decodes for an engine that widens grey itself (the torch engine).
    """
    batches = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
    ready = queue.Queue(maxsize=max(1, prefetch))
    pool = ThreadPoolExecutor(threads, thread_name_prefix="decode")

    def produce():
        for batch in batches:
            ready.put(pool.map(lambda p: decode_file(p, size, compact), batch))
        ready.put(None)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        while True:
            item = ready.get()
            if item is None:
                return
            yield np.stack(list(item))
    finally:
        pool.shutdown(wait=True)


def arm_covidspark(runner, paths, batch_size, threads, prefetch):
    t0 = time.perf_counter()
    n = 0
    for pixels in decoded_batches(paths, runner.input_size, batch_size, threads, prefetch,
                                  getattr(runner, "accepts_gray", False)):
        n += len(runner(pixels))  # returns numpy: the device has finished the batch
    return n / (time.perf_counter() - t0)


def arm_keras_predict(runner, paths, batch_size):
    model, size = runner.model, runner.input_size
    t0 = time.perf_counter()
    n = 0
    for start in range(0, len(paths), batch_size):
        pixels = np.stack([decode_file(p, size) for p in paths[start:start + batch_size]])
        n += len(model.predict(runner.preprocess(pixels), batch_size=batch_size, verbose=0))
    return n / (time.perf_counter() - t0)


def arm_model_only(runner, batch_size, repeats):
    import torch

    size = runner.input_size
    x = torch.from_numpy(runner.preprocess(np.random.default_rng(0).uniform(
        0, 255, (batch_size, size, size, 3)).astype(np.float32)).astype(np.float32))
    x = x.to(runner._torch_device)
    autocast = torch.autocast(runner._torch_device.type, dtype=torch.bfloat16,
                              enabled=runner.precision == "bfloat16")
    with torch.inference_mode(), autocast:
        runner.model(x, training=False)  # warm-up
        _sync(runner)
        t0 = time.perf_counter()
        for _ in range(repeats):
            runner.model(x, training=False)
        _sync(runner)
    return repeats * batch_size / (time.perf_counter() - t0)


def _sync(runner):
    import torch

    if runner.on_gpu:
        torch.cuda.synchronize(runner._torch_device)


def _runner(model_name, precision):
    from covidspark.models.engines import build_runner
    from covidspark.models.registry import get_backbone
    from covidspark.models.weights import resolve_weights

    weights = resolve_weights(model_name, "random", seed=0)
    return build_runner(get_backbone(model_name), weights.path, weights.weights_id, precision,
                        "torch", device=benchmark_device())


def _worker_process(arm, model_name, precision, paths, options, go, results):
    """One of several Python workers sharing the device: build, warm up, wait, run its share."""
    runner = _runner(model_name, precision)
    batch = options["batch_size"]
    arm_covidspark(runner, paths[:2 * batch], batch, options["threads"], options["prefetch"])
    arm_model_only(runner, batch, 1)
    results.put("ready")
    go.wait()
    if arm == "covidspark":
        arm_covidspark(runner, paths, batch, options["threads"], options["prefetch"])
        results.put(len(paths))
    else:
        arm_model_only(runner, batch, options["ceiling_batches"])
        results.put(options["ceiling_batches"] * batch)


def arm_workers(arm, n_workers, model_name, precision, paths, args):
    """Images/s of ``n_workers`` processes on one device together (Spark: tasks per GPU).

    Each process holds its own model (one Python worker each, as Spark runs
    them) and decodes with ``--threads / n_workers`` threads; the clock runs from
    the moment all are built and warmed up until the last one finishes.
    """
    import multiprocessing

    import torch

    if torch.cuda.is_available():
        # What this process's allocator still holds (from the single-process arms) would be
        # missing to the workers: at batch 512 it once left them too little to run.
        torch.cuda.empty_cache()
    context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    go, results = context.Event(), context.Queue()
    options = {"batch_size": args.batch_size, "threads": max(1, args.threads // n_workers),
               "prefetch": args.prefetch, "ceiling_batches": args.ceiling_batches}
    workers = [context.Process(target=_worker_process, daemon=True,
                               args=(arm, model_name, precision, paths[k::n_workers], options,
                                     go, results)) for k in range(n_workers)]
    for w in workers:
        w.start()

    def collect():  # the next message; a worker that died must not leave this one waiting
        while True:
            try:
                return results.get(timeout=5)
            except queue.Empty:
                dead = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
                if dead:
                    for w in workers:
                        w.kill()
                    raise RuntimeError(f"{len(dead)} of {n_workers} worker processes failed "
                                       f"(exit codes {dead}); their tracebacks are above")

    for _ in workers:
        collect()  # "ready": built and warmed up
    go.set()
    t0 = time.perf_counter()
    images = sum(collect() for _ in workers)
    seconds = time.perf_counter() - t0
    for w in workers:
        w.join()
    return images / seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder of PNG/JPEG images (recursive)")
    parser.add_argument("--files", type=int, default=10000, help="paths, cycling the images")
    parser.add_argument("--models", default="ResNet50,InceptionV3")
    parser.add_argument("--precisions", default="float32,bfloat16")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="decoding threads (default: every core)")
    parser.add_argument("--prefetch", type=int, default=4, help="batches decoded ahead")
    parser.add_argument("--predict-files", type=int, default=2048,
                        help="files for the slower keras_predict arm (at most --files)")
    parser.add_argument("--ceiling-batches", type=int, default=20)
    parser.add_argument("--workers", default="",
                        help="also run the covidspark and model-only arms with these numbers "
                             "of processes sharing the device, e.g. 2,4")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()

    import keras
    import torch

    paths, distinct = image_paths(args.data, args.files)
    device = benchmark_device()
    result = {
        "benchmark": "gpu_featurize",
        "device": torch.cuda.get_device_name(0) if device.on_gpu else "cpu",
        "versions": {"torch": torch.__version__, "keras": keras.__version__,
                     "cuda": torch.version.cuda, "python": sys.version.split()[0]},
        "weights": "random (seeded) - NOT pretrained ImageNet weights",
        "files": len(paths), "distinct_images": distinct, "batch_size": args.batch_size,
        "decode_threads": args.threads, "runs": [],
    }
    for model_name in args.models.split(","):
        for precision in args.precisions.split(","):
            runner = _runner(model_name, precision)
            # Warm-up: first batches allocate, pick kernels, fill the page cache.
            arm_covidspark(runner, paths[:2 * args.batch_size], args.batch_size, args.threads,
                           args.prefetch)
            run = {"model": model_name, "precision": precision,
                   "covidspark_images_s": arm_covidspark(runner, paths, args.batch_size,
                                                         args.threads, args.prefetch),
                   "keras_predict_images_s": arm_keras_predict(
                       runner, paths[:min(args.predict_files, len(paths))], args.batch_size),
                   "model_only_images_s": arm_model_only(runner, args.batch_size,
                                                         args.ceiling_batches)}
            run["covidspark_over_model_only"] = run["covidspark_images_s"] / \
                run["model_only_images_s"]
            run["covidspark_over_keras_predict"] = run["covidspark_images_s"] / \
                run["keras_predict_images_s"]
            for key, value in list(run.items()):
                if isinstance(value, float):
                    run[key] = round(value, 3)
            print(run, file=sys.stderr, flush=True)  # kept if a later arm fails
            result["runs"].append(run)
            del runner
            keras.backend.clear_session()
            for n in [int(n) for n in args.workers.split(",") if n.strip()]:
                try:
                    together = {arm + "_images_s": arm_workers(arm, n, model_name, precision,
                                                               paths, args)
                                for arm in ("covidspark", "model_only")}
                except RuntimeError as error:
                    run[f"workers_{n}"] = {"error": str(error)}
                    continue
                together["covidspark_over_model_only"] = \
                    together["covidspark_images_s"] / together["model_only_images_s"]
                together["covidspark_over_keras_predict"] = \
                    together["covidspark_images_s"] / run["keras_predict_images_s"]
                run[f"workers_{n}"] = {k: round(v, 3) for k, v in together.items()}
                print({"model": model_name, "precision": precision,
                       f"workers_{n}": run[f"workers_{n}"]}, file=sys.stderr, flush=True)
    emit_json(result, args.json, indent=1)


if __name__ == "__main__":
    main()
