"""A fit's rows kept once: a local checkpoint where the executor is the driver, else a cache."""
import numpy as np
import pytest

from conftest import persistent_rdds


@pytest.mark.parametrize("master, in_driver", [
    ("local", True), ("local[2]", True), ("local[*]", True), ("local[4, 2]", True),
    ("local[*,3]", True), ("local-cluster[2,1,1024]", False), ("spark://host:7077", False),
    ("yarn", False), ("k8s://https://host:443", False), ("mesos://host:5050", False)])
def test_only_local_masters_run_their_executor_in_the_driver(master, in_driver):
    from covidspark.runtime.lineage import runs_executor_in_driver

    assert runs_executor_in_driver(master) is in_driver


def _rows_with_lineage(spark):
    """60 labelled rows of 40 features behind a join and two shuffles, in one fixed order."""
    from pyspark.ml.linalg import Vectors

    rng = np.random.default_rng(5)
    x = rng.normal(size=(60, 40))
    y = (x[:, 0] + 0.3 * rng.normal(size=60) > 0).astype(float)
    features = spark.createDataFrame([(i, Vectors.dense(x[i])) for i in range(60)],
                                     ["id", "features"]).repartition(5)
    labels = spark.createDataFrame([(i, float(y[i])) for i in range(60)], ["id", "label"])
    return features.join(labels, "id").repartition(1, "id").sortWithinPartitions("id")


def test_in_local_mode_the_kept_rows_carry_no_lineage_and_fit_the_same_model(spark):
    """The fit's jobs must not carry the plan that made the rows (that halves an LR
    iteration's cost), and must see the same rows in the same order as a cache would."""
    from pyspark.ml.classification import LogisticRegression

    from covidspark.runtime import lineage

    df = _rows_with_lineage(spark)
    cached = df.cache()
    reference = LogisticRegression(maxIter=50).fit(cached).coefficients.toArray()
    assert "ShuffledRowRDD" in cached.rdd.toDebugString().decode()  # the reference has a lineage
    before = spark.sparkContext._jsc.getPersistentRDDs().size()

    kept, rows = lineage.keep(df)
    assert rows == 60
    assert "ShuffledRowRDD" not in kept.rdd.toDebugString().decode()
    assert spark.sparkContext._jsc.getPersistentRDDs().size() == before + 1
    fitted = LogisticRegression(maxIter=50).fit(kept).coefficients.toArray()
    assert np.array_equal(fitted, reference)

    lineage.release(kept)
    assert spark.sparkContext._jsc.getPersistentRDDs().size() == before
    cached.unpersist()


def test_on_a_cluster_the_kept_rows_are_a_cache_that_a_lost_executor_recomputes(
        spark, monkeypatch):
    """A local checkpoint's rows die with their executor: on a cluster they are persisted."""
    from covidspark.runtime import lineage

    monkeypatch.setattr(lineage, "executors_in_driver", lambda _spark: False)
    kept, rows = lineage.keep(_rows_with_lineage(spark))
    assert rows == 60 and kept.is_cached
    assert "ShuffledRowRDD" in kept.rdd.toDebugString().decode()  # recomputable
    lineage.release(kept)
    assert not kept.is_cached


@pytest.mark.parametrize("in_driver", [True, False], ids=["local checkpoint", "cache"])
def test_held_rows_are_released_when_their_fit_raises(spark, monkeypatch, in_driver):
    """A notebook's session outlives a failed fit: its rows must not stay in the executors."""
    from pyspark.ml.classification import LogisticRegression

    from covidspark.runtime import lineage

    monkeypatch.setattr(lineage, "executors_in_driver", lambda _spark: in_driver)
    before = persistent_rdds(spark)
    kept, _ = lineage.keep(_rows_with_lineage(spark))
    assert len(persistent_rdds(spark) - before) == 1
    # A real fit that fails: Spark refuses the parameter once the fit starts.
    with pytest.raises(Exception, match="maxIter"), lineage.held(kept):
        LogisticRegression(maxIter=-1).fit(kept)
    assert persistent_rdds(spark) == before


def test_a_workflow_frees_what_it_kept_and_nothing_else(spark):
    """Tables kept inside a workflow go when it ends; one persisted outside stays."""
    from pyspark import StorageLevel

    from covidspark.runtime import lineage

    before = persistent_rdds(spark)
    outside = lineage.persist(spark.range(10), StorageLevel.MEMORY_AND_DISK)
    assert outside.count() == 10

    @lineage.frees_what_it_keeps
    def workflow():
        images = lineage.persist(spark.range(20), StorageLevel.DISK_ONLY)
        features, rows = lineage.keep(images.filter("id % 2 = 0"))
        assert images.count() == 20 and rows == 10
        assert len(persistent_rdds(spark) - before) == 3
        return rows

    assert workflow() == 10
    assert len(persistent_rdds(spark) - before) == 1 and outside.is_cached
    outside.unpersist()
    assert persistent_rdds(spark) == before


def test_after_ctrl_c_the_rows_are_left_to_the_ending_process(spark):
    """A release after Ctrl-C could block in py4j while the user waits for the exit."""
    from covidspark.runtime import lineage

    before = persistent_rdds(spark)
    kept, _ = lineage.keep(_rows_with_lineage(spark))
    with pytest.raises(KeyboardInterrupt), lineage.held(kept):
        raise KeyboardInterrupt
    assert len(persistent_rdds(spark) - before) == 1
    lineage.release(kept)
    assert persistent_rdds(spark) == before
