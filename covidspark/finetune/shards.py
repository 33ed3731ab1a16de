"""The fine-tuning image table: written once by Spark, one shard per training process.

The driver never holds the images. Spark writes the train and validation rows
(encoded bytes, label index, split, image id) as Parquet partitioned by
``shard`` in the run's output location; rank ``r`` of ``world`` reads only
``shard=r`` and decodes and augments in its DataLoader workers. Shards are
dealt round-robin within each (split, label) in a seeded order, so every
shard holds the classes in the same proportions and sizes differ by at most
one image per class.
"""
import json

from covidspark.runtime.filesystem import Files, join

SHARD_MANIFEST = "_covidspark_shards.json"
TABLE_COLUMNS = ["image_id", "content", "label_index", "split"]


def write_shards(images, labels, location, world, seed=0, content_col="content",
                 label_col="label", split_col="split"):
    """Write ``images``' train and validation rows as ``world`` shards under ``location``.

    Parameters
    ----------
    images : pyspark.sql.DataFrame
        With ``image_id``, the encoded bytes, the label and ``split``
        (``"train"``, ``"validation"``; other rows are not read).
    labels : list of str
        Class labels in index order.
    location : str
        Qualified URI of the table (replaced if present).
    world : int
        Training processes.

    Returns
    -------
    dict
        The manifest: ``world``, ``labels`` and ``counts[split][label]``.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from covidspark.errors import InputError

    rows = images.filter(F.col(split_col).isin("train", "validation"))
    counts = {}
    for r in rows.groupBy(split_col, label_col).count().collect():
        if r[label_col] not in labels:
            raise InputError(f"Fine-tuning: label {r[label_col]!r} ({r['count']} image(s)) is "
                             f"not one of {', '.join(labels)}")
        counts.setdefault(r[split_col], {})[r[label_col]] = r["count"]
    train = counts.get("train", {})
    if sum(train.values()) < world:
        raise InputError(f"Fine-tuning needs at least one training image per process: "
                         f"{sum(train.values())} training image(s), {world} process(es)")
    order = Window.partitionBy(split_col, label_col).orderBy(F.xxhash64("image_id", F.lit(seed)))
    # A literal map label -> index (Spark 3.5's array_position takes no column value).
    label_index = F.create_map(*[F.lit(v) for i, x in enumerate(labels) for v in (x, i)])
    table = rows.select(
        "image_id", F.col(content_col).alias("content"),
        label_index[F.col(label_col)].cast("int").alias("label_index"),
        F.col(split_col).alias("split"),
        ((F.row_number().over(order) - 1) % world).cast("int").alias("shard"))
    table.repartition(world, "shard").write.mode("overwrite").partitionBy("shard") \
        .parquet(location)
    manifest = {"world": world, "labels": list(labels), "counts": counts}
    Files(images.sparkSession).write_text(join(location, SHARD_MANIFEST), json.dumps(manifest))
    return manifest


def read_manifest(location):
    """The manifest :func:`write_shards` wrote (read without Spark)."""
    return json.loads(Files().read_text(join(location, SHARD_MANIFEST)))


def read_shard(location, rank):
    """Rank ``rank``'s rows as a dict of numpy arrays / lists (without Spark).

    Returns
    -------
    dict
        ``image_id`` (list), ``content`` (list of bytes), ``label_index`` and
        ``is_train`` (numpy arrays).
    """
    import numpy as np
    import pyarrow.parquet as pq

    filesystem, path = Files().arrow_location(location)
    table = pq.read_table(join(path, f"shard={rank}"), filesystem=filesystem,
                          columns=TABLE_COLUMNS)
    # A stable order within the shard, whatever order Spark wrote the files in.
    order = np.argsort(np.asarray(table.column("image_id").to_pylist()), kind="stable")
    table = table.take(order)
    return {"image_id": table.column("image_id").to_pylist(),
            "content": table.column("content").to_pylist(),
            "label_index": np.asarray(table.column("label_index").to_pylist(), dtype=np.int64),
            "is_train": np.asarray([s == "train" for s in table.column("split").to_pylist()])}
