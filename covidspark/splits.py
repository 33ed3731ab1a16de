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


SPLITS = ("train", "validation", "test")


def _components(rows, group_cols):
    """Union rows that share any non-null value of any group column: ``{path: component}``."""
    from covidspark.duplicates import group_pairs

    first_with = {}
    pairs = []
    for row in rows:
        for col in group_cols:
            value = row[col]
            if value is None:
                continue
            key = (col, value)
            if key in first_with:
                pairs.append((first_with[key], row["path"]))
            else:
                first_with[key] = row["path"]
    membership = group_pairs(pairs)
    return {row["path"]: membership.get(row["path"], row["path"]) for row in rows}


def _stable_hash(seed, text):
    import hashlib

    return hashlib.sha256(f"{seed}:{text}".encode()).hexdigest()


def _assign(components, targets, seed):
    """Greedy, deterministic: each component goes to the bin furthest below its target share.

    ``components`` is ``[(component id, size)]``; ``targets`` ``{bin: fraction}``.
    Returns ``{component id: bin}``.
    """
    counts = {name: 0 for name in targets}
    assignment = {}
    total = 0
    for component, size in sorted(components, key=lambda c: _stable_hash(seed, c[0])):
        total += size
        # The deficit after adding this component, relative to the target share.
        best = max(targets, key=lambda name: (targets[name] * total - counts[name],
                                              targets[name], name))
        assignment[component] = best
        counts[best] += size
    return assignment


def grouped_split(df, fractions=(0.8, 0.0, 0.2), seed=0, label_col="label",
                  group_cols=("patient_id", "dup_group"), k_folds=None, row_col="path"):
    """Split by label strata, never separating a patient or a duplicate group.

    Rows that share a patient id or a duplicate group (any non-null value of
    any of ``group_cols``) form one unit, which goes wholly to one split (and,
    with ``k_folds``, one fold). Units are stratified by their majority label and
    assigned greedily in a seeded order so that each split gets its fraction of
    every label's images as closely as whole units allow.

    Parameters
    ----------
    df : pyspark.sql.DataFrame
        With ``row_col`` (unique per row), ``label_col`` and any of ``group_cols``.
    fractions : (float, float, float)
        Train, validation and test shares (validation may be 0).
    seed : int
        Same seed, same split.
    group_cols : sequence of str
        Columns whose shared values tie rows together; absent columns are ignored.
    k_folds : int, optional
        Also add ``fold`` (0 to k-1) to the training rows, for ``CrossValidator``'s
        ``foldCol``; other rows get null.

    Returns
    -------
    (pyspark.sql.DataFrame, dict)
        ``df`` with ``split`` (and ``fold``), and a summary: images per split and
        label, and the number of units.

    Notes
    -----
    Grouping runs on the driver over ``(path, label, group ids)``: fine for a few
    million images; the image bytes never leave the executors.
    """
    from pyspark.sql import functions as F

    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three shares (train, validation, test) summing "
                         f"to 1. Received: {fractions}")
    if k_folds is not None and k_folds < 2:
        raise ValueError(f"k_folds must be >= 2. Received: {k_folds}")
    present = [c for c in group_cols if c in df.columns]
    rows = [r.asDict() for r in df.select(row_col, label_col, *present).collect()]
    if len({r[row_col] for r in rows}) != len(rows):
        raise ValueError(f"grouped_split: column {row_col!r} must be unique per row")
    rows = [{**r, "path": r[row_col]} for r in rows]
    component_of = _components(rows, present)
    members = {}
    for r in rows:
        members.setdefault(component_of[r["path"]], []).append(r[label_col])
    by_stratum = {}
    for component, labels in members.items():
        majority = sorted(set(labels), key=lambda x: (-labels.count(x), str(x)))[0]
        by_stratum.setdefault(majority, []).append((component, len(labels)))
    targets = {name: share for name, share in zip(SPLITS, fractions) if share > 0}
    split_of, fold_of = {}, {}
    for stratum, components in sorted(by_stratum.items(), key=lambda kv: str(kv[0])):
        split_of.update(_assign(components, targets, seed))
        if k_folds:
            train = [c for c in components if split_of[c[0]] == "train"]
            fold_of.update(_assign(train, {f: 1.0 / k_folds for f in range(k_folds)}, seed))
    assignment = [(r["path"], split_of[component_of[r["path"]]],
                   fold_of.get(component_of[r["path"]]), component_of[r["path"]]) for r in rows]
    mapping = df.sparkSession.createDataFrame(
        assignment, f"{row_col} string, split string, fold int, split_unit string")
    out = df.join(F.broadcast(mapping), on=row_col, how="inner")
    if not k_folds:
        out = out.drop("fold")
    summary = {"units": len(members), "images": {}}
    for r, (_, split, _, _) in zip(rows, assignment):
        per_label = summary["images"].setdefault(split, {})
        per_label[r[label_col]] = per_label.get(r[label_col], 0) + 1
    return out, summary
