"""Workflow steps on their own: how a fit's features are persisted."""
import numpy as np


def test_features_persist_once_in_as_few_partitions_as_their_size_needs(spark, monkeypatch):
    """Kept once (a local checkpoint here, in local mode) and freed by ``release``, in
    the partitions the vectors' bytes need, not the cores'."""
    from covidspark.runtime import lineage
    from covidspark.workflows import steps

    # 40 rows, 256 float64 values wide: 80 KB.
    df = spark.range(40).selectExpr("id AS i", "array_repeat(CAST(id AS DOUBLE), 256) AS v")
    df = df.repartition(7)
    before = spark.sparkContext._jsc.getPersistentRDDs().size()

    for rows in (None, 40):  # counted here, or known to the caller
        small, n = steps.persist_compact(df, width=256, rows=rows)
        assert n == 40 and small.rdd.getNumPartitions() == 1
        assert sorted(r.i for r in small.collect()) == list(range(40))  # nothing lost or repeated
        assert spark.sparkContext._jsc.getPersistentRDDs().size() == before + 1  # kept once
        lineage.release(small)
        assert spark.sparkContext._jsc.getPersistentRDDs().size() == before  # and freed

    # 32 KB partitions: 80 KB needs three, one more than local[2]'s cores.
    monkeypatch.setattr(steps, "COMPACT_PARTITION_BYTES", 32 * 1024)
    spread, n = steps.persist_compact(df, width=256)
    assert n == 40 and spread.rdd.getNumPartitions() == 3
    assert sorted(r.i for r in spread.collect()) == list(range(40))
    lineage.release(spread)


def test_a_fit_s_rows_come_in_one_order_whatever_the_scan_s_partitions(spark, monkeypatch):
    """A cluster of another size, or other file sizes, partitions the image scan otherwise;
    the persisted rows, and so the model fitted on them, must not depend on it."""
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.linalg import Vectors, VectorUDT
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType

    from covidspark.runtime import lineage
    from covidspark.workflows import steps

    # More features than rows and no regularisation: as with ResNet50's 2,048 features
    # for a few hundred X-rays, L-BFGS's path follows the order of the sums.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 120))
    y = (x[:, 0] + 0.5 * rng.normal(size=60) > 0).astype(float)
    rows = [(f"{rng.integers(1 << 60):016x}", f"file:/x/{i}.png", float(y[i]), Vectors.dense(x[i]))
            for i in range(60)]
    schema = StructType([StructField("image_id", StringType()), StructField("path", StringType()),
                         StructField("label", DoubleType()), StructField("features", VectorUDT())])
    scans = [spark.createDataFrame(rows, schema).repartition(n) for n in (7, 3)]

    def persisted(df, known_rows=None):
        out, _ = steps.persist_compact(df, width=120, rows=known_rows)
        return out

    fits = []
    for scan in scans:
        for known_rows in (60, None):  # the features' path and the baseline pixels' path
            df = persisted(scan, known_rows)
            assert df.rdd.getNumPartitions() == 1
            # The reference order: sorted by id, then path, whatever came in.
            assert [r.image_id for r in df.collect()] == sorted(r[0] for r in rows)
            fits.append(LogisticRegression().fit(df).coefficients.toArray())
            lineage.release(df)
    assert all(np.array_equal(fits[0], f) for f in fits[1:])

    # A set too large for one partition: the same rows in the same partitions, each in
    # one order, whatever the scan and however many cores the cluster has (its cores are
    # what Spark's defaultParallelism says; the rows must not follow them).
    from pyspark.ml.classification import RandomForestClassifier

    from covidspark.runtime import connect

    monkeypatch.setattr(steps, "COMPACT_PARTITION_BYTES", 20 * 1024)  # 57.6 KB: 3 partitions
    layouts, forests = [], []
    for scan in scans:
        for cores in (2, 16):
            monkeypatch.setattr(connect, "default_parallelism", lambda _spark, n=cores: n)
            df = persisted(scan)
            layouts.append(df.rdd.glom().map(lambda part: [r.image_id for r in part]).collect())
            assert len(layouts[-1]) == 3 and all(part == sorted(part) for part in layouts[-1])
            # A forest draws its bootstrap samples partition by partition, row by row.
            forest = RandomForestClassifier(numTrees=5, seed=1).fit(df)
            forests.append(forest.toDebugString.split("\n", 1)[1])  # the trees, not the uid
            lineage.release(df)
    assert all(layout == layouts[0] for layout in layouts[1:])
    assert all(forest == forests[0] for forest in forests[1:])


def test_the_narrow_table_has_a_partition_per_core_and_its_bytes_come_back(
        spark, fixture_dir, monkeypatch):
    """The checks, duplicate search and split query the narrow table about ten times:
    in the scan's partitions each query paid for dozens of tasks. Coalescing must lose,
    repeat or mismatch no row, and where Connect hides the cores nothing is coalesced."""
    import hashlib

    from covidspark.data.reading import read_images
    from covidspark.runtime import connect
    from covidspark.workflows import steps

    cores = spark.sparkContext.defaultParallelism
    scan = cores + 5  # a scan of more partitions than cores
    images = read_images(spark, fixture_dir).repartition(scan)
    expected = sorted((r.path, r.image_id, r.label) for r in images.collect())
    assert len(expected) == 18

    narrow, with_content = steps.without_content(images)
    assert "content" not in narrow.columns
    assert narrow.rdd.getNumPartitions() == cores
    assert sorted((r.path, r.image_id, r.label) for r in narrow.collect()) == expected
    # Each row's bytes are its own: the id is the sha256 of the bytes (hashlib, not ours).
    back = with_content(narrow.filter("label != 'normal'")).collect()
    assert len(back) == 12
    assert all(hashlib.sha256(bytes(r.content)).hexdigest() == r.image_id for r in back)
    narrow.unpersist()

    monkeypatch.setattr(connect, "default_parallelism", lambda _spark, hidden=2: hidden)
    kept, _ = steps.without_content(images)
    assert kept.rdd.getNumPartitions() == scan
    kept.unpersist()
