"""The predict workflow: a saved model's label and class probabilities for every image."""
import dataclasses
import logging
import os

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
    """

    predictions: int
    images: int
    rejected: list
    out: str

    def summary(self):
        """The text ``covidspark predict`` prints."""
        lines = [f"{self.predictions} predictions of {self.images} images -> "
                 f"{os.path.abspath(self.out)}; {len(self.rejected)} rejected"]
        lines += [f"  rejected {path}: {reason}" for path, reason in self.rejected[:20]]
        return "\n".join(lines)


def predict(config):
    """Predict every image of ``config.images`` (any layout) or ``config.data`` / ``manifest``.

    Writes ``path`` (and ``label`` for labelled input), ``predicted_label``,
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
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    from covidspark.data.reading import read_images
    from covidspark.ml.thresholds import saved_threshold
    from covidspark.runtime.progress import Progress
    from covidspark.runtime.session import get_spark

    config.validate()
    spark = get_spark("covidspark-predict", master=config.master)
    model, indexer = steps.load_model(config.model_dir)
    labels = list(indexer.labels)
    if config.images:
        result = read_images(spark, config.images, strict=False, labelled=False)
        rejects = [(r.path, r.reason) for r in result.rejects.collect()]
        if rejects and not config.lenient:
            from covidspark.data.reading import IngestError, format_rejects

            raise IngestError(format_rejects(config.images, rejects, result.total), rejects)
        images, total = result.images, result.accepted
    else:
        images, _, _, rejects = steps.read_input(spark, config, [])
        total = images.count()
    # The indexer needs a label; a missing or unknown one must not fail prediction.
    indexer.setHandleInvalid("keep")
    featurizer = model.stages[0]
    spark.sparkContext.setJobDescription(f"predict {total} images")
    probability = vector_to_array("probability")
    predictions = model.transform(images.withColumn(
        "label", F.coalesce(F.col("label"), F.lit(labels[0]))))
    if config.heatmaps:
        from covidspark.serving.explain import add_heatmaps

        predictions = add_heatmaps(predictions, os.path.abspath(config.model_dir),
                                   config.heatmaps)
    # The binary COVID threshold the model predicted with (null for 3-class argmax).
    threshold = F.lit(saved_threshold(model)).cast("double").alias("threshold")
    predictions = predictions.select(
        "path", *([F.col("label").alias("label")] if not config.images else []),
        "predicted_label", *[probability[k].alias(f"p_{name}") for k, name in enumerate(labels)],
        threshold, *(["heatmap"] if config.heatmaps else []))
    with Progress("predict", total, featurizer.imagesFeaturized):
        if config.out.endswith(".csv"):
            frame = predictions.toPandas()
            frame.to_csv(config.out, index=False)
            n = len(frame)
        else:
            predictions.write.mode("overwrite").parquet(config.out)
            n = spark.read.parquet(config.out).count()
    return PredictResult(predictions=n, images=total, rejected=rejects, out=config.out)
