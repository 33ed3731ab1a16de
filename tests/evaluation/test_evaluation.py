"""Every metric against an independent computation (scikit-learn) on fixed predictions."""
import json

import numpy as np
import pytest
from pyspark.ml.linalg import Vectors, VectorUDT
from pyspark.sql.types import DoubleType, StructField, StructType
from sklearn import metrics as skm

from covidspark.evaluation.metrics import metrics_from_confusion
from covidspark.evaluation.reports import format_table, write_report
from covidspark.evaluation.scoring import evaluate


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
    m = evaluate(df, labels, bootstrap=300)
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
    # Confusion matrices normalised by row (true) and by column (pred), as scikit-learn does.
    for key, normalize in (("row_normalised", "true"), ("column_normalised", "pred")):
        np.testing.assert_allclose(m["confusion_matrix"][key],
                                   skm.confusion_matrix(y, pred, labels=k, normalize=normalize),
                                   atol=1e-6)
    # ROC-AUC and PR-AUC (average precision): COVID vs rest, or one-vs-rest per class.
    classes = ["covid"] if len(labels) == 2 else labels
    for label in classes:
        i = labels.index(label)
        assert m["per_class_auc"][label]["roc_auc"] == pytest.approx(
            skm.roc_auc_score(y == i, prob[:, i]))
        assert m["per_class_auc"][label]["pr_auc"] == pytest.approx(
            skm.average_precision_score(y == i, prob[:, i]))
    if len(labels) == 2:
        assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y == 1, prob[:, 1]))
        assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y == 1, prob[:, 1]))
    else:
        assert m["roc_auc"] == pytest.approx(
            skm.roc_auc_score(y, prob, multi_class="ovr", average="macro"))
        assert m["pr_auc"] == pytest.approx(np.mean(
            [skm.average_precision_score(y == i, prob[:, i]) for i in k]))
    # Bootstrap intervals: the same resamples, recomputed with scikit-learn.
    ci = m["confidence_intervals"]
    rng = np.random.default_rng(0)
    accuracy, f1, recall = [], [], []
    for _ in range(ci["n_resamples"]):
        idx = rng.integers(0, len(y), len(y))
        accuracy.append(skm.accuracy_score(y[idx], pred[idx]))
        recall.append(skm.recall_score(y[idx] == 1, pred[idx] == 1, zero_division=0))
        f1.append(skm.f1_score(y[idx] == 1, pred[idx] == 1, zero_division=0))
    for name, values in (("accuracy", accuracy), ("covid_recall", recall), ("covid_f1", f1)):
        np.testing.assert_allclose(ci[name], np.quantile(values, [0.025, 0.975]))
        assert ci[name][0] < np.mean(values) < ci[name][1]


def test_bootstrap_is_seeded_and_narrows_with_more_rows():
    from covidspark.evaluation.metrics import bootstrap_intervals

    rng = np.random.default_rng(3)
    labels = ["normal", "covid"]

    def width(n, seed=0):
        y = rng.integers(0, 2, n)
        pred = np.where(rng.random(n) < 0.85, y, 1 - y)
        ci = bootstrap_intervals(y, pred, labels, n_resamples=300, seed=seed)
        assert ci == bootstrap_intervals(y, pred, labels, n_resamples=300, seed=seed)
        return ci["accuracy"][1] - ci["accuracy"][0]

    assert width(2000) < width(100) / 3


def test_curves_match_scikit_learn_with_ties():
    from covidspark.evaluation.metrics import precision_recall_curve, roc_curve

    rng = np.random.default_rng(1)
    positive = rng.random(300) < 0.3
    score = np.round(rng.random(300) * 0.5 + 0.4 * positive, 1)  # few distinct values: ties
    fpr, tpr, thresholds = roc_curve(positive, score)
    sk_fpr, sk_tpr, sk_thresholds = skm.roc_curve(positive, score, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thresholds[1:], sk_thresholds[1:])
    precision, recall, _ = precision_recall_curve(positive, score)
    sk_precision, sk_recall, _ = skm.precision_recall_curve(positive, score)
    # scikit-learn lists the same points lowest threshold first, plus the (recall 0, precision 1) end.
    np.testing.assert_allclose(precision, sk_precision[:-1][::-1])
    np.testing.assert_allclose(recall, sk_recall[:-1][::-1])


def test_a_class_never_predicted_has_zero_precision():
    m = metrics_from_confusion([[5, 0], [3, 0]], ["normal", "covid"])
    assert m["confusion_matrix"]["column_normalised"] == [[5 / 8, 0.0], [3 / 8, 0.0]]
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
    assert saved["schema_version"] == 3
    assert sorted(saved["plots"]) == ["confusion_by_column.png", "confusion_by_row.png",
                                      "confusion_counts.png"]
    for name in saved["plots"]:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert saved["metrics"]["per_class"]["covid"]["recall"] == pytest.approx(0.9)
    report = open(report_path).read()
    assert "SYNTHETIC data" in report and "random (seed 0)" in report and "0.818" in report


def test_a_test_set_without_a_class_says_what_it_cannot_measure():
    from covidspark.evaluation.metrics import score_metrics
    from covidspark.evaluation.reports import absent_classes_caution

    labels = ["normal", "covid", "pneumonia"]
    # 5 COVID images, none of the others: 4 predicted covid, 1 pneumonia.
    y_true, y_pred = np.array([1] * 5), np.array([1, 1, 1, 1, 2])
    metrics = metrics_from_confusion(
        skm.confusion_matrix(y_true, y_pred, labels=[0, 1, 2]), labels)
    assert metrics["per_class"]["covid"]["recall"] == skm.recall_score(
        y_true, y_pred, labels=[1], average="macro") == 0.8
    said = absent_classes_caution(metrics)
    assert said.startswith("Caution: the test images include none labelled normal, pneumonia. "
                           "Measured: recall (sensitivity) of covid, and accuracy.")
    assert "with covid alone" in said
    # Two of three present: no "alone"; every class present: no caution.
    two = metrics_from_confusion(skm.confusion_matrix([0, 1, 1], [0, 1, 0], labels=[0, 1, 2]),
                                 labels)
    assert "none labelled pneumonia." in absent_classes_caution(two)
    assert "alone" not in absent_classes_caution(two)
    full = metrics_from_confusion(skm.confusion_matrix([0, 1, 2], [0, 1, 1], labels=[0, 1, 2]),
                                  labels)
    assert absent_classes_caution(full) is None
    # No ROC curve for a class without negatives (its ROC-AUC is undefined).
    probability = np.tile([0.1, 0.8, 0.1], (5, 1))
    scores = score_metrics(y_true, probability, labels)
    assert scores["curves"] == {} and scores["per_class_auc"]["covid"]["roc_auc"] is None
