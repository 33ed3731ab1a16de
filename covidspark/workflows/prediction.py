"""The predict workflow: a saved model's label and class probabilities for every image."""
import dataclasses
import logging
import posixpath
from typing import Optional

from covidspark.runtime import lineage
from covidspark.runtime.connect import set_job_description
from covidspark.workflows import steps

logger = logging.getLogger("covidspark")


@dataclasses.dataclass
class PredictResult:
    """What :func:`predict` wrote.

    Attributes
    ----------
    predictions : int
        Rows written to ``out``.
    images : int
        Images accepted for prediction.
    rejected : list of (str, str)
        ``(path, reason)`` of files skipped by a lenient read.
    out : str
    rejected_out : str or None
        The CSV (``path,reason``) of every rejected file, written beside ``out``
        when there are any (:func:`rejected_location`).
    """

    predictions: int
    images: int
    rejected: list
    out: str
    rejected_out: Optional[str] = None

    def summary(self):
        """The text ``covidspark predict`` prints."""
        from covidspark.data.rejects import summary_lines

        lines = [f"{self.predictions} predictions of {self.images} images -> "
                 f"{steps.shown(self.out)}; {len(self.rejected)} rejected"]
        lines += summary_lines(self.rejected, self.rejected_out and steps.shown(self.rejected_out))
        return "\n".join(lines)


def rejected_location(out):
    """Where predict lists its rejected files: ``p.rejected.csv`` beside ``p.csv``, or
    ``_rejected.csv`` inside a Parquet folder (Spark and pyarrow skip ``_`` files)."""
    from covidspark.runtime.filesystem import join

    return out[:-len(".csv")] + ".rejected.csv" if out.endswith(".csv") else join(
        out, "_rejected.csv")


@lineage.frees_what_it_keeps
def predict(config):
    """Predict every image of ``config.images`` (any layout) or ``config.data`` / ``manifest``.

    Writes ``path`` (with ``patients``, ``patient_id``; ``label`` for labelled
    input), ``predicted_label``,
    ``p_<class>`` per class, ``threshold`` (the binary COVID threshold the model
    predicts with; null for 3-class) and, with ``heatmaps``, ``heatmap`` (the
    overlay PNG's path, computed on the executors).

    Parameters
    ----------
    config : covidspark.workflows.PredictConfig

    Returns
    -------
    PredictResult
    """
    from pyspark import StorageLevel
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    from covidspark.data.reading import read_images
    from covidspark.ml.thresholds import saved_threshold
    from covidspark.runtime.filesystem import Files
    from covidspark.runtime.progress import Progress
    from covidspark.runtime.session import get_spark

    config.validate()
    spark = get_spark("covidspark-predict", master=config.master, remote=config.remote)
    files = Files(spark)
    out = files.qualify(config.out)
    # Before any work: the folder of the predictions (or the CSV's), and the heat maps'.
    if out.endswith(".csv"):
        files.check_writable(posixpath.dirname(out), f"--out {config.out}: its folder")
    else:
        files.check_writable(out, "--out")
    heatmaps = config.heatmaps and files.check_writable(config.heatmaps, "--heatmaps")
    model, indexer = steps.load_model(spark, config.model_dir)
    labels = list(indexer.labels)
    if config.images:
        result = read_images(spark, config.images, strict=False, labelled=False,
                             patients=config.patients)
        rejects = [(r.path, r.reason) for r in result.rejects.collect()]
        if rejects and not config.lenient:
            from covidspark.data.rejects import WORKFLOW_ADVICE, IngestError

            raise IngestError.of(config.images, rejects, result.total, instead=WORKFLOW_ADVICE)
        images, total = result.images, result.accepted
    else:
        images, _, _, rejects = steps.read_input(spark, config, [])
        total = images.count()
    # The indexer needs a label; a missing or unknown one must not fail prediction.
    indexer.setHandleInvalid("keep")
    featurizer = model.stages[0]
    set_job_description(spark, f"predict {total} images")
    if heatmaps:
        from pyspark.ml.classification import LogisticRegressionModel

        from covidspark.runtime.connect import ImageCounter
        from covidspark.serving.explain import method_for
        from covidspark.serving.heatmaps import HEATMAP_PNG_COL, predict_with_heatmaps

        # One pass per image on the executors gives the prediction and its heat map;
        # the weights are resolved here, on the driver, and shipped.
        counter = ImageCounter(spark)
        predictions = counter.observe(predict_with_heatmaps(
            images, files.qualify(config.model_dir), featurizer.resolvedWeights().path,
            heatmaps, accumulator=counter.accumulator, total=total,
            # What explain's "auto" picks; the driver knows it, for the tasks' size.
            method=method_for(any(isinstance(stage, LogisticRegressionModel)
                                  for stage in model.stages))))
        probability = F.col("probability")
        done = lambda: counter.value  # noqa: E731
    else:
        probability = vector_to_array("probability")
        predictions = model.transform(images.withColumn(
            "label", F.coalesce(F.col("label"), F.lit(labels[0]))))
        done = featurizer.imagesFeaturized
    # The binary COVID threshold the model predicted with (null for 3-class argmax).
    threshold = F.lit(saved_threshold(model)).cast("double").alias("threshold")
    predictions = predictions.select(
        "path", *(["patient_id"] if config.patients else []),
        *([F.col("label").alias("label")] if not config.images else []),
        "predicted_label", *[probability[k].alias(f"p_{name}") for k, name in enumerate(labels)],
        threshold, *(["heatmap", HEATMAP_PNG_COL] if heatmaps else []))
    if heatmaps:
        # Computed once, by one job on every core: the heat maps are written from
        # the cache, then the table. Freed when predict ends (frees_what_it_keeps).
        predictions = lineage.persist(predictions, StorageLevel.MEMORY_AND_DISK)
    with Progress("predict", total, done):
        if heatmaps:
            from covidspark.serving.heatmaps import write_heatmaps

            predictions.count()
            write_heatmaps(predictions, files, total=total)
            predictions = predictions.drop(HEATMAP_PNG_COL)
        if out.endswith(".csv"):
            frame = predictions.toPandas()
            files.write_text(out, frame.to_csv(index=False))
            n = len(frame)
        else:
            predictions.write.mode("overwrite").parquet(out)
            n = spark.read.parquet(out).count()
    rejected_out = rejected_location(out)
    if rejects:  # after the write: an overwritten Parquet folder starts empty
        from covidspark.data.rejects import rejects_csv

        files.write_text(rejected_out, rejects_csv(rejects))
    else:  # not a list of another run's rejects beside this run's predictions
        files.delete(rejected_out)
        rejected_out = None
    return PredictResult(predictions=n, images=total, rejected=rejects, out=out,
                         rejected_out=rejected_out)
