"""A model's own training images, recorded with it and found again when it is evaluated.

A model scored on images it learned from reports what it memorised. Public
COVID X-ray sets share images (Cohen's reappear in Ozturk's, Chowdhury's and
COVIDx), so "a model trained on one collection, tested on another"
(``covidspark evaluate``) can be a test on its own training images, byte for
byte or re-encoded. The train, compare and finetune workflows therefore save
the sha256 id and perceptual hash of every training and validation image inside
the model folder (:data:`FOLDER`, Parquet; ``PipelineModel.load`` reads only
``metadata/`` and ``stages/``, and the archive shipped to executors leaves it
out). Evaluate looks each image up there: the same id is an exact copy, a hash
within ``max_distance`` bits a near one, as in the duplicate search of
:mod:`covidspark.data.duplicates`.
"""
import logging

import numpy as np

from covidspark.data.duplicates import DEFAULT_MAX_DISTANCE, DRIVER_SEARCH_MAX_ROWS, pairs_within

logger = logging.getLogger(__name__)

#: The folder inside a saved model that holds its training images' ids and hashes.
FOLDER = "training_images"
#: Copies named in metrics.json (all are counted).
LISTED = 1000
_SCHEMA = "image_id string, path string, label string, phash64 bigint"


def _hashed(images):
    """``image_id, path, label, phash64`` of ``images`` (a null hash without ingest facts)."""
    from pyspark.sql import functions as F

    from covidspark.data.ingest import has_info

    phash = F.col("info.phash64") if has_info(images) else F.lit(None).cast("bigint")
    return images.select("image_id", "path", "label", phash.alias("phash64"))


def remember_training_images(split, model_dir, labels=None, split_col="split"):
    """Save the ids and hashes of ``split``'s training and validation rows inside ``model_dir``.

    Parameters
    ----------
    split : pyspark.sql.DataFrame
        The split the model was fitted on: ``image_id``, ``path``, ``label``,
        ``split_col`` and, from the ingest pass, ``info.phash64``.
    model_dir : str
        The saved model's folder (any URI Spark writes).
    labels : sequence of str, optional
        The model's classes, where ``split`` holds more (compare's binary models
        fit on the normal and COVID rows of a 3-class split).
    """
    from pyspark.sql import functions as F

    from covidspark.runtime.filesystem import join

    fitted = F.col(split_col).isin("train", "validation")
    if labels is not None:
        fitted = fitted & F.col("label").isin(*labels)
    seen = _hashed(split.filter(fitted))
    seen.coalesce(1).write.mode("overwrite").parquet(join(model_dir, FOLDER))


def seen_in_training(spark, images, model_dir, max_distance=DEFAULT_MAX_DISTANCE):
    """Which of ``images`` are copies of the images the model at ``model_dir`` was fitted on.

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
    images : pyspark.sql.DataFrame
        ``image_id``, ``path``, ``label`` and the ingest pass's ``info``.
    model_dir : str
    max_distance : int
        Perceptual-hash bits two copies may differ in (the duplicate search's default).

    Returns
    -------
    dict
        ``checked`` (False, with ``reason``, for a model that records no images),
        ``training_images``, ``evaluated``, ``exact``, ``near``, ``max_distance``
        and ``copies``: ``{path, training_path, distance, exact}`` per copy, the
        closest training image each, sorted by path.
    """
    from covidspark.runtime.filesystem import Files, join

    files = Files(spark)
    location = join(files.qualify(model_dir), FOLDER)
    if not files.exists(location):
        return {"checked": False,
                "reason": f"the model records no training images ({FOLDER}/ is not in "
                          f"{model_dir}: saved before covidspark recorded them, or not by "
                          f"its train, compare or finetune)"}
    training = spark.read.schema(_SCHEMA).parquet(location)
    evaluated = _hashed(images)
    collected = [df.limit(DRIVER_SEARCH_MAX_ROWS + 1).toPandas() for df in (training, evaluated)]
    if len(collected[0]) + len(collected[1]) > DRIVER_SEARCH_MAX_ROWS:
        reason = (f"more than {DRIVER_SEARCH_MAX_ROWS:,} training and evaluated images together, "
                  f"too many to look up on the driver; evaluate in parts to check")
        logger.warning("Copies of the model's training images not looked for: %s", reason)
        return {"checked": False, "reason": reason}
    copies = _copies(*collected, max_distance)
    return {"checked": True, "training_images": len(collected[0]),
            "evaluated": len(collected[1]), "max_distance": max_distance,
            "exact": sum(c["exact"] for c in copies),
            "near": sum(not c["exact"] for c in copies), "copies": copies}


def _copies(training, evaluated, max_distance):
    """``{path, training_path, distance, exact}`` of each evaluated row with a training copy."""
    best = {}
    training_path_of = dict(zip(training["image_id"], training["path"]))
    for path, image_id in zip(evaluated["path"], evaluated["image_id"]):
        if image_id in training_path_of:
            best[path] = (0, True, training_path_of[image_id])
    t = training[training["phash64"].notna()]
    e = evaluated[evaluated["phash64"].notna()]
    hashes = np.concatenate([t["phash64"].to_numpy(np.int64), e["phash64"].to_numpy(np.int64)])
    i, j, distance = pairs_within(hashes, max_distance)
    # Pairs are i < j, and the training hashes come first: a copy pairs i in t with j in e.
    across = (i < len(t)) & (j >= len(t))
    training_paths, evaluated_paths = t["path"].to_numpy(), e["path"].to_numpy()
    for a, b, d in sorted(zip(i[across], j[across] - len(t), distance[across]),
                          key=lambda found: (found[2], training_paths[found[0]])):
        best.setdefault(evaluated_paths[b], (int(d), False, training_paths[a]))
    return [{"path": path, "training_path": training_path, "distance": d, "exact": exact}
            for path, (d, exact, training_path) in sorted(best.items())]


def caution(seen, policy):
    """The sentence a report and the command print about a checked ``seen`` (None: no copies)."""
    found = len(seen["copies"])
    if not found:
        return None
    what = (f"{found} of the {seen['evaluated']} evaluated images are copies of the model's own "
            f"training or validation images ({seen['exact']} identical files, {seen['near']} "
            f"near: perceptual hash within {seen['max_distance']} bits)")
    if policy == "drop":
        return f"Left out: {what}; the metrics are on the other {seen['evaluated'] - found}."
    return (f"Caution: {what}, and the metrics count them as test images. "
            f"--seen drop evaluates without them.")


def listed(seen):
    """``seen`` as metrics.json keeps it: counts, and the first :data:`LISTED` copies."""
    if not seen.get("checked"):
        return seen
    return {**seen, "copies": seen["copies"][:LISTED], "listed": min(len(seen["copies"]), LISTED)}
