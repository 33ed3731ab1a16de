"""One experiment, from split images to a reported model: the core of ``train`` and ``compare``.

The steps, each usable alone:

1. :func:`covidspark.data.splits.split_images`: train / validation / test (and
   CV folds), grouped by patient and duplicate group, or by source.
2. Featurize once (the caller: :class:`~covidspark.ml.featurizer.DeepImageFeaturizer`
   or a :class:`~covidspark.ml.feature_store.FeatureStore`), persist.
3. :func:`fit_and_evaluate`: class weights, cross-validation over the folds,
   the COVID threshold chosen on validation data and stored in the model,
   test metrics with bootstrap intervals and the threshold trade-off table.
4. :func:`baseline`: the same on 32x32 pixels, for the shortcut check.
"""
import logging
from dataclasses import dataclass
from typing import Optional

from covidspark.errors import InputError

logger = logging.getLogger(__name__)

#: The class weightings ``TrainOptions.class_weight`` (and ``--class-weight``) accept.
CLASS_WEIGHTS = ("balanced",)


@dataclass
class TrainOptions:
    """How heads are fitted and evaluated.

    Attributes
    ----------
    seed : int
        Seed of the split, RF/DT and the bootstrap.
    class_weight : {"balanced"}, optional
        ``"balanced"``: weight each training row by the inverse frequency of
        its class (MLlib ``weightCol``), as scikit-learn's ``"balanced"``:
        ``n_rows / (n_classes * n_rows_of_class)``. ``True`` is read as
        ``"balanced"`` (covidspark 0.1 took a bool).
    tune : str, optional
        ``"cv"``: cross-validate the classifier's grid over the grouped folds.
    k_folds : int
        Folds for ``tune="cv"``.
    threshold : str, optional
        COVID threshold strategy (binary task): ``recall:0.95``, ``f1``,
        ``youden`` or a number; see :mod:`covidspark.ml.thresholds`.
    bootstrap : int
        Bootstrap resamples of the confidence intervals.
    """

    seed: int = 0
    class_weight: Optional[str] = None
    tune: Optional[str] = None
    k_folds: int = 3
    threshold: Optional[str] = None
    bootstrap: int = 1000

    def __post_init__(self):
        if self.class_weight is True:
            self.class_weight = "balanced"
        elif self.class_weight is False or self.class_weight == "none":
            self.class_weight = None

    def validate(self, task):
        from covidspark.ml.thresholds import parse_strategy

        if self.class_weight not in (None, *CLASS_WEIGHTS):
            raise InputError(f"Unknown class_weight {self.class_weight!r}: use 'balanced' "
                             f"(inverse class frequency) or None")
        if self.tune not in (None, "cv"):
            raise InputError(f"Unknown tuning {self.tune!r}: use 'cv' (grouped k-fold)")
        if self.threshold is not None:
            if task != "binary":
                raise InputError("A COVID decision threshold applies to the binary task; the "
                                 "3-class task predicts the most probable class")
            parse_strategy(self.threshold)

    @property
    def needs_validation(self):
        from covidspark.ml.thresholds import needs_validation

        return self.threshold is not None and needs_validation(self.threshold)


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

    from covidspark.ml import pipelines, selection

    options = options or TrainOptions()
    options.validate(task)
    data, task_info = pipelines.prepare_task(features, task)
    train = data.filter(F.col("split") == "train")
    head = pipelines.build_head(task, classifier, seed=options.seed, featuresCol=features_col)
    result = {"class_weight": None, "tuning": None, "threshold": None}

    if options.class_weight:
        weights = selection.balanced_class_weights(train)
        train = selection.with_class_weights(train, weights)
        head.getStages()[1].setWeightCol(selection.CLASS_WEIGHT_COL)
        result["class_weight"] = {
            "mode": options.class_weight, "weights": weights,
            "description": "balanced (inverse class frequency on the training rows): "
                           + ", ".join(f"{k} {v:.3f}" for k, v in weights.items())}
    if options.tune == "cv":
        model, result["tuning"] = selection.cross_validate(head, train, task, classifier,
                                                           options.k_folds)
    else:
        model = head.fit(train)
    return model, evaluate_fitted(model, data, task, task_info, options, result)


def evaluate_fitted(model, data, task, task_info, options=None, result=None):
    """The COVID threshold (chosen on ``validation`` rows), test metrics and counts of a model.

    The second half of :func:`fit_and_evaluate`, for a model fitted elsewhere
    (a fine-tuned network): ``model`` predicts from ``data``'s columns; the
    threshold is stored in it (in place).

    Returns
    -------
    dict
        ``result`` (or a new dict) with ``metrics``, ``threshold``, ``counts``,
        ``class_counts`` and ``excluded``.
    """
    from pyspark.sql import functions as F

    from covidspark import evaluation
    from covidspark.ml import pipelines, thresholds

    options = options or TrainOptions()
    labels = list(pipelines.task_labels(task))
    result = {"class_weight": None, "tuning": None, "threshold": None, **(result or {})}
    validation = data.filter(F.col("split") == "validation")
    test = data.filter(F.col("split") == "test")
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
    if result["metrics"]["n"] == 0:
        # Metrics of nothing would read as numbers: a class with one image (or one
        # patient) has no unit for the test side.
        raise InputError(f"No test images of the {task} task's classes ({', '.join(labels)}) "
                         f"after the split; each class needs at least two images (two "
                         f"patients, when images are grouped by patient) to be tested")
    if result["threshold"] is not None:
        positive, score = evaluation.positive_scores(predictions, labels)
        result["threshold"]["test_table"] = thresholds.tradeoff_table(
            positive, score, extra=[result["threshold"]["threshold"]])
    split_counts = {r.split: r["count"] for r in data.groupBy("split").count().collect()}
    result["counts"] = {"train": split_counts.get("train", 0),
                        "validation": split_counts.get("validation", 0),
                        "test": result["metrics"]["n"], "total": sum(split_counts.values())}
    result["class_counts"], result["excluded"] = task_info["counts"], task_info["excluded"]
    return result


def baseline(pixels, task, options=None):
    """The 32x32-pixel logistic regression on the same split: ``{"name", "metrics", "counts"}``."""
    from covidspark.ml.baseline import BASELINE_NAME

    options = options or TrainOptions()
    plain = TrainOptions(seed=options.seed, bootstrap=options.bootstrap)
    _, result = fit_and_evaluate(pixels, task, "lr", plain, features_col="pixels")
    return {"name": BASELINE_NAME, "metrics": result["metrics"], "counts": result["counts"]}


def with_verdict(model_name, result, baseline_result):
    """Attach the baseline, the paired accuracy difference and the one-sentence verdict to
    a run's result (in place)."""
    from covidspark.evaluation.scoring import paired_accuracy
    from covidspark.ml.baseline import verdict

    difference = paired_accuracy(result["metrics"], baseline_result["metrics"])
    sentence, warns = verdict(model_name, result["metrics"], baseline_result["metrics"],
                              difference)
    result["baseline"] = {**baseline_result, "difference": difference, "verdict": sentence,
                          "warns": warns}
    return result


def differences_to_best(metrics):
    """Each run's accuracy gap to the most accurate run on the same test rows, paired.

    Parameters
    ----------
    metrics : list of covidspark.evaluation.scoring.Metrics
        One task's runs, from :func:`fit_and_evaluate`, all on one split.

    Returns
    -------
    (int or None, list)
        The most accurate run's index (the first of a tie; None with fewer than
        two runs), and per run the best's accuracy minus its own with a paired
        bootstrap interval (:func:`covidspark.evaluation.scoring.paired_accuracy`):
        None for the best itself, and without intervals (``bootstrap=0``).
    """
    from covidspark.evaluation.scoring import paired_accuracy

    if len(metrics) < 2:
        return None, [None] * len(metrics)
    best = max(range(len(metrics)), key=lambda i: (metrics[i]["accuracy"], -i))
    return best, [None if i == best else paired_accuracy(metrics[best], run)
                  for i, run in enumerate(metrics)]
