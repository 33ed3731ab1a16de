"""Metrics of a predictions DataFrame.

The confusion matrix is counted in Spark (one small aggregation, exact at any
scale). Score-based metrics (ROC-AUC, PR-AUC, curves, bootstrap intervals,
threshold tables) need the rows: the label, the prediction and the class
probabilities of each test row (``n x (k + 2)`` doubles), its ``path`` (to
pair two models' rows) and, for the bootstrap's units, its ``image_id``,
``patient_id`` and ``dup_group`` where present, are collected to the driver:
about 200 bytes a row, 200 MB for a million test images. The numbers
themselves come from :mod:`covidspark.evaluation.metrics`.

The report writers live in :mod:`covidspark.evaluation.reports`.
"""
import logging
import typing

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_BOOTSTRAP = 1000
#: Columns whose shared values make test rows one bootstrap unit, as they made them one
#: unit of the split: a patient, a near-duplicate group, identical files (``image_id``).
UNIT_COLS = ("patient_id", "dup_group", "image_id")


class Metrics(dict):
    """The metrics of :func:`evaluate`, a dict (what ``metrics.json`` holds), which also
    keeps its test rows in ``rows`` for a paired comparison with another model on the
    same rows (:func:`paired_accuracy`); ``rows`` is not written anywhere."""

    rows = None


class ScoredRows:
    """Each test row's key (``path``), whether the model got it right, and its bootstrap unit."""

    def __init__(self, keys, correct, units):
        self.keys, self.correct, self.units = keys, correct, units


def confusion_matrix(predictions, n_classes, label_col="label_index", prediction_col="prediction"):
    """Counts ``[true][predicted]`` as a list of lists, computed in Spark."""
    from pyspark.sql import functions as F

    matrix = [[0] * n_classes for _ in range(n_classes)]
    rows = predictions.groupBy(label_col, prediction_col).agg(F.count(F.lit(1)).alias("n")).collect()
    for r in rows:
        truth, predicted = int(r[label_col]), int(r[prediction_col])
        if not (0 <= truth < n_classes and 0 <= predicted < n_classes):
            raise ValueError(f"Class index out of range: label {truth}, prediction {predicted}")
        matrix[truth][predicted] += r.n
    return matrix


class CollectedScores(typing.NamedTuple):
    """A predictions DataFrame's test rows on the driver (:func:`collect_scores`)."""

    #: Each row's true class index.
    y_true: np.ndarray
    #: Each row's predicted class index.
    y_pred: np.ndarray
    #: ``n x k`` class probabilities; None when the column is absent.
    probability: object
    #: Each row's bootstrap unit, or None: every row its own (:func:`bootstrap_units`).
    units: object
    #: The unit columns that grouped some rows.
    grouped_by: list
    #: Each row's ``path``, to pair two models' rows; None without a path column.
    keys: object


def collect_scores(predictions, label_col="label_index", prediction_col="prediction",
                   probability_col="probability", unit_cols=()):
    """The labels, predictions, probabilities and bootstrap units of a predictions DataFrame.

    Parameters
    ----------
    predictions : pyspark.sql.DataFrame
    label_col, prediction_col, probability_col : str
    unit_cols : sequence of str
        Columns whose shared values make rows one bootstrap unit (:data:`UNIT_COLS`);
        those absent from ``predictions`` are ignored.

    Returns
    -------
    CollectedScores
    """
    from pyspark.ml.functions import vector_to_array

    columns = [label_col, prediction_col]
    has_probability = probability_col in predictions.columns
    if has_probability:
        columns.append(vector_to_array(probability_col).alias("_p"))
    present = [c for c in unit_cols if c in predictions.columns]
    keyed = "path" in predictions.columns and "path" not in present
    rows = predictions.select(*columns, *present, *(["path"] if keyed else [])).collect()
    y_true = np.array([r[0] for r in rows], dtype=np.int64)
    y_pred = np.array([r[1] for r in rows], dtype=np.int64)
    probability = np.array([r[2] for r in rows], dtype=float) if has_probability else None
    units, grouped_by = bootstrap_units(rows, present)
    keys = [r["path"] for r in rows] if keyed else None
    return CollectedScores(y_true, y_pred, probability, units, grouped_by, keys)


def bootstrap_units(rows, unit_cols):
    """``(units, columns)``: each row's unit, and the columns with a value in some row.

    Rows sharing a non-null value of any of ``unit_cols`` are one unit. Units
    are named by their smallest ``image_id`` (when collected), so the
    bootstrap's draws do not depend on the rows' order or paths. ``units`` is
    None when no unit column was collected (every row its own unit).
    """
    from covidspark.data.splits import units_by_key

    if not unit_cols:
        return None, []
    used = [c for c in unit_cols if any(row[c] is not None for row in rows)]
    keyed = [{"path": i, **{c: row[c] for c in unit_cols}} for i, row in enumerate(rows)]
    key = "image_id" if "image_id" in unit_cols and all(
        r["image_id"] is not None for r in keyed) else "path"
    unit_of = units_by_key(keyed, unit_cols, key)
    return [str(unit_of[i]) for i in range(len(keyed))], used


def evaluate(predictions, labels, label_col="label_index", prediction_col="prediction",
             probability_col="probability", positive_label="covid", bootstrap=DEFAULT_BOOTSTRAP,
             seed=0, confidence=0.95, unit_cols=UNIT_COLS):
    """Compute the report's metrics from a predictions DataFrame.

    Parameters
    ----------
    predictions : pyspark.sql.DataFrame
        Output of a fitted pipeline: indexed labels, predictions and (optionally)
        class probabilities.
    labels : sequence of str
        Class names in index order (:data:`covidspark.ml.pipelines.TASKS`).
    positive_label : str
        The class of the headline numbers (COVID-19): bootstrap intervals of
        its precision, recall and F1; the binary ROC / PR curves.
    bootstrap : int
        Bootstrap resamples for the confidence intervals (0: none).
    seed : int
        Seed of the resampling.
    confidence : float
        Interval coverage (0.95).
    unit_cols : sequence of str
        Columns that group test rows for the bootstrap (those present are
        used): rows sharing a patient, a duplicate group or identical bytes are
        drawn together, as the split kept them together. Empty: every row is
        drawn on its own.

    Returns
    -------
    dict
        ``accuracy``, ``n``, ``per_class`` (precision, recall, specificity, F1,
        support), ``macro_avg``, ``weighted_avg``, ``confusion_matrix`` (counts,
        row- and column-normalised); with probabilities also ``roc_auc``,
        ``pr_auc``, ``per_class_auc`` and ``curves``; ``confidence_intervals``.
    """
    from covidspark.evaluation.metrics import (bootstrap_intervals, confusion_from_arrays,
                                              metrics_from_confusion, score_metrics)

    labels = list(labels)
    matrix = confusion_matrix(predictions, len(labels), label_col, prediction_col)
    metrics = metrics_from_confusion(matrix, labels)
    y_true, y_pred, probability, units, grouped_by, keys = collect_scores(
        predictions, label_col, prediction_col, probability_col, unit_cols=unit_cols or ())
    collected = confusion_from_arrays(y_true, y_pred, len(labels)).tolist()
    if collected != matrix:  # the DataFrame changed between two reads (non-deterministic input)
        raise RuntimeError(f"Predictions changed between reads: {matrix} vs {collected}; "
                           f"persist or checkpoint them before evaluating")
    if probability is not None and y_true.size:
        metrics.update(score_metrics(y_true, probability, labels, positive_label))
    metrics["confidence_intervals"] = bootstrap_intervals(
        y_true, y_pred, labels, probability, positive_label, n_resamples=bootstrap,
        confidence=confidence, seed=seed, groups=units)
    if metrics["confidence_intervals"].get("resampled") == "groups":
        metrics["confidence_intervals"]["grouped_by"] = grouped_by
    metrics = Metrics(metrics)
    metrics.rows = ScoredRows(keys, y_true == y_pred, units)
    return metrics


def paired_accuracy(metrics_a, metrics_b):
    """A's accuracy minus B's on their common test rows, with a paired bootstrap interval.

    Both from :func:`evaluate`, on the same rows (matched by path), drawn like
    A's intervals: its units, number of resamples and seed (the rows sorted by
    path; with units, the draws are the intervals' own). None when either lacks
    its rows, the rows differ, or A has no intervals (``bootstrap=0``).
    """
    from covidspark.evaluation.metrics import paired_difference

    a, b = getattr(metrics_a, "rows", None), getattr(metrics_b, "rows", None)
    ci = metrics_a.get("confidence_intervals") or {}
    if a is None or b is None or a.keys is None or b.keys is None or not ci:
        return None
    order_a, order_b = np.argsort(a.keys, kind="stable"), np.argsort(b.keys, kind="stable")
    if [a.keys[i] for i in order_a] != [b.keys[i] for i in order_b]:
        return None
    return paired_difference(
        a.correct[order_a], b.correct[order_b],
        groups=None if a.units is None else [a.units[i] for i in order_a],
        n_resamples=ci["n_resamples"], confidence=ci["confidence"], seed=ci["seed"])


def positive_scores(predictions, labels, positive_label="covid", label_col="label_index",
                    probability_col="probability"):
    """``(is_positive, score)`` arrays: the rows' truth and their probability of ``positive_label``."""
    scores = collect_scores(predictions, label_col, probability_col=probability_col)
    y_true, probability = scores.y_true, scores.probability
    if probability is None:
        raise ValueError(f"Thresholds need class probabilities; column {probability_col!r} missing")
    k = list(labels).index(positive_label)
    return y_true == k, probability[:, k] if probability.size else np.zeros(0)
