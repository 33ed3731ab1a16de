"""MLlib pipelines for the binary and 3-class tasks.

Labels are indexed in a fixed order, the same for every data set, so that the
class indices (and so the probability vectors) mean the same thing everywhere:
``normal`` = 0, ``covid`` = 1, ``pneumonia`` = 2. In the binary task COVID-19 is
the positive class (index 1), as in the original studies.
"""
import logging
from covidspark.errors import InputError

logger = logging.getLogger(__name__)

TASKS = {
    "binary": ("normal", "covid"),
    "3class": ("normal", "covid", "pneumonia"),
}
ALL_LABELS = TASKS["3class"]
CLASSIFIERS = ("lr", "rf", "dt")

LABEL_INDEX_COL = "label_index"
PREDICTED_LABEL_COL = "predicted_label"


def task_labels(task):
    """The class labels of ``task`` in index order."""
    try:
        return TASKS[task]
    except KeyError:
        raise InputError(f"Unknown task {task!r}. Supported: {', '.join(TASKS)}.") from None


def prepare_task(df, task, label_col="label", every_class=True):
    """Keep the rows of ``task``'s classes; check that every label is known.

    Parameters
    ----------
    df : pyspark.sql.DataFrame
    task : {"binary", "3class"}
        ``"binary"`` is COVID-19 vs no findings: pneumonia rows are excluded
        (and counted in the returned summary, never dropped silently).
    label_col : str
    every_class : bool
        Fail unless every class of the task has rows (to fit a model). False:
        one class is enough (to evaluate a fitted model on, say, a COVID-only set).

    Returns
    -------
    (pyspark.sql.DataFrame, dict)
        The rows of the task, and ``{"counts": {label: n}, "excluded": {label: n}}``.

    Raises
    ------
    ValueError
        If a label is null or not one of covid, normal, pneumonia; the message
        gives the label, its count and an example path. If a class has no rows
        (with ``every_class``), or none has.
    """
    from pyspark.sql import functions as F

    labels = task_labels(task)
    if label_col not in df.columns:
        raise InputError(f"prepare_task: column {label_col!r} not in {df.columns}")
    example = F.first("path", ignorenulls=True) if "path" in df.columns else F.lit(None)
    rows = df.groupBy(label_col).agg(F.count(F.lit(1)).alias("n"), example.alias("example")).collect()
    unknown = [r for r in rows if r[label_col] not in ALL_LABELS]
    if unknown:
        details = "; ".join(f"{r[label_col]!r}: {r.n} row(s), e.g. {r.example}" for r in unknown)
        raise InputError(
            f"Unknown label(s) ({details}). Labels must be one of {', '.join(ALL_LABELS)}; "
            f"map folder names with label_map (e.g. --label-map ozturk)."
        )
    counts = {r[label_col]: r.n for r in rows if r[label_col] in labels}
    excluded = {r[label_col]: r.n for r in rows if r[label_col] not in labels}
    missing = [label for label in labels if label not in counts]
    if missing and (every_class or not counts):
        raise InputError(f"Task {task!r} needs images of {'every' if every_class else 'a'} "
                         f"class; none labelled {missing}.")
    if excluded:
        logger.info("Task %s: excluded %s", task, excluded)
    return df.filter(F.col(label_col).isin(list(labels))), {"counts": counts, "excluded": excluded}


def build_classifier(classifier, seed=0, featuresCol="features", labelCol=LABEL_INDEX_COL):
    """An unfitted MLlib classifier: ``"lr"``, ``"rf"`` or ``"dt"``.

    The defaults suit a few thousand 2048-dimensional deep-feature vectors:
    lightly L2-regularised logistic regression (features standardised), a
    100-tree random forest of depth 8, a depth-8 decision tree.
    """
    from pyspark.ml.classification import (
        DecisionTreeClassifier,
        LogisticRegression,
        RandomForestClassifier,
    )

    common = {"featuresCol": featuresCol, "labelCol": labelCol}
    if classifier == "lr":
        return LogisticRegression(maxIter=200, regParam=0.01, elasticNetParam=0.0, **common)
    if classifier == "rf":
        return RandomForestClassifier(numTrees=100, maxDepth=8, seed=seed, **common)
    if classifier == "dt":
        return DecisionTreeClassifier(maxDepth=8, seed=seed, **common)
    raise InputError(f"Unknown classifier {classifier!r}. Supported: {', '.join(CLASSIFIERS)}.")


def build_head(task, classifier, seed=0, featuresCol="features", labelCol="label"):
    """Label indexer + classifier + label decoder, for data that already has features.

    This is what the jobs fit: features are computed once, and several heads
    can be fitted on them.
    """
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import IndexToString, StringIndexerModel

    labels = list(task_labels(task))
    indexer = StringIndexerModel.from_labels(
        labels, inputCol=labelCol, outputCol=LABEL_INDEX_COL, handleInvalid="error"
    )
    decoder = IndexToString(inputCol="prediction", outputCol=PREDICTED_LABEL_COL, labels=labels)
    return Pipeline(stages=[indexer, build_classifier(classifier, seed, featuresCol), decoder])


def build_pipeline(task="binary", classifier="lr", modelName="ResNet50", weights="imagenet",
                   inputCol="content", seed=0, batchSize=32, scaleHint="SCALE_AREA_AVERAGING"):
    """The whole pipeline: ``DeepImageFeaturizer`` followed by :func:`build_head`.

    Parameters
    ----------
    task : {"binary", "3class"}
    classifier : {"lr", "rf", "dt"}
    modelName, weights, seed, batchSize, scaleHint
        Passed to :class:`covidspark.ml.featurizer.DeepImageFeaturizer`.
    inputCol : str
        The image column (``content`` from :func:`covidspark.data.reading.read_images`).

    Returns
    -------
    pyspark.ml.Pipeline
        Fitting it featurizes the training data; the fitted ``PipelineModel``
        saves and loads like any other.
    """
    from pyspark.ml import Pipeline

    from covidspark.ml.featurizer import DeepImageFeaturizer

    featurizer = DeepImageFeaturizer(inputCol=inputCol, outputCol="features", modelName=modelName,
                                     weights=weights, seed=seed, batchSize=batchSize,
                                     scaleHint=scaleHint)
    head = build_head(task, classifier, seed)
    return Pipeline(stages=[featurizer, *head.getStages()])
