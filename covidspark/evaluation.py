"""Metrics from a predictions DataFrame, and the tables and files that report them.

The confusion matrix is counted in Spark (one small aggregation); everything
else derives from it on the driver, so that the numbers are exact and cheap.
``metrics.json`` follows :data:`METRICS_SCHEMA_VERSION`; see the README.
"""
import json
import logging
import math

logger = logging.getLogger(__name__)

METRICS_SCHEMA_VERSION = 1


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


def metrics_from_confusion(matrix, labels):
    """Per-class precision, recall, F1 and support; accuracy; macro and weighted means.

    Precision (or recall) of a class that is never predicted (or never present)
    is reported as 0.0, as scikit-learn does with ``zero_division=0``.
    """
    n = len(labels)
    total = sum(sum(row) for row in matrix)
    per_class = {}
    for k, label in enumerate(labels):
        tp = matrix[k][k]
        predicted = sum(matrix[i][k] for i in range(n))
        support = sum(matrix[k])
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        specificity_den = total - support
        specificity = ((total - support - (predicted - tp)) / specificity_den
                       if specificity_den else 0.0)
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1,
                            "specificity": specificity, "support": support}
    accuracy = sum(matrix[k][k] for k in range(n)) / total if total else 0.0

    def average(weighting):
        weights = [per_class[label]["support"] if weighting else 1 for label in labels]
        denominator = sum(weights)
        return {m: (sum(w * per_class[label][m] for w, label in zip(weights, labels)) / denominator
                    if denominator else 0.0)
                for m in ("precision", "recall", "f1")}

    return {
        "accuracy": accuracy,
        "n": total,
        "per_class": per_class,
        "macro_avg": average(False),
        "weighted_avg": average(True),
        "confusion_matrix": {"labels": list(labels), "counts": matrix},
    }


def evaluate(predictions, labels, label_col="label_index", prediction_col="prediction",
             probability_col="probability", positive_label="covid"):
    """Compute the report's metrics from a predictions DataFrame.

    Parameters
    ----------
    predictions : pyspark.sql.DataFrame
        Output of a fitted pipeline: indexed labels, predictions and (optionally)
        class probabilities.
    labels : sequence of str
        Class names in index order (:data:`covidspark.pipelines.TASKS`).
    positive_label : str
        For two classes, ROC-AUC is computed with this class as positive.

    Returns
    -------
    dict
        ``accuracy``, ``n``, ``per_class`` (precision, recall, specificity, F1,
        support), ``macro_avg``, ``weighted_avg``, ``confusion_matrix`` and, for
        two classes with probabilities, ``roc_auc``.
    """
    matrix = confusion_matrix(predictions, len(labels), label_col, prediction_col)
    metrics = metrics_from_confusion(matrix, labels)
    if len(labels) == 2 and probability_col in predictions.columns:
        metrics["roc_auc"] = binary_roc_auc(predictions, list(labels).index(positive_label),
                                            label_col, probability_col)
    return metrics


def binary_roc_auc(predictions, positive_index, label_col="label_index",
                   probability_col="probability"):
    """ROC-AUC of the probability of class ``positive_index`` (Spark's evaluator)."""
    from pyspark.ml.evaluation import BinaryClassificationEvaluator
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    scored = predictions.select(
        (F.col(label_col) == positive_index).cast("double").alias("y"),
        vector_to_array(probability_col)[positive_index].alias("score"),
    )
    auc = BinaryClassificationEvaluator(rawPredictionCol="score", labelCol="y",
                                        metricName="areaUnderROC").evaluate(scored)
    return None if math.isnan(auc) else auc


def format_table(metrics):
    """The per-class table the original studies print, as plain text."""
    labels = metrics["confusion_matrix"]["labels"]
    width = max(12, *(len(label) + 2 for label in labels))
    lines = [f"{'class':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for label in labels:
        m = metrics["per_class"][label]
        lines.append(f"{label:<{width}}{m['precision']:>10.3f}{m['recall']:>10.3f}"
                     f"{m['f1']:>10.3f}{m['support']:>10d}")
    for name in ("macro_avg", "weighted_avg"):
        m = metrics[name]
        lines.append(f"{name.replace('_', ' '):<{width}}{m['precision']:>10.3f}"
                     f"{m['recall']:>10.3f}{m['f1']:>10.3f}{metrics['n']:>10d}")
    lines.append(f"{'accuracy':<{width}}{'':>20}{metrics['accuracy']:>10.3f}{metrics['n']:>10d}")
    if metrics.get("roc_auc") is not None:
        lines.append(f"{'roc auc':<{width}}{'':>20}{metrics['roc_auc']:>10.3f}")
    matrix = metrics["confusion_matrix"]["counts"]
    lines.append("")
    lines.append("confusion matrix (rows: true, columns: predicted)")
    lines.append(" " * width + "".join(f"{label:>12}" for label in labels))
    for label, row in zip(labels, matrix):
        lines.append(f"{label:<{width}}" + "".join(f"{v:>12d}" for v in row))
    return "\n".join(lines)


def write_report(run, out_dir):
    """Write ``metrics.json`` and ``report.md`` for a training run.

    Parameters
    ----------
    run : dict
        ``{"metrics": evaluate(...), ...}`` plus the run's description (task,
        classifier, model, weights, data, counts).
    out_dir : str
        A local folder.

    Returns
    -------
    (str, str)
        Paths of metrics.json and report.md.
    """
    import os

    os.makedirs(out_dir, exist_ok=True)
    document = {"schema_version": METRICS_SCHEMA_VERSION, **run}
    metrics_path = os.path.join(out_dir, "metrics.json")
    with open(metrics_path, "w") as f:
        json.dump(document, f, indent=2, sort_keys=False)
    report_path = os.path.join(out_dir, "report.md")
    warnings = "".join(f"> **{w}**\n\n" for w in run.get("warnings", []))
    with open(report_path, "w") as f:
        f.write(
            f"# covidspark report: {run['task']} task, {run['model']} + {run['classifier']}\n\n"
            f"{warnings}"
            f"- data: {run['data']['description']}\n"
            f"- weights: {run['weights']['description']}\n"
            f"- train / test images: {run['counts']['train']} / {run['counts']['test']}\n\n"
            f"```\n{format_table(run['metrics'])}\n```\n"
        )
    return metrics_path, report_path
