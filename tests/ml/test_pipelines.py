import numpy as np
import pytest

from covidspark.ml.pipelines import LABEL_INDEX_COL, build_classifier, build_head, prepare_task, task_labels


def test_binary_task_excludes_pneumonia_and_counts_it(images_df):
    data, info = prepare_task(images_df, "binary")
    assert info == {"counts": {"covid": 6, "normal": 6}, "excluded": {"pneumonia": 6}}
    assert sorted(r.label for r in data.select("label").distinct().collect()) == ["covid", "normal"]
    data3, info3 = prepare_task(images_df, "3class")
    assert data3.count() == 18 and info3["excluded"] == {}


def test_unknown_label_is_named_with_an_example_path(spark):
    df = spark.createDataFrame([("a.png", "covid"), ("b.png", "normal"), ("c.png", "COVID-19")],
                               "path string, label string")
    with pytest.raises(ValueError, match=r"'COVID-19': 1 row\(s\), e.g. c.png"):
        prepare_task(df, "binary")
    with pytest.raises(ValueError, match="none labelled \\['normal'\\]"):
        prepare_task(spark.createDataFrame([("a.png", "covid")], "path string, label string"),
                     "binary")
    with pytest.raises(ValueError, match="Unknown task"):
        prepare_task(df, "4class")


def test_label_indices_are_fixed_with_covid_positive(features_df):
    for task in ("binary", "3class"):
        data, _ = prepare_task(features_df, task)
        model = build_head(task, "lr").fit(data)
        indexed = {r.label: r[LABEL_INDEX_COL]
                   for r in model.transform(data).select("label", LABEL_INDEX_COL).collect()}
        assert indexed["normal"] == 0.0 and indexed["covid"] == 1.0
        if task == "3class":
            assert indexed["pneumonia"] == 2.0
        assert list(task_labels(task)) == model.stages[0].labels


@pytest.mark.parametrize("classifier", ["lr", "rf", "dt"])
def test_each_classifier_fits_and_predicts_known_labels(features_df, classifier):
    data, _ = prepare_task(features_df, "3class")
    model = build_head("3class", classifier, seed=1).fit(data)
    rows = model.transform(data).select("label", "predicted_label", "probability").collect()
    assert len(rows) == 18
    assert {r.predicted_label for r in rows} <= {"covid", "normal", "pneumonia"}
    for r in rows:
        assert np.isclose(r.probability.toArray().sum(), 1.0)
    # The fixture's classes are separable in feature space: every model fits its training set.
    training_accuracy = np.mean([r.label == r.predicted_label for r in rows])
    assert training_accuracy >= 0.9, training_accuracy


def test_unknown_classifier():
    with pytest.raises(ValueError, match="Supported: lr, rf, dt"):
        build_classifier("svm")
