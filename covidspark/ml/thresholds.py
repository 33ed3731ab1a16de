"""Choosing the COVID decision threshold on validation data.

A classifier predicts COVID when its COVID probability is *above* the
threshold (Spark's rule: ``p > t``; 0.5 by default). Lowering it trades
precision for recall, as one of the original studies did (0.1: recall 0.84 ->
0.97). The threshold is chosen on the validation split, never on the test
split, and is stored in the fitted model (see :func:`apply_threshold`), so
the saved pipeline predicts with it.

Strategies (``--threshold``):

``recall:0.95``  the highest threshold whose validation recall is at least 0.95
``f1``           the threshold of the highest validation F1
``youden``       the threshold of the highest sensitivity + specificity - 1
``0.1``          a fixed value
"""
import numpy as np

from covidspark.evaluation.metrics import sorted_counts, precision_recall_f1
from covidspark.errors import InputError

#: Fewer COVID validation images than this and the report warns about the threshold.
MIN_VALIDATION_POSITIVES = 20

DEFAULT_TABLE_THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def parse_strategy(text):
    """``"recall:0.95"`` -> ``("recall", 0.95)``; ``"f1"``, ``"youden"``; ``"0.1"`` -> ``("fixed", 0.1)``."""
    text = str(text).strip().lower()
    if text in ("f1", "youden"):
        return text, None
    if text.startswith("recall:"):
        target = float(text.split(":", 1)[1])
        if not 0.0 < target <= 1.0:
            raise InputError(f"Target recall must be in (0, 1]. Received: {text}")
        return "recall", target
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"Unknown threshold strategy {text!r}: use recall:<target>, f1, youden "
                         f"or a number in (0, 1)") from None
    if not 0.0 < value < 1.0:
        raise InputError(f"A fixed threshold must be in (0, 1). Received: {value}")
    return "fixed", value


def needs_validation(strategy):
    """Whether ``strategy`` is chosen from data (all but a fixed number)."""
    return parse_strategy(strategy)[0] != "fixed"


def rates_at(positive, score, threshold):
    """Precision, recall (sensitivity), specificity and F1 of ``score > threshold``."""
    positive = np.asarray(positive, dtype=bool)
    predicted = np.asarray(score, dtype=float) > threshold
    tp = int(np.sum(predicted & positive))
    fp = int(np.sum(predicted & ~positive))
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    precision, recall, f1 = precision_recall_f1(tp, tp + fp, n_pos)
    specificity = (n_neg - fp) / n_neg if n_neg else 0.0
    return {"threshold": float(threshold), "precision": precision, "recall": recall,
            "specificity": specificity, "f1": f1, "predicted_positive": tp + fp}


def _candidates(positive, score):
    """Thresholds halfway between consecutive distinct scores, with their counts."""
    tp, fp, distinct = sorted_counts(positive, score)
    below = np.r_[distinct[1:], 0.0]
    # Threshold i predicts positive exactly the rows scoring >= distinct[i].
    return (distinct + below) / 2.0, tp, fp


def choose_threshold(positive, score, strategy):
    """The threshold that ``strategy`` picks on validation labels and scores.

    Parameters
    ----------
    positive : array of bool
        Validation rows that are COVID.
    score : array of float
        Their COVID probabilities.
    strategy : str
        See the module docstring.

    Returns
    -------
    dict
        ``strategy``, ``threshold`` and the validation rates at it
        (``validation``: precision, recall, specificity, F1, n).

    Raises
    ------
    ValueError
        If a data-driven strategy has no validation rows or no positives.
    """
    kind, value = parse_strategy(strategy)
    positive = np.asarray(positive, dtype=bool)
    score = np.asarray(score, dtype=float)
    if kind == "fixed":
        threshold = value
    else:
        if positive.size == 0 or not positive.any() or positive.all():
            raise InputError(f"Threshold strategy {strategy!r} needs validation rows of both "
                             f"classes; got {int(positive.sum())} COVID of {positive.size}")
        thresholds, tp, fp = _candidates(positive, score)
        n_pos, n_neg = positive.sum(), (~positive).sum()
        recall = tp / n_pos
        precision = tp / (tp + fp)
        if kind == "recall":
            # Thresholds fall as recall rises: the first that reaches the target is the highest.
            threshold = thresholds[int(np.argmax(recall >= value - 1e-12))]
        elif kind == "f1":
            f1 = np.where(precision + recall > 0,
                          2 * precision * recall / np.maximum(precision + recall, 1e-300), 0.0)
            threshold = thresholds[int(np.argmax(f1))]
        else:
            threshold = thresholds[int(np.argmax(recall - fp / n_neg))]
    threshold = float(np.clip(threshold, 1e-9, 1 - 1e-9))
    chosen = {"strategy": str(strategy), "threshold": threshold, "warning": None,
              "validation": {**rates_at(positive, score, threshold), "n": int(positive.size),
                             "n_positive": int(positive.sum())}}
    if kind != "fixed" and positive.sum() < MIN_VALIDATION_POSITIVES:
        chosen["warning"] = (f"the threshold was chosen on only {int(positive.sum())} COVID "
                             f"validation image(s); it is unreliable below "
                             f"{MIN_VALIDATION_POSITIVES} (raise --validation-fraction)")
    return chosen


def tradeoff_table(positive, score, extra=()):
    """Rates at the usual thresholds (and ``extra`` ones), lowest threshold first."""
    values = sorted(set(DEFAULT_TABLE_THRESHOLDS) | {float(t) for t in extra})
    return [rates_at(positive, score, t) for t in values]


def apply_threshold(pipeline_model, threshold):
    """Store the binary COVID threshold in a fitted head (LR, RF or DT), in place.

    Spark predicts ``argmax(p_k / t_k)``; with ``t = [1 - threshold, threshold]``
    that is COVID exactly when ``p_covid > threshold``, for every probabilistic
    classifier, and the value is saved and loaded with the model.
    """
    from pyspark.ml.classification import LogisticRegressionModel, ProbabilisticClassificationModel

    for stage in pipeline_model.stages:
        if isinstance(stage, LogisticRegressionModel):
            stage.setThreshold(threshold)
            return pipeline_model
        if isinstance(stage, ProbabilisticClassificationModel):
            stage.setThresholds([1.0 - threshold, threshold])
            return pipeline_model
    raise ValueError("apply_threshold: the pipeline has no probabilistic classifier stage")


def saved_threshold(pipeline_model):
    """The binary COVID threshold a fitted pipeline predicts with (None for 3-class).

    The inverse of :func:`apply_threshold`: LR's ``threshold``, or
    ``t_1 / (t_0 + t_1)`` of a tree model's ``thresholds``; 0.5 when none was set.
    """
    from pyspark.ml.classification import LogisticRegressionModel, ProbabilisticClassificationModel

    for stage in pipeline_model.stages:
        if not isinstance(stage, ProbabilisticClassificationModel):
            continue
        if stage.numClasses != 2:
            return None
        if isinstance(stage, LogisticRegressionModel):
            return float(stage.getThreshold())
        if stage.isDefined(stage.thresholds):
            return threshold_from_thresholds(stage.getThresholds())
        return 0.5
    return None


def threshold_from_thresholds(thresholds):
    """The COVID threshold that Spark's binary ``thresholds = [t0, t1]`` mean.

    The inverse of :func:`apply_threshold`'s ``[1 - threshold, threshold]``:
    ``argmax(p_k / t_k)`` predicts COVID exactly when ``p_1 > t1 / (t0 + t1)``.
    """
    low, high = thresholds[0], thresholds[1]
    return float(high / (low + high)) if low + high > 0 else 0.5

