"""The ingest pass: every fact covidspark needs about an image, from one decode.

A train job used to decode each image four times before the network saw it:
the validity check, the perceptual hash for duplicates, and the 32x32 baseline
thumbnail each ran their own pass, and each pass re-read the bytes from
storage. :func:`inspect_images` decodes an image once, on the executors, and
returns all of it in one ``info`` struct:

- ``error``: why the image is rejected (null when it decodes),
- ``format``, ``mode``, ``width``, ``height``, ``bits``,
- ``phash`` / ``phash64``: the perceptual hash of :mod:`covidspark.data.hashing`,
- ``thumbnail``: the baseline's 32x32 grayscale pixels in [0, 1]
  (:data:`covidspark.ml.baseline.BASELINE_SIZE`), row-major.

:func:`covidspark.data.reading.read_images` runs it and persists the result,
so duplicates, splits, the baseline and the network read the bytes and the
facts from there; the network's own decode is the only other one.
"""
import contextlib
import operator
from functools import reduce

import numpy as np

from covidspark.data.decoding import (DEFAULT_MAX_PIXELS, ImageDecodeError, bit_depth,
                                      open_image, resize_gray)
from covidspark.data.rejects import reason_only

THUMBNAIL_SIZE = 32
INFO_FIELDS = ("error", "format", "mode", "width", "height", "bits", "phash", "phash64",
               "thumbnail")
INFO_SCHEMA = ("error string, format string, mode string, width int, height int, bits int, "
               "phash string, phash64 bigint, thumbnail array<float>")


def inspect_image(data, name="<bytes>", max_pixels=DEFAULT_MAX_PIXELS):
    """The ingest facts of one encoded image, as a tuple in :data:`INFO_FIELDS` order.

    A file that does not decode gives its reason in ``error`` and nulls elsewhere;
    anything else raised is a bug, and propagates.
    """
    from covidspark.data.hashing import hex_to_signed64, phash

    try:
        image = open_image(data, name, max_pixels)
    except ImageDecodeError as exc:
        # The reason alone: every table and report of rejects puts the path beside it.
        return (reason_only(name, str(exc)),) + (None,) * (len(INFO_FIELDS) - 1)
    digest = phash(image)
    # Area averaging from the full decode (PixelFeaturizer alone decodes JPEGs in
    # draft mode instead: within 0.02 of this on average, see tests/ml/test_baseline.py).
    small = resize_gray(image, THUMBNAIL_SIZE).ravel() / np.float32(255.0)
    return (None, image.info.get("format"), image.mode, image.size[0], image.size[1],
            bit_depth(image), digest, hex_to_signed64(digest), small.astype(np.float32))


def inspect_images(df, content_col="content", path_col="path", max_pixels=DEFAULT_MAX_PIXELS,
                   info_col="info", counter=None):
    """Add the ``info`` struct of :func:`inspect_image` to ``df``, one decode per image.

    Parameters
    ----------
    df : pyspark.sql.DataFrame
        With the encoded bytes in ``content_col`` and a name for messages in ``path_col``.
        A null ``content_col`` is not decoded: its ``info`` is all nulls.
    max_pixels : int
        Decompression-bomb limit.
    info_col : str
        Name of the added struct column.
    counter : pyspark.Accumulator, optional
        Counts the rows inspected, as tasks run (for a progress line).

    Returns
    -------
    pyspark.sql.DataFrame
    """
    import pandas as pd
    from pyspark.sql import functions as F

    not_inspected = (None,) * len(INFO_FIELDS)

    @F.pandas_udf(INFO_SCHEMA)
    def inspect(contents: pd.Series, paths: pd.Series) -> pd.DataFrame:
        rows = [not_inspected if data is None else inspect_image(data, name, max_pixels)
                for data, name in zip(contents, paths)]
        if counter is not None:
            counter.add(len(rows))
        # Object columns: with a None among them pandas would infer float64 for the
        # integers, and a 64-bit hash through a double keeps only its top 53 bits
        # (ozturk's binary task paired two images 4 bits apart, at "distance 2").
        return pd.DataFrame(rows, columns=list(INFO_FIELDS), dtype=object)

    return df.withColumn(info_col, inspect(F.col(content_col), F.col(path_col)))


def has_info(df, info_col="info"):
    """Whether ``df`` carries the ingest pass's struct (``read_images`` with validation)."""
    return info_col in df.columns


def unknown_label(known_labels, label_col="label"):
    """The column that is true where a row's label is not among ``known_labels``.

    A null label is unknown too: ``isin`` alone gives null there, which a filter
    drops without a word.
    """
    from pyspark.sql import functions as F

    return ~F.coalesce(F.col(label_col).isin(list(known_labels)), F.lit(False))


def unknown_label_reason(label, known_labels):
    """Why a row whose label is not among ``known_labels`` is rejected, and the likely map.

    A folder spelt another way (``COVID``, ``Normal``, ``COVID-19``) holds the
    known label's name: the reason gives the ``--label-map`` that reads it, and
    for the Ozturk set's folders the named map. Nothing is mapped unasked.
    """
    import json

    from covidspark.data.datasets import OZTURK_LABEL_MAP

    if label is None:
        return f"no label (one of {', '.join(known_labels)} is needed)"
    reason = f"label {label!r} is not one of {', '.join(known_labels)}"
    if OZTURK_LABEL_MAP.get(label) in known_labels:
        return f"{reason} (the Ozturk set's folders: --label-map ozturk)"
    likely = [known for known in known_labels if known.lower() in str(label).lower()]
    if len(likely) == 1:
        return (f"{reason} (map it with label_map, e.g. --label-map "
                f"'{json.dumps({label: likely[0]})}')")
    return f"{reason} (map it with label_map)"


def inspect_and_persist(candidates, max_pixels=DEFAULT_MAX_PIXELS, stored_ids=None,
                        inspect_labels=None, known_labels=None, total=None):
    """:func:`inspect_images` over ``candidates``, persisted for the job.

    Parameters
    ----------
    candidates : pyspark.sql.DataFrame
        ``image_id``, ``path`` and ``content`` at least.
    max_pixels : int
    stored_ids : pyspark.sql.DataFrame, optional
        ``image_id`` of images whose features a feature store already holds. They
        decoded when they were stored (same bytes, same id), so they are not
        decoded again, and their bytes are not kept: ``content`` and every fact in
        ``info`` are null for them. A rerun over a large set then decodes and
        holds only its new images.
    inspect_labels : sequence of str, optional
        Only images with these labels are decoded and keep their bytes; the
        others (a class the task drops) are listed and hashed, with null
        ``content`` and ``info`` facts, for the caller to count and exclude.
    known_labels : sequence of str, optional
        Labels the caller accepts: a row with any other label (or none) is not
        decoded and is among the rejects, found by the same query that collects
        the decode failures (one scan of the candidates, not two).
    total : int, optional
        Rows in ``candidates``: a progress line every 10 s says how many are
        checked (classic sessions; Connect has no accumulators to poll).

    Returns
    -------
    (pyspark.sql.DataFrame, list)
        The persisted rows (with ``info``) and ``[(path, reason, True)]`` for the
        rows with an unknown label, then the images that do not decode. The
        rejected rows stay in the persisted table, for the caller to filter out.
        Later steps read bytes, ids, hashes and thumbnails from the persisted
        rows, not from storage.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from covidspark.runtime import lineage
    from covidspark.runtime.connect import ImageCounter
    from covidspark.runtime.progress import Progress

    columns, skip = candidates.columns, []
    if stored_ids is not None:
        # A broadcast join keeps the scan's partitions: the bytes are not shuffled.
        stored = stored_ids.select("image_id").distinct().withColumn("_stored", F.lit(True))
        candidates = candidates.join(F.broadcast(stored), on="image_id", how="left")
        skip.append(F.col("_stored").isNotNull())
    if inspect_labels is not None:
        skip.append(~F.col("label").isin(list(inspect_labels)))
    unknown = F.lit(False)
    if known_labels is not None:
        known_labels = list(known_labels)  # used twice: the column and the messages
        unknown = unknown_label(known_labels)
        skip.append(unknown)
    if skip:
        # Null content is not decoded (inspect_images); a null condition keeps the bytes.
        candidates = candidates.withColumn(
            "content", F.when(reduce(operator.or_, skip), F.lit(None))
            .otherwise(F.col("content"))).select(*columns)
    # On disk, not in memory: in local mode the executors share the driver's heap
    # (1 GB unless --driver-memory says more), which 10,000 images' bytes outgrow.
    counter = ImageCounter(candidates.sparkSession).accumulator
    inspected = lineage.persist(inspect_images(candidates, max_pixels=max_pixels,
                                               counter=counter), StorageLevel.DISK_ONLY)
    # This action fills the cache: the filter runs above the persisted relation.
    # Files, not images: a bad file is counted when it has been checked.
    with (Progress("read and check", total, lambda: counter.value, unit="files")
          if counter is not None else contextlib.nullcontext()):
        failed = (inspected.filter(F.col("info.error").isNotNull() | unknown)
                  .select("path", "label", unknown.alias("unknown"),
                          F.col("info.error").alias("error")).collect())
    return inspected, ([(r.path, unknown_label_reason(r.label, known_labels), True)
                        for r in failed if r.unknown]
                       + [(r.path, r.error, True) for r in failed if not r.unknown])
