"""One experiment, from split images to a reported model: the core of ``train`` and ``compare``.

The steps, each usable alone:

1. :func:`split_images`: train / validation / test (and CV folds), grouped by
   patient and duplicate group, or by source (train on one collection, test on
   another).
2. Featurize once (the caller: :class:`~covidspark.featurizer.DeepImageFeaturizer`
   or a :class:`~covidspark.features.FeatureStore`), persist.
3. :func:`fit_and_evaluate`: class weights, cross-validation over the folds,
   the COVID threshold chosen on validation data and stored in the model,
   test metrics with bootstrap intervals and the threshold trade-off table.
4. :func:`baseline`: the same on 32x32 pixels, for the shortcut check.
"""
import logging
from dataclasses import dataclass
from typing import Optional

logger = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    """How heads are fitted and evaluated.

    Attributes
    ----------
    seed : int
        Seed of the split, RF/DT and the bootstrap.
    class_weight : bool
        Weight rows by inverse class frequency (``weightCol``).
    tune : str, optional
        ``"cv"``: cross-validate the classifier's grid over the grouped folds.
    k_folds : int
        Folds for ``tune="cv"``.
    threshold : str, optional
        COVID threshold strategy (binary task): ``recall:0.95``, ``f1``,
        ``youden`` or a number; see :mod:`covidspark.thresholds`.
    bootstrap : int
        Bootstrap resamples of the confidence intervals.
    """

    seed: int = 0
    class_weight: bool = False
    tune: Optional[str] = None
    k_folds: int = 3
    threshold: Optional[str] = None
    bootstrap: int = 1000

    def validate(self, task):
        from covidspark.thresholds import parse_strategy

        if self.tune not in (None, "cv"):
            raise ValueError(f"Unknown tuning {self.tune!r}: use 'cv' (grouped k-fold)")
        if self.threshold is not None:
            if task != "binary":
                raise ValueError("A COVID decision threshold applies to the binary task; the "
                                 "3-class task predicts the most probable class")
            parse_strategy(self.threshold)

    @property
    def needs_validation(self):
        from covidspark.thresholds import needs_validation

        return self.threshold is not None and needs_validation(self.threshold)


# ------------------------------------------------------------------ split

def split_images(images, test_fraction=0.2, validation_fraction=0.0, seed=0, k_folds=None,
                 train_source=None, test_source=None):
    """Add ``split`` (train / validation / test) and, with ``k_folds``, ``fold``.

    Parameters
    ----------
    images : pyspark.sql.DataFrame
        With ``path``, ``label`` and optionally ``patient_id``, ``dup_group``, ``source``.
    test_fraction, validation_fraction : float
        Shares of each class (ignored for the test side of a cross-source split).
    seed : int
    k_folds : int, optional
        Folds of the training rows for cross-validation.
    train_source, test_source : str, optional
        Train (and validate) on rows of one ``source``, test on rows of another;
        rows of other sources are excluded and counted, and test rows that
        duplicate a training image are removed and listed.

    Returns
    -------
    (pyspark.sql.DataFrame, dict)
        The rows with ``split``; and ``{"method", "excluded_sources",
        "cross_source_duplicates"}``.
    """
    from pyspark.sql import functions as F

    from covidspark import splits

    group_cols = [c for c in ("patient_id", "dup_group") if c in images.columns]
    info = {"excluded_sources": {}, "cross_source_duplicates": []}
    if (train_source is None) != (test_source is None):
        raise ValueError("--train-source and --test-source go together")
    if train_source is not None:
        if "source" not in images.columns:
            raise ValueError("A cross-source split needs a 'source' column (manifest column "
                             "'source', or one --data folder per source)")
        counts = {r.source: r["count"] for r in images.groupBy("source").count().collect()}
        for name in (train_source, test_source):
            if name not in counts:
                raise ValueError(f"No images from source {name!r}; sources: {sorted(counts)}")
        info["excluded_sources"] = {s: n for s, n in counts.items()
                                    if s not in (train_source, test_source)}
        train_side = images.filter(F.col("source") == train_source)
        share = (1.0 - validation_fraction, validation_fraction, 0.0)
        train_side, _ = splits.grouped_split(train_side, share, seed, group_cols=group_cols,
                                             k_folds=k_folds)
        test_side = images.filter(F.col("source") == test_source).withColumn("split", F.lit("test"))
        if k_folds:
            test_side = test_side.withColumn("fold", F.lit(None).cast("int"))
        if "dup_group" in images.columns:
            test_side, info["cross_source_duplicates"] = _drop_leaked(train_side, test_side)
        split = train_side.drop("split_unit").unionByName(test_side)
        info["method"] = (f"train on source {train_source!r}, test on source {test_source!r}"
                          + (f"; validation {validation_fraction:.0%} of {train_source!r}, grouped"
                             if validation_fraction else ""))
        return split, info
    has_groups = bool(group_cols) and images.filter(
        F.coalesce(*[F.col(c) for c in group_cols]).isNotNull()).limit(1).count() > 0
    if has_groups or validation_fraction or k_folds:
        share = (1.0 - test_fraction - validation_fraction, validation_fraction, test_fraction)
        split, summary = splits.grouped_split(images, share, seed, group_cols=group_cols,
                                              k_folds=k_folds)
        by = " and ".join(group_cols) if has_groups else "nothing (every image its own unit)"
        info["method"] = (f"stratified by label, grouped by {by} ({summary['units']} units), "
                          f"seeded" + (f", {k_folds} folds" if k_folds else ""))
        return split.drop("split_unit"), info
    info["method"] = "stratified by label, seeded hash of image_id"
    return splits.stratified_split(images, test_fraction, seed), info


def _drop_leaked(train_side, test_side):
    """Remove test rows whose duplicate group also has a training image."""
    from pyspark.sql import functions as F

    seen = {r.dup_group for r in train_side.filter(F.col("dup_group").isNotNull())
            .select("dup_group").distinct().collect()}
    leaked = [r.path for r in test_side.filter(F.col("dup_group").isin(list(seen) or [""]))
              .select("path").collect()] if seen else []
    if leaked:
        logger.warning("Removed %d test image(s) that duplicate a training image, e.g. %s",
                       len(leaked), leaked[0])
        test_side = test_side.filter(~F.col("path").isin(leaked))
    return test_side, leaked


# ------------------------------------------------------------ fit, evaluate

def fit_and_evaluate(features, task, classifier, options=None, features_col="features"):
    """Fit one head on the ``train`` rows and evaluate it on the ``test`` rows.

    Parameters
    ----------
    features : pyspark.sql.DataFrame
        Stored (persisted or Parquet) features with ``label``, ``split`` (and
        ``fold`` for cross-validation). Never featurized here.
    task : {"binary", "3class"}
    classifier : {"lr", "rf", "dt"}
    options : TrainOptions
    features_col : str

    Returns
    -------
    (pyspark.ml.PipelineModel, dict)
        The fitted head (label indexer, classifier with the chosen threshold,
        label decoder) and ``{"metrics", "counts", "class_counts", "excluded",
        "class_weight", "tuning", "threshold"}``.
    """
    from pyspark.sql import functions as F

    from covidspark import evaluation, pipelines, selection, thresholds

    options = options or TrainOptions()
    options.validate(task)
    labels = list(pipelines.task_labels(task))
    data, task_info = pipelines.prepare_task(features, task)
    train = data.filter(F.col("split") == "train")
    validation = data.filter(F.col("split") == "validation")
    test = data.filter(F.col("split") == "test")
    head = pipelines.build_head(task, classifier, seed=options.seed, featuresCol=features_col)
    result = {"class_weight": None, "tuning": None, "threshold": None}

    if options.class_weight:
        weights = selection.inverse_frequency_weights(train)
        train = selection.with_class_weights(train, weights)
        head.getStages()[1].setWeightCol(selection.CLASS_WEIGHT_COL)
        result["class_weight"] = {
            "mode": "inverse_frequency", "weights": weights,
            "description": "inverse class frequency on the training rows: "
                           + ", ".join(f"{k} {v:.3f}" for k, v in weights.items())}
    if options.tune == "cv":
        model, result["tuning"] = selection.cross_validate(head, train, task, classifier,
                                                           options.k_folds)
    else:
        model = head.fit(train)

    if options.threshold is not None:
        if options.needs_validation:
            positive, score = evaluation.positive_scores(model.transform(validation), labels)
        else:
            positive, score = [], []
        result["threshold"] = thresholds.choose_threshold(positive, score, options.threshold)
        thresholds.apply_threshold(model, result["threshold"]["threshold"])

    predictions = model.transform(test)
    result["metrics"] = evaluation.evaluate(predictions, labels, bootstrap=options.bootstrap,
                                            seed=options.seed)
    if result["threshold"] is not None:
        positive, score = evaluation.positive_scores(predictions, labels)
        result["threshold"]["test_table"] = thresholds.tradeoff_table(
            positive, score, extra=[result["threshold"]["threshold"]])
    split_counts = {r.split: r["count"] for r in data.groupBy("split").count().collect()}
    result["counts"] = {"train": split_counts.get("train", 0),
                        "validation": split_counts.get("validation", 0),
                        "test": result["metrics"]["n"], "total": sum(split_counts.values())}
    result["class_counts"], result["excluded"] = task_info["counts"], task_info["excluded"]
    return model, result


def baseline(pixels, task, options=None):
    """The 32x32-pixel logistic regression on the same split: ``{"name", "metrics", "counts"}``."""
    from covidspark.baseline import BASELINE_NAME

    options = options or TrainOptions()
    plain = TrainOptions(seed=options.seed, bootstrap=options.bootstrap)
    _, result = fit_and_evaluate(pixels, task, "lr", plain, features_col="pixels")
    return {"name": BASELINE_NAME, "metrics": result["metrics"], "counts": result["counts"]}


def with_verdict(model_name, result, baseline_result):
    """Attach the baseline and its one-sentence verdict to a run's result (in place)."""
    from covidspark.baseline import verdict

    sentence, warns = verdict(model_name, result["metrics"], baseline_result["metrics"])
    result["baseline"] = {**baseline_result, "verdict": sentence, "warns": warns}
    return result
