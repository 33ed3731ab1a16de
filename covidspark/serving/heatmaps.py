"""Predictions with heat maps on the executors, one backbone pass per image.

The Spark side of :mod:`covidspark.serving.explain`: the saved model and the
backbone's weights are shipped from the driver (so a model on HDFS, S3 or a
viewfs mount works, and no executor downloads weights), each Python worker
unpacks them into one :class:`~covidspark.serving.predictor.Predictor`, and
:func:`predict_with_heatmaps` classifies every image and renders its map from
the same forward pass. :func:`write_heatmaps` then writes the PNGs through the
filesystem layer from the driver, so they land in the output location and not
on node-local disks.
"""
import io
import os

from covidspark.serving.explain import check_method, explain, overlay_png

# (shipped model archive, shipped weights) -> Predictor, one per Python worker.
_WORKER_PREDICTORS = {}
# Images per heat-map task, by method: about 10 s of a CPU core each (Grad-CAM
# takes about 0.7 s an image, occlusion's 49 forward passes about 4 s), which
# dwarfs a task's start, and progress (an image counts when its task ends) moves
# every few seconds instead of once per file split. "auto" (LR or trees, not known
# here) takes occlusion's.
IMAGES_PER_TASK = {"gradcam": 16, "occlusion": 4, "auto": 4}
# Past this many tasks, tasks grow instead: a scheduler's cost per task is not free.
MAX_TASKS = 10_000
# Heat maps the driver fetches per Spark job while it writes them: a few hundred MB
# of PNGs held at most, and few jobs (a fetch of each small task would be one each).
PNGS_PER_FETCH = 64


def _worker_predictor(model_archive, weights_file=None):
    """The Predictor of a model shipped as a zip (:func:`ship_model`), unpacked once per worker.

    ``weights_file``: the backbone weights shipped from the driver (the name
    ``SparkFiles.get`` knows), so that no executor resolves or downloads them.
    """
    import zipfile

    from pyspark import SparkFiles

    from covidspark.serving.predictor import Predictor

    key = (model_archive, weights_file)
    if key not in _WORKER_PREDICTORS:
        _WORKER_PREDICTORS.clear()  # one model per worker: each holds a backbone
        archive = SparkFiles.get(model_archive)
        target = f"{archive}.d"
        if not os.path.isdir(target):
            tmp = f"{target}.tmp-{os.getpid()}"
            with zipfile.ZipFile(archive) as z:
                z.extractall(tmp)
            try:
                os.rename(tmp, target)
            except OSError:  # another worker of this node unpacked it first
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
        _WORKER_PREDICTORS[key] = Predictor(
            target, weights_file=weights_file and SparkFiles.get(weights_file))
    return _WORKER_PREDICTORS[key]


def ship_model(spark, model_dir):
    """Send a saved PipelineModel (any URI) to every executor as one zip; returns its name.

    The driver reads the folder through the filesystem layer, so a model on
    HDFS, S3 or a viewfs mount reaches executors that could not read it
    themselves; the archive's name carries its content hash.
    """
    import hashlib
    import tempfile
    import zipfile

    from covidspark.evaluation.seen_images import FOLDER as TRAINING_IMAGES
    from covidspark.runtime.connect import ship_file
    from covidspark.runtime.filesystem import Files

    files = Files(spark)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for relative, data in files.read_tree(model_dir):
            # The training images' hashes are the driver's (evaluate), not a worker's.
            if (not relative.rsplit("/", 1)[-1].startswith((".", "_SUCCESS"))
                    and relative.split("/", 1)[0] != TRAINING_IMAGES):
                z.writestr(relative, data)
    data = buffer.getvalue()
    folder = tempfile.mkdtemp(prefix="covidspark-model-")
    path = os.path.join(folder, f"model-{hashlib.sha256(data).hexdigest()[:16]}.zip")
    with open(path, "wb") as f:
        f.write(data)
    return ship_file(spark, path)


def heatmap_file_name(image_id, path):
    """``<first 16 hex of the image id>-<file stem>.png``: unique, and readable."""
    import re

    stem = os.path.splitext(os.path.basename(str(path or "image")))[0]
    return f"{str(image_id)[:16]}-{re.sub(r'[^A-Za-z0-9._-]+', '_', stem)[:80]}.png"


HEATMAP_PNG_COL = "heatmap_png"


PREDICTION_WITH_HEATMAP = ("predicted_label string, probability array<double>, "
                           "heatmap_png binary")


def predict_with_heatmaps(df, model_dir, weights_path, out_dir, content_col="content",
                          path_col="path", id_col="image_id", output_col="heatmap",
                          method="auto", accumulator=None, total=None):
    """Predict every row and draw its heat map in one pass per image, on the executors.

    Each image is decoded once and goes through the backbone once: Grad-CAM
    (LR heads) takes the classifier's features and the last convolutional
    layer's activations from the same forward pass (:func:`~covidspark.serving.explain.predict_with_grad_cam`);
    occlusion (trees) classifies the image and its occluded copies in one batch.
    Each Python worker holds one backbone. The saved model and the backbone's
    weights file are shipped from the driver (:func:`ship_model`), so
    ``model_dir`` may be any URI the driver can read and no executor resolves or
    downloads weights.

    Parameters
    ----------
    df : pyspark.sql.DataFrame
        Encoded images (``content_col``), their ``path_col`` and ``id_col``.
    model_dir : str
        The saved PipelineModel.
    weights_path : str
        The backbone weights file on the driver, as the model's featurizer
        resolved it (its sha256 is checked against the one the model recorded).
    out_dir : str
        Where the PNGs are to be written (:func:`write_heatmaps` writes them).
    method : {"auto", "gradcam", "occlusion"}
    accumulator : pyspark.Accumulator, optional
        Incremented by the images done, for progress lines (classic sessions).
    total : int, optional
        Rows of ``df`` (counted when not given). The rows are spread over tasks
        of at most ``IMAGES_PER_TASK[method]`` images, as many on every core (at
        most ``MAX_TASKS`` tasks).

    Returns
    -------
    pyspark.sql.DataFrame
        ``df`` plus ``predicted_label``, ``probability`` (array, in the model's
        label order), ``heatmap_png`` (the overlay PNG's bytes) and ``output_col``
        (``<out_dir>/<heatmap_file_name>``). The heat map explains the predicted
        class. Predictions equal the Spark pipeline's for a Keras-engine model;
        for other engines they come from the Keras float32 backbone Grad-CAM
        needs (features within about 1e-5).
    """
    from typing import Iterator, Tuple

    import pandas as pd
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf

    from covidspark.runtime.connect import default_parallelism, ship_file
    from covidspark.runtime.filesystem import join

    spark = df.sparkSession
    per_task = IMAGES_PER_TASK[check_method(method)]
    total = df.count() if total is None else total
    cores = max(default_parallelism(spark), 1)
    # As many tasks on every core, so that none is left to finish alone.
    rounds = -(-total // (per_task * cores))
    df = df.repartition(max(1, min(rounds * cores, MAX_TASKS)))
    archive = ship_model(spark, model_dir)
    weights = ship_file(spark, weights_path)

    def render(batches: Iterator[Tuple[pd.Series, pd.Series]]) -> Iterator[pd.DataFrame]:
        predictor = _worker_predictor(archive, weights)
        labels = list(predictor.labels)
        for contents, paths in batches:
            rows = []
            for content, path in zip(contents, paths):
                result, heat, image = explain(predictor, content, method=method, name=path)
                rows.append((result["label"], [result["probabilities"][k] for k in labels],
                             overlay_png(image, heat)))
            if accumulator is not None:
                accumulator.add(len(rows))
            yield pd.DataFrame(rows, columns=["predicted_label", "probability", HEATMAP_PNG_COL])

    udf = pandas_udf(render, PREDICTION_WITH_HEATMAP)
    name = F.udf(heatmap_file_name, "string")
    predicted = df.withColumn("_predicted", udf(F.col(content_col), F.col(path_col)))
    return (predicted.select("*", *[F.col(f"_predicted.{c}").alias(c)
                                    for c in ("predicted_label", "probability", HEATMAP_PNG_COL)])
            .drop("_predicted")
            .withColumn(output_col, F.concat(F.lit(join(out_dir, "")), name(id_col, path_col))))


def write_heatmaps(df, files, output_col="heatmap", total=None):
    """Write every row's ``heatmap_png`` to its ``output_col`` URI; returns the number written.

    Rows stream to the driver one partition at a time (``toLocalIterator``):
    the driver holds one partition's PNGs at most. Persist ``df`` and compute
    it first (``count()``): ``toLocalIterator`` runs one Spark job per
    partition, one after the other, so maps not yet computed would be drawn a
    partition at a time, and without the cache its other columns would be
    computed twice. With ``total`` (its rows), cached partitions are fetched
    ``PNGS_PER_FETCH`` rows a job.
    """
    if total is not None:
        df = df.coalesce(max(1, -(-total // PNGS_PER_FETCH)))
    written = 0
    for row in df.select(output_col, HEATMAP_PNG_COL).toLocalIterator():
        files.write_bytes(row[0], bytes(row[1]))
        written += 1
    return written
