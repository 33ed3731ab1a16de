"""A train job against its own featurizer, and the feature store from empty and with 10 % new.

One Spark session (local mode, so the executors' Hadoop statistics live in this
JVM), one run, JSON out. For each data set:

- ``featurize_only``: ``DeepImageFeaturizer.transform`` on the task's images,
  features written to Parquet: the speed a train job cannot beat.
- ``train``: the train workflow end to end (read with the ingest pass,
  duplicates, grouped split, featurize, fit, bootstrap CIs, baseline, report,
  save), as ``jobs/train_lr.py`` runs it.
- Decodes are counted, not estimated: every decode of an image appends a byte
  (``COVIDSPARK_COUNT_DECODES``), in every Python worker. Bytes read are Hadoop's
  ``file:`` statistics of this JVM (the images, and also the job's own
  Parquet and model files: an upper bound on the image bytes).
  ``train_bytes_read_per_image_size`` divides them by the size of the task's
  images (``image_bytes``): a binary task does not read the third class's bytes.
- ``spark_jobs``: Spark jobs each arm ran. On a few hundred images a train job's
  time beyond featurizing is mostly per-job cost (an LR iteration is a job).
- ``cpu_s`` (Linux): CPU seconds each arm used, by role: this driver, the
  JVM's JIT compilers (``jvm_jit``), the rest of the JVM, the Python workers;
  ``cores_busy`` is their sum over the arm's seconds. At the machine's core
  count an arm is CPU-bound, and only less CPU work makes it faster there.
- ``--train-runs N``: the train job again, N - 1 more times in the same JVM
  (``train_again``): what a notebook's later runs on a warm cluster cost, beside
  the first run that every ``spark-submit`` pays.

Then the feature store (the featurize workflow, as ``jobs/featurize.py``) over
``--synthetic`` images from empty, and again after adding 10 % new images.

Targets (issue 15): train >= 0.8 x featurize-only images/s; <= 2 decodes per
image; <= 2 x the images' size read; the rerun decodes only the new images in
the network and costs <= 0.2 x the first run.

Weights are seeded random (``--weights random``): no ImageNet download here.

    python benchmarks/jobs.py --manifest ../shared/data/ozturk/manifest.csv \\
        --patients ../shared/data/ozturk/patients.csv --synthetic 10000 --out jobs.json
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import cpu_seconds_by_role, emit_json  # noqa: E402


def hadoop_bytes_read(spark, scheme="file"):
    """Bytes read so far through Hadoop's ``scheme`` filesystems in this JVM."""
    statistics = spark._jvm.org.apache.hadoop.fs.FileSystem.getAllStatistics()
    return sum(s.getBytesRead() for s in statistics if s.getScheme() == scheme)


def spark_jobs_started(spark):
    """Spark jobs started so far in this application (job ids count up from 0).

    The status tracker keeps the newest jobs (``spark.ui.retainedJobs``), so the
    highest id it knows is the count. None of covidspark's jobs set a job group.
    """
    return max(spark.sparkContext.statusTracker().getJobIdsForGroup(), default=-1) + 1


class Counters:
    """Decodes, bytes read, seconds and Spark jobs between two points of the run."""

    def __init__(self, spark, decode_dir):
        self.spark, self.decode_dir = spark, decode_dir

    def snapshot(self):
        from covidspark.data.decoding import counted_decodes

        return (counted_decodes(self.decode_dir), hadoop_bytes_read(self.spark), time.time(),
                spark_jobs_started(self.spark), cpu_seconds_by_role())

    def since(self, start):
        decodes, read, now, jobs, cpu = self.snapshot()
        seconds = now - start[2]
        counted = {"decodes": decodes - start[0], "bytes_read": read - start[1],
                   "seconds": round(seconds, 2), "spark_jobs": jobs - start[3]}
        if cpu is not None:
            used = {role: round(cpu[role] - start[4][role], 2) for role in cpu}
            # Near os.cpu_count(): the arm kept every core busy, and only less CPU
            # work (not overlap) makes it faster on this machine.
            counted["cpu_s"] = {**used, "cores_busy": round(sum(used.values()) / seconds, 2)}
        return counted


def task_images(spark, config, labels):
    """``config``'s images without validation; only those labelled ``labels`` are read.

    The others are rows without bytes (``read_images(..., inspect_labels=...)``),
    as the train job leaves the classes its task drops.
    """
    from covidspark.data.reading import read_images

    source = (dict(manifest=config.manifest) if config.manifest else dict(path=config.data[0]))
    return read_images(spark, validate=False, label_map=config.label_map,
                       inspect_labels=labels, **source)


def image_bytes(spark, images):
    from pyspark.sql import functions as F

    return images.select(F.sum(F.length("content"))).first()[0] or 0


def featurize_only(spark, counters, config, task_labels, tmp):
    """The featurizer alone on the task's images: read, decode, forward, write."""
    from pyspark.sql import functions as F

    from covidspark.workflows import steps

    images = task_images(spark, config, task_labels).filter(
        F.col("label").isin(list(task_labels)))
    featurizer, _ = steps.make_featurizer(config, [])
    # Warm both Python workers first (interpreter, engine, model load or conversion):
    # the train job after this arm runs on warm workers, so this arm must too.
    featurizer.transform(images.limit(8).repartition(2)).select("features").collect()
    start = counters.snapshot()
    out = tempfile.mkdtemp(prefix="featurize-only-", dir=tmp) + "/features"
    featurizer.transform(images).select("image_id", "features").write.parquet(out)
    counted = counters.since(start)
    n = spark.read.parquet(out).count()
    return {"images": n, **counted, "images_per_s": round(n / counted["seconds"], 2),
            "decodes_per_image": round(counted["decodes"] / n, 3)}


def train_job(spark, counters, config):
    from covidspark.workflows.training import train

    start = counters.snapshot()
    result = train(config)
    counted = counters.since(start)
    n = result.run["images_featurized"]
    # Every image the job counted, the dropped class's too (listed, never read).
    listed = sum(result.run["data"]["class_counts"].values()) + sum(
        result.run["data"]["excluded"].values())
    return {"images_featurized": n, "images_listed": listed, **counted,
            "featurize_s": result.run["timing_s"]["featurize"],
            # Where the rest went: seconds the driver waited in each step.
            "steps_s": result.run["timing_s"],
            "images_per_s": round(n / counted["seconds"], 2),
            # The ingest pass and the network: 2 an image the job featurizes.
            "decodes_per_image_featurized": round(counted["decodes"] / n, 3),
            "decodes_per_image_listed": round(counted["decodes"] / listed, 3)}


def train_vs_featurize(spark, counters, config, tmp, train_runs=1):
    """Featurize-only, then the train job, on ``config``'s data: their JSON block.

    With ``train_runs`` > 1 the train job runs again in the same JVM, as a notebook
    user's second run on an attached cluster would: ``train_again`` gives each
    later run's seconds, steps and ratio. ``train`` is always the first run, the
    one ``spark-submit`` pays every time.
    """
    import dataclasses

    from covidspark.ml.pipelines import task_labels

    only = featurize_only(spark, counters, config, task_labels(config.task), tmp)

    def ratio(run):
        return round(run["images_per_s"] / only["images_per_s"], 3)

    job = train_job(spark, counters, config)
    again = []
    for run in range(1, train_runs):
        later = train_job(spark, counters,
                          dataclasses.replace(config, out=f"{config.out}-{run + 1}"))
        again.append({"seconds": later["seconds"], "spark_jobs": later["spark_jobs"],
                      "steps_s": later["steps_s"], "train_vs_featurize_only": ratio(later),
                      **({"cpu_s": later["cpu_s"]} if "cpu_s" in later else {})})
    # The task's images: those the job must read (the others' bytes are null here).
    size = image_bytes(spark, task_images(spark, config, task_labels(config.task)))
    return {"featurize_only": only, "train": job, "image_bytes": size,
            "train_bytes_read_per_image_size": round(job["bytes_read"] / size, 3),
            "train_vs_featurize_only": ratio(job),
            **({"train_again": again} if again else {})}


def add_new_images(root, fraction, seed):
    """Add ``fraction`` new synthetic images into the class folders under ``root``."""
    from covidspark.data.synthetic import synthetic

    per_class = {label: len(os.listdir(os.path.join(root, label))) for label in os.listdir(root)
                 if os.path.isdir(os.path.join(root, label))}
    n_new = max(1, round(fraction * min(per_class.values())))
    extra = synthetic(tempfile.mkdtemp(prefix="covidspark-new-"), n_per_class=n_new, seed=seed)
    added = new_bytes = 0
    for label in per_class:
        for name in os.listdir(os.path.join(extra, label)):
            shutil.copy(os.path.join(extra, label, name), os.path.join(root, label, f"new-{name}"))
            added += 1
            new_bytes += os.path.getsize(os.path.join(extra, label, name))
    shutil.rmtree(extra)
    return added, new_bytes


def feature_store(spark, counters, args, tmp):
    from covidspark.data.synthetic import synthetic
    from covidspark.workflows.config import FeaturizeConfig
    from covidspark.workflows.featurization import featurize

    per_class = max(1, args.synthetic // 3)
    root = synthetic(os.path.join(tmp, "synthetic"), n_per_class=per_class, seed=args.seed)
    config = FeaturizeConfig(data=[root], model=args.model, weights="random", engine=args.engine,
                             batch_size=args.batch_size, features=os.path.join(tmp, "store"),
                             seed=args.seed)
    runs = []
    for step in ("from empty", "10 % new"):
        if step == "10 % new":
            added, new_bytes = add_new_images(root, 0.10, args.seed + 1)
        start = counters.snapshot()
        result = featurize(config)
        counted = counters.since(start)
        runs.append({"run": step, "images": result.images, "computed": result.computed,
                     "reused": result.reused, "files_not_read": result.files_not_read,
                     **counted,
                     **({"added": added, "added_bytes": new_bytes} if step == "10 % new"
                        else {})})
    first, rerun = runs
    return {"runs": runs,
            "rerun_cost_ratio": round(rerun["seconds"] / first["seconds"], 3),
            # 1.0: the rerun read the new images and nothing else (a store's own Parquet
            # is read through the same file system, so a little over 1.0).
            "rerun_bytes_read_per_new_image_size": round(rerun["bytes_read"] / new_bytes, 3),
            # Each new image is decode-checked once and featurized once; stored ones not at all.
            "rerun_decodes_per_new_image": round(rerun["decodes"] / max(rerun["computed"], 1),
                                                 3)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", help="CSV path,label[,patient_id,source]")
    parser.add_argument("--data", help="class-folder tree (instead of --manifest)")
    parser.add_argument("--label-map")
    parser.add_argument("--patients")
    parser.add_argument("--task", default="binary")
    parser.add_argument("--synthetic", type=int, default=10000,
                        help="images for the feature-store runs (0: skip them)")
    parser.add_argument("--synthetic-train", type=int, default=0,
                        help="also train vs featurize-only on this many synthetic images")
    parser.add_argument("--model", default="ResNet50")
    parser.add_argument("--engine", default="openvino")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-runs", type=int, default=1,
                        help="run the train job this many times in the one JVM (later runs: "
                             "a notebook's second run on a warm cluster)")
    parser.add_argument("--keep", choices=("auto", "cache"), default="auto",
                        help="how a fit's rows are kept: auto (a local checkpoint in local "
                             "mode), or cache (persisted, as on a cluster): the A/B of "
                             "covidspark.runtime.lineage, one run of each")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.train_runs < 1:
        parser.error(f"--train-runs {args.train_runs}: expected 1 or more")

    from covidspark.data.decoding import COUNT_DECODES_ENV

    tmp = tempfile.mkdtemp(prefix="covidspark-bench-jobs-")
    decode_dir = os.path.join(tmp, "decodes")
    os.makedirs(decode_dir)
    # Before the JVM starts: its Python workers inherit the variable.
    os.environ[COUNT_DECODES_ENV] = decode_dir
    from covidspark.runtime.session import get_spark
    from covidspark.workflows.config import TrainConfig

    spark = get_spark("covidspark-bench-jobs", master=args.master)
    if args.keep == "cache":
        from covidspark.runtime import lineage

        lineage.executors_in_driver = lambda _spark: False

    counters = Counters(spark, decode_dir)
    result = {"weights": "random (seeded; not pretrained ImageNet)", "model": args.model,
              "engine": args.engine, "master": args.master, "cores": os.cpu_count(),
              "fit_rows_kept": "persisted" if args.keep == "cache" else "auto"}

    def train_config(source, out, label_map=args.label_map, patients=args.patients):
        return TrainConfig(**source, label_map=label_map, patients=patients,
                           task=args.task, model=args.model, weights="random",
                           engine=args.engine, batch_size=args.batch_size,
                           bootstrap=args.bootstrap, seed=args.seed, out=os.path.join(tmp, out))

    if args.manifest or args.data:
        source = (dict(manifest=args.manifest) if args.manifest else dict(data=[args.data]))
        result["real"] = {"data": args.manifest or args.data, "task": args.task,
                          **train_vs_featurize(spark, counters, train_config(source, "run"),
                                               tmp, args.train_runs)}
    if args.synthetic_train:
        from covidspark.data.synthetic import synthetic

        root = synthetic(os.path.join(tmp, "synthetic-train"),
                         n_per_class=max(1, args.synthetic_train // 3), seed=args.seed)
        # Synthetic class folders are the labels; no patient table (one image a patient).
        config = train_config(dict(data=[root]), "synthetic-run", label_map=None, patients=None)
        result["synthetic_train"] = {"images": args.synthetic_train, "task": args.task,
                                     **train_vs_featurize(spark, counters, config, tmp,
                                                        args.train_runs)}
    if args.synthetic:
        result["feature_store"] = {"images": args.synthetic,
                                   **feature_store(spark, counters, args, tmp)}
    shutil.rmtree(tmp, ignore_errors=True)
    emit_json(result, args.out, indent=2)


if __name__ == "__main__":
    main()
