"""Ingest throughput: read + decode + resize to 224 in Spark local[N] vs one Pillow loop.

Both sides run covidspark's decoder on the same files. The Spark side is a
DataFrame of paths whose Python workers read the bytes themselves (the layout
read_images' DataFrames get when the featurizer takes a path column), measured
after a warm-up job so that worker start-up is not counted. The file list is
repeated until at least --min-images pass. Prints one JSON object:

    {"spark_ips": .., "pillow_ips": .., "ratio": .., ...}

    python benchmarks/ingest.py --data ../shared/data/ozturk-fullres
"""
import argparse
import glob
import json
import os
import sys
import time


def image_paths(data):
    from covidspark.data.decoding import IMAGE_EXTENSIONS

    paths = sorted(p for p in glob.glob(os.path.join(data, "**", "*"), recursive=True)
                   if p.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
        sys.exit(f"no images under {data}")
    return paths


def pillow_loop(paths, size):
    from covidspark.data.decoding import decode_image

    start = time.perf_counter()
    for p in paths:
        with open(p, "rb") as f:
            decode_image(f.read(), size, name=p)
    return len(paths) / (time.perf_counter() - start)


def spark_decode(spark, paths, size, partitions):
    import pandas as pd

    def decode(batches):
        from covidspark.data.decoding import decode_image
        from covidspark.data.reading import read_bytes

        for batch in batches:
            means = [float(decode_image(read_bytes(p), size, name=p).mean()) for p in batch["path"]]
            yield pd.DataFrame({"mean": means})

    df = spark.createDataFrame([(p,) for p in paths], "path string").repartition(partitions)
    start = time.perf_counter()
    n = df.mapInPandas(decode, "mean double").count()
    elapsed = time.perf_counter() - start
    assert n == len(paths)
    return len(paths) / elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="folder of images (searched recursively)")
    parser.add_argument("--min-images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=None, help="default: one per core")
    args = parser.parse_args()

    from covidspark.runtime.session import get_spark

    files = image_paths(args.data)
    paths = files * -(-args.min_images // len(files))
    spark = get_spark("benchmark-ingest", master=f"local[{args.cores}]",
                      conf={"spark.ui.showConsoleProgress": "false"})
    partitions = args.partitions or args.cores
    spark_decode(spark, files[: args.cores * 4], args.size, args.cores)  # warm the workers
    spark_ips = spark_decode(spark, paths, args.size, partitions)
    pillow_ips = pillow_loop(paths, args.size)
    print(json.dumps({
        "benchmark": "ingest", "data": args.data, "files": len(files), "images": len(paths),
        "size": args.size, "cores": args.cores, "spark": spark.version,
        "spark_ips": round(spark_ips, 2), "pillow_ips": round(pillow_ips, 2),
        "ratio": round(spark_ips / pillow_ips, 3),
    }))


if __name__ == "__main__":
    main()
