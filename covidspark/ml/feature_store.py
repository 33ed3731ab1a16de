"""The feature store: featurize once, train many times.

Featurization costs ~100x more than fitting LR, RF or DT on the features, so
features are kept in Parquet, keyed by ``image_id`` (sha256 of the image bytes)
and the featurizer's *signature* (model, weights, preprocessing; not precision
or batch size, which do not change what is computed beyond rounding).

Layout, on any Hadoop file system (local, HDFS, S3, DBFS, Volumes)::

    <store>/<signature key>/signature.json
    <store>/<signature key>/run-<id>/part-*.parquet     written by Spark
    <store>/<signature key>/run-<id>/_COMMITTED         written last, by the driver
    <store>/<signature key>/files/run-<id>/...          the files read, committed alike

A run's rows are read only once its ``_COMMITTED`` marker exists, so a job
killed while writing leaves a directory that is ignored (and can be deleted);
the rerun computes exactly the images that no committed run holds.

``files`` records each file read (path, size, modification time, image id), so
a rerun knows the stored images' ids from its listing and reads only the files
that are new or changed (:mod:`covidspark.data.known_files`).
"""
import contextlib
import hashlib
import json
import logging
import uuid

from covidspark.errors import InputError
from covidspark.runtime.connect import default_parallelism
from covidspark.runtime.filesystem import Files

logger = logging.getLogger(__name__)

STORE_VERSION = 1
COMMITTED = "_COMMITTED"
# Images per committed chunk: what a killed job can lose, and one write each.
DEFAULT_CHUNK_SIZE = 2000
# Images per featurize task, at most: enough batches to amortise a task's start.
IMAGES_PER_TASK = 128
# The files a signature's runs read, for reruns to skip (FeatureStore.known_files).
FILES = "files"
FILES_SCHEMA = "path string, length long, modified_ms long, image_id string"


def signature_key(signature):
    """A short, stable key of a signature dict."""
    text = json.dumps(signature, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class FeatureStore:
    """Parquet features keyed by image and featurizer signature.

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
    path : str
        Root of the store (a folder; created on first write).

    Examples
    --------
    >>> store = FeatureStore(spark, "/Volumes/main/xray/features")     # doctest: +SKIP
    >>> features, stats = store.featurize(images, featurizer)          # doctest: +SKIP
    >>> stats                                                          # doctest: +SKIP
    {'images': 1124, 'computed': 0, 'reused': 1124, ...}
    """

    def __init__(self, spark, path):
        self.spark = spark
        self.files = Files(spark)
        # As Spark means it: a path without a scheme is on the default filesystem.
        self.path = self.files.qualify(path).rstrip("/")

    def _exists(self, path):
        return self.files.exists(path)

    def _write_text(self, path, text):
        self.files.write_text(path, text)

    def _list_dirs(self, path):
        return self.files.list_dirs(path)

    # ------------------------------------------------------------------ store

    def location(self, signature):
        """Folder holding the features of one signature."""
        return f"{self.path}/{signature_key(signature)}"

    def committed_runs(self, signature):
        """Run folders whose writes completed."""
        return self._runs(self.location(signature), committed=True)

    def incomplete_runs(self, signature):
        """Run folders without a commit marker (a job killed while writing)."""
        return self._runs(self.location(signature), committed=False)

    def _runs(self, folder, committed):
        """The ``run-*`` folders under ``folder`` with (or without) their commit marker."""
        return [d for d in self._list_dirs(folder) if d.rsplit("/", 1)[-1].startswith("run-")
                and self._exists(f"{d}/{COMMITTED}") == committed]

    def read(self, signature, features_col="features"):
        """All committed features of ``signature``: ``image_id, <features_col>``, one row per image."""
        runs = self.committed_runs(signature)
        if not runs:
            return None
        frame = self.spark.read.parquet(*runs)
        return frame.select("image_id", features_col).dropDuplicates(["image_id"])

    def stored_ids(self, featurizer):
        """``image_id`` of every image whose features ``featurizer`` has in the store, or None.

        For :func:`covidspark.data.reading.read_images` (``stored_ids``): these
        images need not be decoded again to be checked.
        """
        existing = self.read(featurizer.featureSignature(), featurizer.getOutputCol())
        return None if existing is None else existing.select("image_id")

    def known_files(self, featurizer):
        """The files whose features ``featurizer`` has stored, known without reading them.

        For :func:`covidspark.data.reading.read_images` (``known_files``, with
        :meth:`stored_ids`): a file listed with the path, size and modification
        time it had when it was read is not read again.

        Returns
        -------
        covidspark.data.known_files.KnownFiles
            Empty when the store has no files recorded for this featurizer.
        """
        from covidspark.data.known_files import KnownFiles

        signature = featurizer.featureSignature()
        runs = self._runs(f"{self.location(signature)}/{FILES}", committed=True)
        stored = self.stored_ids(featurizer)
        if not runs or stored is None:
            return KnownFiles()
        # Only ids whose features are committed: a file recorded by a run whose
        # features were deleted since is read (and featurized) again.
        recorded = self.spark.read.parquet(*runs).join(stored, on="image_id", how="left_semi")
        return KnownFiles((r.path, r.length, r.modified_ms, r.image_id)
                          for r in recorded.collect())

    def remember_files(self, featurizer, images, known):
        """Record the files ``read_images`` read for ``known``, once their features are stored.

        Parameters
        ----------
        featurizer : covidspark.ml.featurizer.DeepImageFeaturizer
        images : pyspark.sql.DataFrame
            The read's accepted rows (``path``, ``image_id``).
        known : covidspark.data.known_files.KnownFiles
            The one given to the read: its ``unknown`` files are recorded.

        Returns
        -------
        int
            Files recorded (one committed folder; none when the read knew them all).
        """
        from pyspark.sql import functions as F

        if not known.unknown:
            return 0
        ids = images.filter(F.col("image_id").isNotNull()).select("path", "image_id").collect()
        entries = [(r.path, *known.unknown[r.path], r.image_id) for r in ids
                   if r.path in known.unknown]
        if not entries:
            return 0
        signature = featurizer.featureSignature()
        run = f"{self.location(signature)}/{FILES}/run-{uuid.uuid4().hex[:12]}"
        (self.spark.createDataFrame(entries, FILES_SCHEMA).coalesce(1)
         .write.mode("error").parquet(run))
        self._write_text(f"{run}/{COMMITTED}", json.dumps({"files": len(entries)}))
        return len(entries)

    def featurize(self, images, featurizer, chunk_size=DEFAULT_CHUNK_SIZE, progress=None):
        """Features of every row of ``images``, computing only images the store lacks.

        Parameters
        ----------
        images : pyspark.sql.DataFrame
            With ``image_id`` and the featurizer's input column.
        featurizer : covidspark.ml.featurizer.DeepImageFeaturizer
        chunk_size : int
            Missing images are computed and committed in chunks of about this
            many (by a hash of ``image_id``): a job killed part-way keeps every
            chunk it committed, and its rerun computes only the rest.
        progress : callable, optional
            Called with the number of images to compute, once it is known, when
            there are any; returns a context manager held while they are computed,
            e.g. ``lambda n: Progress("featurize", n, featurizer.imagesFeaturized)``
            (:class:`covidspark.runtime.progress.Progress`). Images found in the
            store are not counted.

        Returns
        -------
        (pyspark.sql.DataFrame, dict)
            ``images`` (without the input column when it is ``content``) with the
            featurizer's output column; and ``{"images", "computed", "reused",
            "signature", "location", "ignored_incomplete_runs"}``.
        """
        out_col = featurizer.getOutputCol()
        signature = featurizer.featureSignature()
        location = self.location(signature)
        if not self._exists(f"{location}/signature.json"):
            self._write_text(f"{location}/signature.json",
                             json.dumps({"store_version": STORE_VERSION, **signature}, indent=2))
        incomplete = self.incomplete_runs(signature)
        if incomplete:
            logger.warning("Feature store: ignoring %d incomplete run(s) (killed while writing), "
                           "e.g. %s", len(incomplete), incomplete[0])
        existing = self.read(signature, out_col)
        flagged, missing, n_images, n_missing = self._missing_images(images, featurizer, existing)
        try:
            if n_missing:
                with progress(n_missing) if progress else contextlib.nullcontext():
                    self._compute(missing, featurizer, location, n_missing, chunk_size)
                existing = self.read(signature, out_col)
        finally:
            flagged.unpersist()
        result = images.drop("content") if featurizer.getInputCol() == "content" else images
        result = result.join(existing, on="image_id", how="inner")
        stats = {"images": n_images, "computed": n_missing, "reused": n_images - n_missing,
                 "signature": signature, "location": location,
                 "ignored_incomplete_runs": len(incomplete)}
        return result, stats

    def _missing_images(self, images, featurizer, existing):
        """The images the store lacks, worked out in one pass over ``images``.

        Returns ``(flagged, missing, n_images, n_missing)``. Every wanted image_id is
        flagged stored or not, with the input column kept only for the missing
        ones, and persisted on the executors' disks in that one pass: the counts
        and every chunk read it there instead of scanning the source (and
        redoing the anti-join) once per chunk.
        """
        from pyspark import StorageLevel
        from pyspark.sql import functions as F

        input_col = featurizer.getInputCol()
        wanted = images.select("image_id", input_col).dropDuplicates(["image_id"])
        if existing is None:
            flagged = wanted.withColumn("_stored", F.lit(False))
        else:
            stored = existing.select("image_id").withColumn("_stored", F.lit(True))
            flagged = wanted.join(stored, on="image_id", how="left").fillna(False, ["_stored"])
        flagged = flagged.select(
            "image_id", "_stored",
            F.when(~F.col("_stored"), F.col(input_col)).alias(input_col),
        ).persist(StorageLevel.DISK_ONLY)
        counts = flagged.agg(F.count(F.lit(1)).alias("images"),
                             F.sum(F.col("_stored").cast("long")).alias("stored")).first()
        n_images, n_stored = int(counts["images"]), int(counts["stored"] or 0)
        missing = flagged.filter(~F.col("_stored")).drop("_stored")
        return flagged, missing, n_images, n_images - n_stored

    def _compute(self, missing, featurizer, location, n_missing, chunk_size):
        """Featurize ``missing`` into one committed run folder per chunk."""
        from pyspark.sql import functions as F

        if chunk_size < 1:
            raise InputError(f"chunk_size must be >= 1. Received: {chunk_size}")
        n_chunks = -(-n_missing // chunk_size)
        # After the anti-join's shuffle, adaptive execution would coalesce a few MB of
        # encoded images into one partition, i.e. one task on one core: spread each
        # chunk over every core, with at least a few batches per task.
        per_chunk = -(-n_missing // n_chunks)
        partitions = max(default_parallelism(self.spark),
                         -(-per_chunk // IMAGES_PER_TASK))
        for chunk in range(n_chunks):
            part = missing if n_chunks == 1 else missing.filter(
                F.pmod(F.xxhash64("image_id"), F.lit(n_chunks)) == chunk)
            part = part.repartition(min(partitions, per_chunk))
            run = f"{location}/run-{uuid.uuid4().hex[:12]}"
            logger.info("Feature store: computing chunk %d/%d (~%d images) into %s",
                        chunk + 1, n_chunks, n_missing // n_chunks, run)
            (featurizer.transform(part).select("image_id", featurizer.getOutputCol())
             .write.mode("error").parquet(run))
            # Written last: until it exists, readers ignore the folder.
            self._write_text(f"{run}/{COMMITTED}", json.dumps({"chunk": chunk,
                                                               "chunks": n_chunks}))

