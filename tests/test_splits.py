from collections import Counter

import pytest

from covidspark.splits import stratified_split


def _table(spark, counts):
    rows = [(f"{label}-{i}", f"id-{label}-{i}", label)
            for label, n in counts.items() for i in range(n)]
    return spark.createDataFrame(rows, "path string, image_id string, label string")


def test_split_is_stratified_exact_and_loses_nothing(spark):
    counts = {"covid": 13, "normal": 50, "pneumonia": 2}
    rows = stratified_split(_table(spark, counts), test_fraction=0.2, seed=5).collect()
    assert len(rows) == sum(counts.values())
    assert len({r.path for r in rows}) == len(rows)
    test = Counter(r.label for r in rows if r.split == "test")
    # round(13 * 0.8) = 10 train -> 3 test; 50 -> 10 test; 2 -> one on each side.
    assert test == {"covid": 3, "normal": 10, "pneumonia": 1}


def test_split_is_deterministic_by_seed(spark):
    df = _table(spark, {"covid": 40, "normal": 40})

    def assignment(seed):
        return {r.path: r.split for r in stratified_split(df, 0.25, seed).collect()}

    assert assignment(1) == assignment(1)
    assert assignment(1) != assignment(2)


def test_split_arguments_are_checked(spark):
    df = _table(spark, {"covid": 4})
    with pytest.raises(ValueError, match="test_fraction"):
        stratified_split(df, 1.5)
    with pytest.raises(ValueError, match="'patient'"):
        stratified_split(df, 0.2, label_col="patient")
