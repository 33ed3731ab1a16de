"""Deterministic, stratified train/test splits.

The split is computed on a small projection of the DataFrame (key and label),
never on the image bytes, and joined back; each class contributes the same
fraction of its rows to the test set, chosen by a seeded hash of the key so
that the same rows land in the same split on every run and cluster.
"""
import logging

logger = logging.getLogger(__name__)


def stratified_split(df, test_fraction=0.2, seed=0, label_col="label", key_col="image_id",
                     row_col="path", split_col="split"):
    """Add a ``split`` column (``"train"`` / ``"test"``), stratified by label.

    Parameters
    ----------
    df : pyspark.sql.DataFrame
    test_fraction : float
        Fraction of each class that goes to ``"test"`` (rounded per class; a class
        with two or more rows always keeps at least one row on each side).
    seed : int
        Same seed, same split.
    label_col : str
        Column to stratify by.
    key_col : str
        Column hashed to order rows (``image_id``, so identical files sort together).
    row_col : str
        A column that is unique per row (used to join the assignment back).
    split_col : str
        Name of the added column.

    Returns
    -------
    pyspark.sql.DataFrame
        ``df`` with ``split_col`` added; no row is added or dropped.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1). Received: {test_fraction}")
    for col in (label_col, key_col, row_col):
        if col not in df.columns:
            raise ValueError(f"stratified_split: column {col!r} not in {df.columns}")
    by_label = Window.partitionBy(label_col)
    order = Window.partitionBy(label_col).orderBy(F.xxhash64(F.lit(seed), key_col), row_col)
    n = F.count(F.lit(1)).over(by_label)
    n_train = F.round(n * (1.0 - test_fraction))
    # Keep one row on each side whenever the class has two or more.
    n_train = F.when(n >= 2, F.least(F.greatest(n_train, F.lit(1)), n - 1)).otherwise(n)
    assignment = (
        df.select(row_col, label_col, key_col)
        .withColumn("_rank", F.row_number().over(order))
        .select(row_col, F.when(F.col("_rank") <= n_train, "train").otherwise("test").alias(split_col))
    )
    return df.join(F.broadcast(assignment), on=row_col, how="inner")
