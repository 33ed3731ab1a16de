"""Deterministic, stratified train/test splits.

The split is computed on a small projection of the DataFrame (key and label),
never on the image bytes, and joined back; each class contributes the same
fraction of its rows to the test set, chosen by a seeded hash of the key so
that the same rows land in the same split on every run and cluster.
"""
import logging
from covidspark.errors import InputError

logger = logging.getLogger(__name__)


def stratified_split(df, test_fraction=0.2, seed=0, label_col="label", key_col="image_id",
                     row_col="path", split_col="split"):
    """Add a ``split`` column (``"train"`` / ``"test"``), stratified by label.

    Rows with the same ``key_col`` and label (identical files, when the key is
    ``image_id``) are one unit and land on one side: a copy of a training image
    in the test set would be a test image the model has seen. Each label's
    fraction counts its units.

    Parameters
    ----------
    df : pyspark.sql.DataFrame
    test_fraction : float
        Fraction of each class's units that goes to ``"test"`` (rounded per class;
        a class with two or more units always keeps at least one on each side).
    seed : int
        Same seed, same split.
    label_col : str
        Column to stratify by.
    key_col : str
        Column hashed to order the units (``image_id``: the split follows the
        files' contents, not their paths). A row whose key is null is a unit
        of its own.
    row_col : str
        A column that is unique per row.
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
        raise InputError(f"test_fraction must be in (0, 1). Received: {test_fraction}")
    for col in (label_col, key_col, row_col):
        if col not in df.columns:
            raise InputError(f"stratified_split: column {col!r} not in {df.columns}")
    # A null label is a stratum too, and a join on a null would drop its rows.
    keyed = (df.withColumn("_stratum", F.coalesce(F.col(label_col).cast("string"),
                                                  F.lit("\u0000")))
             .withColumn("_unit", F.coalesce(F.col(key_col), F.col(row_col))))
    units = keyed.select("_stratum", "_unit").distinct()
    by_stratum = Window.partitionBy("_stratum")
    order = by_stratum.orderBy(F.xxhash64(F.lit(seed), "_unit"), "_unit")
    n = F.count(F.lit(1)).over(by_stratum)
    n_train = F.round(n * (1.0 - test_fraction))
    # Keep one unit on each side whenever the class has two or more.
    n_train = F.when(n >= 2, F.least(F.greatest(n_train, F.lit(1)), n - 1)).otherwise(n)
    assignment = (
        units.withColumn("_rank", F.row_number().over(order))
        .select("_stratum", "_unit",
                F.when(F.col("_rank") <= n_train, "train").otherwise("test").alias(split_col))
    )
    return (keyed.join(F.broadcast(assignment), on=["_stratum", "_unit"], how="inner")
            .drop("_stratum", "_unit"))


SPLITS = ("train", "validation", "test")


def _components(rows, group_cols):
    """Union rows that share any non-null value of any group column: ``{path: component}``."""
    from covidspark.data.duplicates import group_pairs

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


def units_by_key(rows, group_cols, key):
    """``{path: unit}``: rows that share any non-null value of any of ``group_cols``
    are one unit, named by its smallest ``key``.

    ``rows`` are mappings with ``path`` (unique), ``key`` and the group columns.
    The names do not depend on the rows' paths or order, so a seeded order of
    the units (the split's, the bootstrap's) is the same on every run.
    """
    component_of = _components(rows, group_cols)
    name = {}
    for row in rows:
        component = component_of[row["path"]]
        name[component] = min(name.get(component, row[key]), row[key])
    return {path: name[component] for path, component in component_of.items()}


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
    ordered = sorted(components, key=lambda c: _stable_hash(seed, c[0]))
    for component, size in ordered:
        total += size
        # The deficit after adding this component, relative to the target share.
        best = max(targets, key=lambda name: (targets[name] * total - counts[name],
                                              targets[name], name))
        assignment[component] = best
        counts[best] += size
    # Whole units can leave a small share empty (two patients of three images and a
    # 20 % test share: both go to train). As the ungrouped split does, each bin gets a
    # unit while another bin holds two: the smallest unit of the bin holding the most
    # moves, the largest shares (test before validation) served first.
    size_of = dict(ordered)
    for name in sorted(targets, key=lambda n: (-targets[n], str(n))):
        if name in assignment.values():
            continue
        held = {b: [c for c, _ in ordered if assignment[c] == b] for b in targets}
        donor = max(targets, key=lambda b: (len(held[b]), targets[b], str(b)))
        if len(held[donor]) < 2:
            break
        moved = min(held[donor], key=lambda c: size_of[c])  # first in seeded order on ties
        assignment[moved] = name
    return assignment


def grouped_split(df, fractions=(0.8, 0.0, 0.2), seed=0, label_col="label",
                  group_cols=("patient_id", "dup_group"), k_folds=None, row_col="path",
                  key_col="image_id"):
    """Split by label strata, never separating a patient or a duplicate group.

    Rows that share a patient id or a duplicate group (any non-null value of
    any of ``group_cols``) form one unit, which goes wholly to one split (and,
    with ``k_folds``, one fold). Units are stratified by their majority label and
    assigned greedily in a seeded order so that each split gets its fraction of
    every label's images as closely as whole units allow. A unit's place in that
    order is a seeded hash of its smallest ``key_col`` value: with ``image_id``
    (the sha256 of the bytes) the split follows the images' contents, not where
    they are stored, so a copy of the set on S3, DBFS or a laptop splits alike.
    Rows with the same ``key_col`` (identical files) are one unit.

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
    row_col : str
        A column unique per row (the assignment is joined back on it).
    key_col : str
        The rows' identity across copies of the set. Where ``df`` lacks it the
        units are ordered by ``row_col`` instead, and the split then depends on
        the paths (the same files elsewhere split otherwise).

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
        raise InputError(f"fractions must be three shares (train, validation, test) summing "
                         f"to 1. Received: {fractions}")
    if k_folds is not None and k_folds < 2:
        raise InputError(f"k_folds must be >= 2. Received: {k_folds}")
    present = [c for c in group_cols if c in df.columns]
    key = key_col if key_col in df.columns and key_col != row_col else row_col
    keys = [key] if key != row_col else []
    rows = [r.asDict() for r in df.select(row_col, label_col, *present, *keys).collect()]
    if len({r[row_col] for r in rows}) != len(rows):
        raise ValueError(f"grouped_split: column {row_col!r} must be unique per row")
    missing = [r[row_col] for r in rows if r[key] is None]
    if missing:
        raise InputError(f"grouped_split: {len(missing)} row(s) without {key!r}, e.g. "
                         f"{missing[0]!r}; every row needs one (read_images sets image_id)")
    rows = [{**r, "path": r[row_col]} for r in rows]
    component_of = units_by_key(rows, [*present, *keys], key)
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


def split_images(images, test_fraction=0.2, validation_fraction=0.0, seed=0, k_folds=None,
                 train_source=None, test_source=None):
    """Add ``split`` (train / validation / test) and, with ``k_folds``, ``fold``.

    Parameters
    ----------
    images : pyspark.sql.DataFrame
        With ``path``, ``label`` and optionally ``patient_id``, ``dup_group``, ``source``.
    test_fraction, validation_fraction : float
        Shares of each class (ignored for the test side of a cross-source split).
    seed : int
    k_folds : int, optional
        Folds of the training rows for cross-validation.
    train_source, test_source : str, optional
        Train (and validate) on rows of one ``source``, test on rows of another;
        rows of other sources are excluded and counted, and test rows that
        duplicate a training image are removed and listed.

    Returns
    -------
    (pyspark.sql.DataFrame, dict)
        The rows with ``split``; and ``{"method", "excluded_sources",
        "cross_source_duplicates"}``.
    """
    from pyspark.sql import functions as F

    group_cols = [c for c in ("patient_id", "dup_group") if c in images.columns]
    info = {"excluded_sources": {}, "cross_source_duplicates": []}
    if (train_source is None) != (test_source is None):
        raise InputError("--train-source and --test-source go together")
    if train_source is not None:
        if "source" not in images.columns:
            raise InputError("A cross-source split needs a 'source' column (manifest column "
                             "'source', or one --data folder per source)")
        counts = {r.source: r["count"] for r in images.groupBy("source").count().collect()}
        for name in (train_source, test_source):
            if name not in counts:
                raise InputError(f"No images from source {name!r}; sources: {sorted(counts)}")
        info["excluded_sources"] = {s: n for s, n in counts.items()
                                    if s not in (train_source, test_source)}
        train_side = images.filter(F.col("source") == train_source)
        share = (1.0 - validation_fraction, validation_fraction, 0.0)
        train_side, _ = grouped_split(train_side, share, seed, group_cols=group_cols,
                                             k_folds=k_folds)
        test_side = images.filter(F.col("source") == test_source).withColumn("split", F.lit("test"))
        if k_folds:
            test_side = test_side.withColumn("fold", F.lit(None).cast("int"))
        if "dup_group" in images.columns:
            test_side, info["cross_source_duplicates"] = _drop_leaked(train_side, test_side)
            if len(info["cross_source_duplicates"]) == counts[test_source]:
                raise InputError(
                    f"--test-source {test_source!r}: each of its {counts[test_source]} images "
                    f"is an exact or near copy of a training image of {train_source!r} (e.g. "
                    f"{info['cross_source_duplicates'][0]}), so nothing is left to test on. "
                    f"Test on a source that does not share images with the training source")
        split = train_side.drop("split_unit").unionByName(test_side)
        info["method"] = (f"train on source {train_source!r}, test on source {test_source!r}"
                          + (f"; validation {validation_fraction:.0%} of {train_source!r}, grouped"
                             if validation_fraction else ""))
        return split, info
    has_groups = bool(group_cols) and images.filter(
        F.coalesce(*[F.col(c) for c in group_cols]).isNotNull()).limit(1).count() > 0
    if has_groups or validation_fraction or k_folds:
        share = (1.0 - test_fraction - validation_fraction, validation_fraction, test_fraction)
        split, summary = grouped_split(images, share, seed, group_cols=group_cols,
                                              k_folds=k_folds)
        if not summary["images"].get("test"):
            n = sum(sum(per_label.values()) for per_label in summary["images"].values())
            raise InputError(
                f"The split left no test images: the {n} images form {summary['units']} "
                f"unit(s) (a patient's images, near-duplicates and identical files stay "
                f"together), at most one per class, and a unit is never split. Add images "
                f"or patients, or test on another source (--train-source, --test-source)")
        by = " and ".join(group_cols) if has_groups else "nothing (every image its own unit)"
        info["method"] = (f"stratified by label, grouped by {by} ({summary['units']} units), "
                          f"seeded" + (f", {k_folds} folds" if k_folds else ""))
        return split.drop("split_unit"), info
    info["method"] = "stratified by label, identical files one unit, seeded hash of image_id"
    return stratified_split(images, test_fraction, seed), info


def _drop_leaked(train_side, test_side):
    """Remove test rows whose duplicate group also has a training image."""
    from pyspark.sql import functions as F

    seen = {r.dup_group for r in train_side.filter(F.col("dup_group").isNotNull())
            .select("dup_group").distinct().collect()}
    leaked = [r.path for r in test_side.filter(F.col("dup_group").isin(list(seen) or [""]))
              .select("path").collect()] if seen else []
    if leaked:
        logger.warning("Removed %d test image(s) that duplicate a training image, e.g. %s",
                       len(leaked), leaked[0])
        test_side = test_side.filter(~F.col("path").isin(leaked))
    return test_side, leaked
