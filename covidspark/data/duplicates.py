"""Exact and near-duplicate images, found in Spark.

Public COVID X-ray sets overlap heavily (Cohen's images reappear in the Ozturk,
Chowdhury and COVIDx sets), and one set may hold the same radiograph twice at
different crops. A duplicate on both sides of a split inflates test scores.

- *Exact* duplicates share ``image_id`` (sha256 of the bytes).
- *Near* duplicates have perceptual hashes (:mod:`covidspark.data.hashing`, computed
  on the executors) within ``max_distance`` bits. Candidate pairs share a hash
  band (with ``t`` allowed differences, one of ``t + 1`` bands must match:
  pigeonhole), so no all-pairs comparison is made.

:func:`duplicate_groups` searches on the driver: a few narrow columns per image
(path, id, label, source, 8-byte hash) come back, and numpy buckets them by band.
A Spark band join (:func:`find_duplicate_pairs`, kept for tables past
:data:`DRIVER_SEARCH_MAX_ROWS`) costs a fixed ~6-10 s of shuffles on 2 cores even
for 2,000 images; collecting them took 0.6 s.

The default ``max_distance=2`` is deliberate: on the Ozturk set, distance 4
also pairs four different radiographs (chest X-rays look alike at 8x8 DCT
resolution), while the two real duplicates are at 0 and 2.
"""
import logging

import numpy as np

from covidspark.errors import InputError

logger = logging.getLogger(__name__)

DEFAULT_MAX_DISTANCE = 2
#: Above this many hashed images, :func:`duplicate_groups` joins in Spark instead
#: of collecting the hashes (about 200 bytes per image on the driver).
DRIVER_SEARCH_MAX_ROWS = 1_000_000
#: Columns of a duplicate pair, as :func:`find_duplicate_pairs` returns them.
PAIR_FIELDS = ("path_a", "path_b", "label_a", "label_b", "source_a", "source_b", "distance",
               "exact")
POLICIES = ("keep", "drop", "group")


def image_info(df, content_col="content", path_col="path", max_pixels=None):
    """Add an ``info`` struct: format, mode, width, height, bits, phash, error.

    The ingest pass of :func:`covidspark.data.ingest.inspect_images` (one decode
    per image, on the executors); ``error`` is set (and the rest null) when the
    image does not decode.
    """
    from covidspark.data.decoding import DEFAULT_MAX_PIXELS
    from covidspark.data.ingest import inspect_images

    return inspect_images(df, content_col, path_col, max_pixels or DEFAULT_MAX_PIXELS)


def hash_bands(max_distance):
    """(shift, mask) of ``max_distance + 1`` bit bands covering 64 bits."""
    n = max_distance + 1
    edges = [round(i * 64 / n) for i in range(n + 1)]
    return [(lo, (1 << (hi - lo)) - 1 if hi - lo < 64 else -1) for lo, hi in zip(edges, edges[1:])]


def hashed_rows(df, max_distance, hash_col):
    """The rows both searches read: ``path, image_id, label, source, h`` with a hash.

    Raises :class:`~covidspark.errors.InputError` for a ``max_distance`` outside [0, 15].
    """
    from pyspark.sql import functions as F

    if not 0 <= max_distance <= 15:
        raise InputError(f"max_distance must be in [0, 15]. Received: {max_distance}")
    return (df.select("path", "image_id", "label", "source", F.col(hash_col).alias("h"))
            .filter(F.col("h").isNotNull()))


def find_duplicate_pairs(df, max_distance=DEFAULT_MAX_DISTANCE, hash_col="phash64"):
    """Pairs of rows whose perceptual hashes differ in at most ``max_distance`` bits.

    Parameters
    ----------
    df : pyspark.sql.DataFrame
        With ``path``, ``image_id``, ``label``, ``source`` and ``hash_col``, the
        64-bit perceptual hash as a signed long (``info.phash64``).
    max_distance : int
        0 to 15.

    Returns
    -------
    pyspark.sql.DataFrame
        ``path_a < path_b``, their labels and sources, ``distance`` and ``exact``
        (same sha256).
    """
    from pyspark.sql import functions as F

    hashed = hashed_rows(df, max_distance, hash_col)
    banded = None
    for index, (shift, mask) in enumerate(hash_bands(max_distance)):
        band = hashed.select("*", F.lit(index).alias("band"),
                             F.shiftright("h", shift).bitwiseAND(F.lit(mask)).alias("value"))
        banded = band if banded is None else banded.unionByName(band)
    a, b = banded.alias("a"), banded.alias("b")
    pairs = (a.join(b, (F.col("a.band") == F.col("b.band")) & (F.col("a.value") == F.col("b.value"))
                    & (F.col("a.path") < F.col("b.path")))
             .select(F.col("a.path").alias("path_a"), F.col("b.path").alias("path_b"),
                     F.col("a.label").alias("label_a"), F.col("b.label").alias("label_b"),
                     F.col("a.source").alias("source_a"), F.col("b.source").alias("source_b"),
                     F.bit_count(F.col("a.h").bitwiseXOR(F.col("b.h"))).alias("distance"),
                     (F.col("a.image_id") == F.col("b.image_id")).alias("exact"))
             .filter(F.col("distance") <= max_distance)
             .dropDuplicates(["path_a", "path_b"]))
    return pairs


def group_pairs(pairs):
    """Connected components of ``(path_a, path_b)`` pairs: ``{path: group id}``.

    The group id is the smallest path of the component (stable across runs).
    """
    parent = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in parent}


def bit_distance(a, b):
    """Bits that differ between int64 arrays ``a`` and ``b`` (element-wise popcount of a ^ b)."""
    xor = np.bitwise_xor(a, b).astype(np.int64)
    return _POPCOUNT8[xor.view(np.uint8).reshape(-1, 8)].sum(axis=1)


_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


def pairs_within(hashes, max_distance=DEFAULT_MAX_DISTANCE):
    """Index pairs ``(i, j)``, ``i < j``, of ``hashes`` at most ``max_distance`` bits apart.

    The band search of :func:`find_duplicate_pairs` in numpy, for hashes on the driver.

    Parameters
    ----------
    hashes : numpy.ndarray
        int64 perceptual hashes.
    max_distance : int

    Returns
    -------
    (numpy.ndarray, numpy.ndarray, numpy.ndarray)
        ``i``, ``j`` and their distances, sorted by ``(i, j)``, each pair once.
    """
    hashes = np.asarray(hashes, dtype=np.int64)
    found_i, found_j = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for shift, mask in hash_bands(max_distance):
        values = (hashes >> np.int64(shift)) & np.int64(mask)
        order = np.argsort(values, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(values[order]) != 0])
        ends = np.r_[starts[1:], len(order)]
        for start, end in zip(starts, ends):
            if end - start < 2:
                continue
            members = np.sort(order[start:end])
            upper_i, upper_j = np.triu_indices(end - start, 1)
            i, j = members[upper_i], members[upper_j]
            # Filter per bucket: a large bucket's candidates are never all held at once.
            close = bit_distance(hashes[i], hashes[j]) <= max_distance
            found_i.append(i[close])
            found_j.append(j[close])
    keys = np.unique(np.concatenate(found_i) * len(hashes) + np.concatenate(found_j))
    i, j = keys // max(len(hashes), 1), keys % max(len(hashes), 1)
    return i, j, bit_distance(hashes[i], hashes[j])


def collected_pairs(rows, max_distance=DEFAULT_MAX_DISTANCE):
    """The pairs (dicts of :data:`PAIR_FIELDS`) of collected rows.

    ``rows`` is a pandas DataFrame of ``path, image_id, label, source, h``.
    """
    paths = rows["path"].to_numpy()
    ids, labels, sources = (rows[c].to_numpy() for c in ("image_id", "label", "source"))
    out = {}
    for i, j, distance in zip(*pairs_within(rows["h"].to_numpy(), max_distance)):
        if paths[i] == paths[j]:
            continue
        a, b = (i, j) if paths[i] < paths[j] else (j, i)
        # As the Spark join's dropDuplicates: one pair per two paths.
        out.setdefault((paths[a], paths[b]), dict(zip(PAIR_FIELDS, (
            paths[a], paths[b], labels[a], labels[b], sources[a], sources[b], int(distance),
            bool(ids[a] == ids[b])))))
    return list(out.values())


def duplicate_groups(df, max_distance=DEFAULT_MAX_DISTANCE, hash_col="phash64"):
    """Duplicate groups of ``df`` as a list of dicts (members, labels, sources, distances).

    ``df`` needs ``hash_col``; use :func:`image_info` (``info.phash64``) first.
    Up to :data:`DRIVER_SEARCH_MAX_ROWS` hashed images, the narrow columns are
    collected and searched on the driver; past that, Spark joins the bands.
    """
    hashed = hashed_rows(df, max_distance, hash_col)
    rows = hashed.limit(DRIVER_SEARCH_MAX_ROWS + 1).toPandas()
    if len(rows) <= DRIVER_SEARCH_MAX_ROWS:
        return groups_of_pairs(collected_pairs(rows, max_distance))
    return groups_of_pairs([r.asDict() for r in
                            find_duplicate_pairs(df, max_distance, hash_col).collect()])


def groups_of_pairs(pairs):
    """The groups :func:`duplicate_groups` reports, from pairs (dicts of :data:`PAIR_FIELDS`)."""
    membership = group_pairs([(p["path_a"], p["path_b"]) for p in pairs])
    groups = {}
    for p in pairs:
        g = groups.setdefault(membership[p["path_a"]], {"members": {}, "max_distance": 0,
                                                        "exact": True})
        g["members"][p["path_a"]] = (p["label_a"], p["source_a"])
        g["members"][p["path_b"]] = (p["label_b"], p["source_b"])
        g["max_distance"] = max(g["max_distance"], p["distance"])
        g["exact"] = g["exact"] and p["exact"]
    out = []
    for group_id, g in sorted(groups.items()):
        labels = sorted({label for label, _ in g["members"].values()})
        out.append({
            "group": group_id,
            "paths": sorted(g["members"]),
            "labels": labels,
            "sources": sorted({source for _, source in g["members"].values()}),
            "max_distance": g["max_distance"],
            "exact": g["exact"],
            "label_conflict": len(labels) > 1,
        })
    return out


def resolve_duplicates(df, policy="group", max_distance=DEFAULT_MAX_DISTANCE,
                       source_priority=None):
    """Find duplicate groups in ``df`` and apply a policy.

    Parameters
    ----------
    df : pyspark.sql.DataFrame
        Images as :func:`covidspark.data.reading.read_images` returns them.
    policy : {"keep", "drop", "group"}
        ``"group"`` keeps every row and adds ``dup_group`` (the group's id, null
        for images without duplicates) so that splits keep each group on one
        side; ``"drop"`` keeps the first image of each group (by
        ``source_priority``, then path) and drops the later copies; ``"keep"``
        only reports the groups and returns ``df`` unchanged.
    source_priority : list of str, optional
        Sources in order of preference for ``"drop"``.

    Returns
    -------
    (pyspark.sql.DataFrame, dict)
        The rows, and a report: ``groups`` (see :func:`duplicate_groups`) and
        ``dropped`` (the paths removed, empty unless ``policy="drop"``).
    """
    from pyspark.sql import functions as F

    if policy not in POLICIES:
        raise InputError(f"Unknown duplicate policy {policy!r}. Supported: {', '.join(POLICIES)}.")
    from covidspark.data.ingest import has_info

    # read_images' ingest pass has hashed every image already; hash only otherwise.
    with_hash = (df if has_info(df) else image_info(df)).withColumn("phash64",
                                                                   F.col("info.phash64"))
    groups = duplicate_groups(with_hash, max_distance)
    report = {"policy": policy, "max_distance": max_distance, "groups": groups, "dropped": []}
    conflicts = [g for g in groups if g["label_conflict"]]
    if conflicts:
        logger.warning("%d duplicate group(s) carry different labels, e.g. %s",
                       len(conflicts), conflicts[0]["paths"])
    if policy == "keep":
        return df, report
    spark = df.sparkSession
    membership = [(path, g["group"]) for g in groups for path in g["paths"]]
    mapping = spark.createDataFrame(membership, "path string, dup_group string")
    out = df.join(F.broadcast(mapping), on="path", how="left")
    dropped = []
    if policy == "drop":
        rank = {s: i for i, s in enumerate(source_priority or [])}
        sources = {r.path: r.source for r in df.select("path", "source").filter(
            F.col("path").isin([p for p, _ in membership])).collect()} if membership else {}
        for g in groups:
            ordered = sorted(g["paths"], key=lambda p: (rank.get(sources.get(p), len(rank)), p))
            dropped += ordered[1:]
        if dropped:
            out = out.filter(~F.col("path").isin(dropped))
            logger.warning("Dropped %d later copies of duplicate images, e.g. %s",
                           len(dropped), dropped[0])
    report["dropped"] = dropped
    return out, report
