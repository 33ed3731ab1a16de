"""Workflow steps on their own: how a fit's features are persisted."""
import numpy as np


def test_features_persist_in_as_few_partitions_as_their_size_needs(spark, monkeypatch):
    from pyspark.ml.linalg import Vectors, VectorUDT
    from pyspark.sql.types import IntegerType, StructField, StructType

    from covidspark.workflows import steps

    schema = StructType([StructField("i", IntegerType()), StructField("features", VectorUDT())])
    # 40 rows, 256 float64 values wide (80 KB): most of them without a vector, which must
    # not make the set look empty.
    rows = [(i, None if i < 36 else Vectors.dense(np.full(256, float(i)))) for i in range(40)]
    df = spark.createDataFrame(rows, schema).repartition(7)

    small, n = steps.persist_compact(spark, df, "features")
    assert n == 40 and small.rdd.getNumPartitions() == 1
    assert sorted(r.i for r in small.collect()) == list(range(40))  # nothing lost or repeated
    small.unpersist()

    # 64 KB partitions: 80 KB needs two, as many as local[2]'s cores (never more).
    monkeypatch.setattr(steps, "COMPACT_PARTITION_BYTES", 64 * 1024)
    spread, n = steps.persist_compact(spark, df, "features")
    assert n == 40 and spread.rdd.getNumPartitions() == 2
    assert sorted(r.i for r in spread.collect()) == list(range(40))
    spread.unpersist()


def test_features_of_a_known_width_persist_once_in_the_partitions_they_need(spark, monkeypatch):
    """The baseline's path: no intermediate cache (dropping one waits for every cache being built)."""
    from covidspark.workflows import steps

    df = spark.range(40).selectExpr("id AS i", "array_repeat(CAST(id AS DOUBLE), 256) AS v")
    df = df.repartition(7)
    before = spark.sparkContext._jsc.getPersistentRDDs().size()

    small, n = steps.persist_compact(spark, df, "v", width=256)
    assert n == 40 and small.rdd.getNumPartitions() == 1
    assert sorted(r.i for r in small.collect()) == list(range(40))
    assert spark.sparkContext._jsc.getPersistentRDDs().size() == before + 1  # one cache, kept
    small.unpersist()

    monkeypatch.setattr(steps, "COMPACT_PARTITION_BYTES", 64 * 1024)  # 80 KB: two partitions
    spread, n = steps.persist_compact(spark, df, "v", width=256)
    assert n == 40 and spread.rdd.getNumPartitions() == 2
    assert sorted(r.i for r in spread.collect()) == list(range(40))
    spread.unpersist()
