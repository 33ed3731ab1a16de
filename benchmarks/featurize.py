"""Featurization throughput: Spark DeepImageFeaturizer vs one plain Python process.

Both sides decode the same files and run the same compiled Keras network with
the same (seeded random, not pretrained) weights; the Spark side runs in
local[N] after a warm-up pass, so job start-up and model building are not
measured. Prints one JSON object:

    {"spark_ips": .., "single_process_ips": .., "ratio": .., ...}

    python benchmarks/featurize.py --data ../shared/data/ozturk/images --images 256
"""
import argparse
import glob
import json
import os
import sys
import time

import numpy as np


def image_paths(data, limit):
    paths = sorted(p for p in glob.glob(os.path.join(data, "**", "*"), recursive=True)
                   if p.lower().endswith((".png", ".jpg", ".jpeg")))
    if not paths:
        sys.exit(f"no images under {data}")
    # Spread the sample over the classes (folders) instead of taking the first folder.
    step = max(1, len(paths) // limit)
    return paths[::step][:limit]


def single_process(paths, model_name, batch_size):
    from covidspark.engines import KerasBackboneRunner
    from covidspark.images import decode_image
    from covidspark.models import get_backbone, resolve_weights

    spec = get_backbone(model_name)
    runner = KerasBackboneRunner(spec, resolve_weights(model_name, "random").path)
    runner(np.zeros((batch_size, spec.input_size, spec.input_size, 3), np.float32))  # warm-up
    start = time.perf_counter()
    for i in range(0, len(paths), batch_size):
        batch = []
        for p in paths[i:i + batch_size]:
            with open(p, "rb") as f:
                batch.append(decode_image(f.read(), spec.input_size, name=p))
        runner(np.stack(batch))
    return len(paths) / (time.perf_counter() - start)


def spark_featurize(paths, model_name, batch_size, cores):
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    from covidspark.featurizer import DeepImageFeaturizer
    from covidspark.session import get_spark

    spark = get_spark("benchmark-featurize", master=f"local[{cores}]",
                      conf={"spark.ui.showConsoleProgress": "false"})
    df = spark.read.format("binaryFile").load(paths).select("path", "content")
    df = df.repartition(cores * 4).cache()
    df.count()
    featurizer = DeepImageFeaturizer(inputCol="content", modelName=model_name,
                                     weights="random", batchSize=batch_size)

    def run(frame):
        # Sum the features so that the job computes them all but collects one row.
        return frame.select(F.aggregate(vector_to_array("features"), F.lit(0.0),
                                        lambda a, b: a + b).alias("s")).agg(F.sum("s")).first()

    run(featurizer.transform(df.limit(cores * batch_size).repartition(cores)))  # warm-up
    start = time.perf_counter()
    run(featurizer.transform(df))
    return len(paths) / (time.perf_counter() - start), spark.version


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="image folder (default: synthetic)")
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--model", default="ResNet50")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cores", type=int, default=2)
    args = parser.parse_args()
    data = args.data
    if data is None:
        from covidspark.datasets import default_synthetic_dir, synthetic

        data = synthetic(default_synthetic_dir(max(1, args.images // 3)), max(1, args.images // 3))
    paths = image_paths(data, args.images)
    single = single_process(paths, args.model, args.batch_size)
    spark_ips, spark_version = spark_featurize(paths, args.model, args.batch_size, args.cores)
    print(json.dumps({
        "benchmark": "featurize", "model": args.model, "weights": "random (seeded, not pretrained)",
        "images": len(paths), "data": data, "batch_size": args.batch_size, "cores": args.cores,
        "spark": spark_version, "single_process_ips": round(single, 2),
        "spark_ips": round(spark_ips, 2), "ratio": round(spark_ips / single, 3),
    }))


if __name__ == "__main__":
    main()
