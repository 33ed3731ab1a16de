"""Every metric against an independent computation (scikit-learn) on fixed predictions."""
import json

import numpy as np
import pytest
from pyspark.ml.linalg import Vectors, VectorUDT
from pyspark.sql.types import DoubleType, StructField, StructType
from sklearn import metrics as skm

from covidspark.evaluation import evaluate, format_table, metrics_from_confusion, write_report


def _predictions(spark, n_classes, n=200, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    # A noisy classifier: right 70 % of the time, probabilities that agree with it.
    logits = rng.normal(0, 1, (n, n_classes))
    logits[np.arange(n), y] += 1.2
    probability = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    prediction = probability.argmax(axis=1)
    df = spark.createDataFrame(
        [(float(a), float(b), Vectors.dense(p)) for a, b, p in zip(y, prediction, probability)],
        StructType([StructField("label_index", DoubleType()), StructField("prediction", DoubleType()),
                    StructField("probability", VectorUDT())]),
    )
    return df, y, prediction, probability


@pytest.mark.parametrize("labels", [("normal", "covid"), ("normal", "covid", "pneumonia")])
def test_metrics_match_scikit_learn(spark, labels):
    df, y, pred, prob = _predictions(spark, len(labels))
    m = evaluate(df, labels)
    k = list(range(len(labels)))
    np.testing.assert_array_equal(m["confusion_matrix"]["counts"],
                                  skm.confusion_matrix(y, pred, labels=k))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y, pred, labels=k, zero_division=0)
    for i, label in enumerate(labels):
        c = m["per_class"][label]
        assert c["precision"] == pytest.approx(precision[i])
        assert c["recall"] == pytest.approx(recall[i])
        assert c["f1"] == pytest.approx(f1[i])
        assert c["support"] == support[i]
        # specificity = TN / (TN + FP), by hand
        tn = np.sum((y != i) & (pred != i))
        fp = np.sum((y != i) & (pred == i))
        assert c["specificity"] == pytest.approx(tn / (tn + fp))
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(y, pred, average=average, zero_division=0)
        assert m[f"{average}_avg"]["precision"] == pytest.approx(p)
        assert m[f"{average}_avg"]["recall"] == pytest.approx(r)
        assert m[f"{average}_avg"]["f1"] == pytest.approx(f)
    if len(labels) == 2:
        assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y == 1, prob[:, 1]))
    else:
        assert "roc_auc" not in m


def test_a_class_never_predicted_has_zero_precision():
    m = metrics_from_confusion([[5, 0], [3, 0]], ["normal", "covid"])
    assert m["per_class"]["covid"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0,
                                       "specificity": 1.0, "support": 3}
    assert m["accuracy"] == pytest.approx(5 / 8)


def test_table_and_report_files(tmp_path):
    m = metrics_from_confusion([[8, 2], [1, 9]], ["normal", "covid"])
    table = format_table(m)
    assert "covid" in table and "0.818" in table  # covid precision 9 / 11
    assert "accuracy" in table and "0.850" in table
    run = {"task": "binary", "model": "ResNet50", "classifier": "lr", "metrics": m,
           "data": {"description": "synthetic"}, "weights": {"description": "random (seed 0)"},
           "counts": {"train": 80, "test": 20}, "warnings": ["SYNTHETIC data"]}
    metrics_path, report_path = write_report(run, str(tmp_path))
    with open(metrics_path) as f:
        saved = json.load(f)
    assert saved["schema_version"] == 1
    assert saved["metrics"]["per_class"]["covid"]["recall"] == pytest.approx(0.9)
    report = open(report_path).read()
    assert "SYNTHETIC data" in report and "random (seed 0)" in report and "0.818" in report
