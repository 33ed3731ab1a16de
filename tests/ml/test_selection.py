"""Class weights on an imbalanced training set, against scikit-learn's "balanced" weights."""
import numpy as np
import pytest


@pytest.fixture(scope="module")
def imbalanced(features_df):
    """3-class features with 6 covid, 3 normal, 6 pneumonia rows; one row per class is test.

    In one partition, as the workflows store small feature sets (``steps.persist_compact``):
    the window's shuffle leaves 8, and each of LR's iterations is a job of a task per
    partition (the balanced-fit test took 59 s so, against about half in one).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = Window.partitionBy("label").orderBy("path")
    rows = (features_df.withColumn("i", F.row_number().over(order))
            .filter((F.col("label") != "normal") | (F.col("i") <= 3))
            .withColumn("split", F.when(F.col("i") == 1, "test").otherwise("train")))
    return rows.coalesce(1).cache()


def test_balanced_weights_equal_scikit_learn(imbalanced):
    from sklearn.utils.class_weight import compute_class_weight

    from covidspark.ml.selection import balanced_class_weights

    train = imbalanced.filter("split = 'train'")
    labels = np.array([r.label for r in train.select("label").collect()])
    assert sorted(np.unique(labels, return_counts=True)[1]) == [2, 5, 5]
    classes = np.unique(labels)
    expected = dict(zip(classes, compute_class_weight("balanced", classes=classes, y=labels)))
    got = balanced_class_weights(train)
    assert got.keys() == expected.keys()
    for label in classes:
        assert got[label] == pytest.approx(expected[label])
    # By hand: 12 rows, 3 classes; normal has 2 -> 12 / (3 * 2) = 2.0, the others 0.8.
    assert got["normal"] == pytest.approx(2.0) and got["covid"] == pytest.approx(0.8)


# Weighted fit_and_evaluate: test_training.py's tuned, weighted run takes the same path.
@pytest.mark.same_spark_path
def test_a_balanced_fit_weights_its_rows_and_says_so(imbalanced):
    from covidspark.ml.experiment import TrainOptions, fit_and_evaluate
    from covidspark.ml.selection import CLASS_WEIGHT_COL

    weighted, result = fit_and_evaluate(imbalanced, "3class", "lr",
                                        TrainOptions(class_weight="balanced", bootstrap=0))
    plain, plain_result = fit_and_evaluate(imbalanced, "3class", "lr", TrainOptions(bootstrap=0))
    assert result["class_weight"]["mode"] == "balanced" and plain_result["class_weight"] is None
    assert result["class_weight"]["weights"] == pytest.approx(
        {"covid": 0.8, "normal": 2.0, "pneumonia": 0.8})
    assert weighted.stages[1].getWeightCol() == CLASS_WEIGHT_COL
    assert not np.allclose(weighted.stages[1].coefficientMatrix.toArray(),
                           plain.stages[1].coefficientMatrix.toArray())
    # covidspark 0.1 took a bool: True still means balanced.
    assert TrainOptions(class_weight=True).class_weight == "balanced"


def test_a_split_without_test_rows_is_refused_not_scored_as_numbers(imbalanced):
    from pyspark.sql import functions as F

    from covidspark.errors import InputError
    from covidspark.ml.experiment import TrainOptions, fit_and_evaluate

    # Metrics of no rows came out as zeros with exit 0 (a grouped split of a few
    # patients could put them all in train).
    all_train = imbalanced.withColumn("split", F.lit("train"))
    with pytest.raises(InputError, match=r"No test images of the 3class task's classes \(normal, "
                                         r"covid, pneumonia\) after the split"):
        fit_and_evaluate(all_train, "3class", "dt", TrainOptions(bootstrap=0))
