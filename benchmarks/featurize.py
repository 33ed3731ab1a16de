"""Featurization throughput, end to end in Spark and as single-process ceilings.

Measured in one run, on Spark local[N], with the same seeded random weights
(not pretrained; no weights can be downloaded here):

- ``naive_fp32``: the common recipe, a pandas UDF that builds the Keras model
  once per worker and calls ``model.predict`` on each batch.
- ``covidspark_fp32``, ``covidspark_bf16``, ``covidspark_openvino_bf16``:
  DeepImageFeaturizer with those settings (read, decode, resize, forward pass).
- ``keras_ceiling_fp32``, ``keras_ceiling_bf16``, ``openvino_ceiling_bf16``:
  each engine called directly in this process on already-decoded tensors.

Spark rates are steady state: every Spark variant first runs a warm-up job so
that each Python worker has built its model. Also reported: ``cold_start_s``
(the warm-up job of covidspark_fp32: worker start, TensorFlow import, model
build and first trace), ``bf16_cosine_min``, ``peak_rss_mb_per_worker`` and
``scaling_4x`` (covidspark_fp32's rate on 4x the images over its rate on 1x).
Prints one JSON object, and writes it to --json when given.

    python benchmarks/featurize.py --data ../shared/data/ozturk/images --limit 128
"""
import argparse
import glob
import os
import sys
import time

import numpy as np

from common import emit_json, python_worker_pids, status_kb


def image_paths(data, limit):
    paths = sorted(p for p in glob.glob(os.path.join(data, "**", "*"), recursive=True)
                   if p.lower().endswith((".png", ".jpg", ".jpeg")))
    if not paths:
        sys.exit(f"no images under {data}")
    step = max(1, len(paths) // limit)  # spread over the class folders
    return paths[::step][:limit]


def ceiling(engine, precision, model_name, batch_size, seconds=20.0):
    """Images/s of one engine on random, already-decoded input, in this process."""
    from covidspark.models.engines import KerasBackboneRunner, OpenVinoBackboneRunner
    from covidspark.models.registry import get_backbone
    from covidspark.models.weights import resolve_weights

    spec = get_backbone(model_name)
    path = resolve_weights(model_name, "random").path
    runner = (OpenVinoBackboneRunner(spec, path, precision, threads=os.cpu_count())
              if engine == "openvino" else KerasBackboneRunner(spec, path, precision))
    x = np.random.default_rng(0).uniform(0, 255, (batch_size, spec.input_size, spec.input_size, 3))
    runner(x)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or done == 0:
        runner(x)
        done += batch_size
    return done / (time.perf_counter() - start), runner(x[:4])


def naive_udf(model_name, weights_path):
    """The common recipe: model.predict per batch inside a pandas UDF."""
    import pandas as pd
    from pyspark.sql.functions import pandas_udf

    cache = {}

    @pandas_udf("array<float>")
    def predict(contents: pd.Series) -> pd.Series:
        from covidspark.data.decoding import decode_image
        from covidspark.models.registry import build_backbone, get_backbone, preprocess_function

        spec = get_backbone(model_name)
        if "model" not in cache:
            cache["model"] = build_backbone(spec, weights_path)
        x = np.stack([decode_image(c, spec.input_size) for c in contents])
        out = cache["model"].predict(preprocess_function(spec)(x), verbose=0)
        return pd.Series(list(out.astype(np.float32)))

    return predict


def timed_count(frame):
    start = time.perf_counter()
    frame.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - start


def worker_peak_rss_mb():
    """Largest peak RSS (VmHWM) of the live Python workers, in MB."""
    peaks = [kb / 1024 for kb in (status_kb(pid, "VmHWM") for pid in python_worker_pids()) if kb]
    return max(peaks) if peaks else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="image folder (searched recursively)")
    parser.add_argument("--limit", type=int, default=128, help="images per measured pass")
    parser.add_argument("--model", default="ResNet50")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--json", dest="json_out", default=None)
    parser.add_argument("--skip-4x", action="store_true", help="skip the 4x scaling pass")
    args = parser.parse_args()

    from pyspark.sql import functions as F

    from covidspark.models.engines import cpu_flags, cpu_has_bf16, openvino_installed
    from covidspark.ml.featurizer import DeepImageFeaturizer
    from covidspark.models.weights import resolve_weights
    from covidspark.runtime.session import get_spark

    paths = image_paths(args.data, args.limit)
    spark = get_spark("benchmark-featurize", master=f"local[{args.cores}]",
                      conf={"spark.ui.showConsoleProgress": "false"})
    images = (spark.read.format("binaryFile").load(paths).select("path", "content")
              .repartition(args.cores).cache())
    n = images.count()
    warm = images.limit(args.cores * args.batch_size).repartition(args.cores).cache()
    warm.count()
    result = {"benchmark": "featurize", "model": args.model, "images": n, "data": args.data,
              "batch_size": args.batch_size, "cores": args.cores, "spark": spark.version,
              "weights": "random (seeded), not pretrained", "cpu_bf16": cpu_has_bf16(cpu_flags())}
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(args.batch_size))

    variants = {"covidspark_fp32": ("float32", "keras"), "covidspark_bf16": ("bfloat16", "keras")}
    if openvino_installed():
        variants["covidspark_openvino_bf16"] = ("bfloat16", "openvino")
    for name, (precision, engine) in variants.items():
        featurizer = DeepImageFeaturizer(inputCol="content", modelName=args.model,
                                         weights="random", batchSize=args.batch_size,
                                         precision=precision, engine=engine)
        cold = timed_count(featurizer.transform(warm))
        if name == "covidspark_fp32":
            # The warm-up job: worker start, TensorFlow import, model build, first trace,
            # plus one batch per core.
            result["cold_start_s"] = round(cold, 2)
        result[name] = round(n / timed_count(featurizer.transform(images)), 2)
        if name == "covidspark_fp32" and not args.skip_4x:
            four = images.union(images).union(images).union(images).repartition(args.cores)
            result["scaling_4x"] = round(4 * n / timed_count(featurizer.transform(four))
                                         / result[name], 3)
    naive = naive_udf(args.model, resolve_weights(args.model, "random").path)
    timed_count(warm.select(naive(F.col("content"))))
    result["naive_fp32"] = round(n / timed_count(images.select(naive(F.col("content")))), 2)
    peak = worker_peak_rss_mb()
    result["peak_rss_mb_per_worker"] = peak and round(peak, 1)
    spark.stop()

    result["keras_ceiling_fp32"], fp32 = ceiling("keras", "float32", args.model, args.batch_size)
    result["keras_ceiling_bf16"], bf16 = ceiling("keras", "bfloat16", args.model, args.batch_size)
    cos = (fp32 * bf16).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(bf16, axis=1)
    result["bf16_cosine_min"] = round(float(cos.min()), 6)
    if openvino_installed():
        result["openvino_ceiling_bf16"], _ = ceiling("openvino", "bfloat16", args.model,
                                                     args.batch_size)
    for key in list(result):
        if key.endswith(("_fp32", "_bf16")) and isinstance(result[key], float):
            result[key] = round(result[key], 2)
    result["ratios"] = {
        "covidspark_fp32 / naive_fp32": round(result["covidspark_fp32"] / result["naive_fp32"], 3),
        "covidspark_fp32 / keras_ceiling_fp32":
            round(result["covidspark_fp32"] / result["keras_ceiling_fp32"], 3),
        "covidspark_bf16 / covidspark_fp32":
            round(result["covidspark_bf16"] / result["covidspark_fp32"], 3),
    }
    if "openvino_ceiling_bf16" in result:
        result["ratios"]["covidspark_openvino_bf16 / keras_ceiling_fp32"] = round(
            result["covidspark_openvino_bf16"] / result["keras_ceiling_fp32"], 3)
        result["ratios"]["covidspark_openvino_bf16 / openvino_ceiling_bf16"] = round(
            result["covidspark_openvino_bf16"] / result["openvino_ceiling_bf16"], 3)
    emit_json(result, args.json_out)


if __name__ == "__main__":
    main()
