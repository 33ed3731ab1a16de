"""Files read before: their image ids from their size and modification time, unread.

An image's id is the sha256 of its bytes, so knowing it takes reading the file.
A feature store rerun over 10,000 stored images and 1,000 new ones read all
11,000 again (2.4 GB; on S3, 11,000 GETs) to find the 1,000 it lacked. A
listing already gives each file's size and modification time, for nothing:
:class:`KnownFiles` maps ``(path, length, modified_ms)`` to the id found when
the file was last read, and :func:`identified` reads only the files it does
not know. A file rewritten in place gets a new modification time and is read
again; one rewritten with the same size within the same millisecond is not
(the same rule ``rsync`` and ``make`` apply).
"""
from covidspark.data.listing import binary_files, with_empty_files
from covidspark.data.uris import literal


class KnownFiles:
    """Files whose image id is known without reading them.

    Parameters
    ----------
    entries : iterable of (str, int, int, str)
        ``(path, length, modified_ms, image_id)``: the path as Spark's ``path``
        column spells it, the size in bytes and the modification time in
        milliseconds as Spark's ``binaryFile`` source lists them.

    Attributes
    ----------
    unknown : dict
        ``path -> (length, modified_ms)`` of every listed file that
        :func:`identified` had to read: what a caller records once it has their
        ids (:meth:`covidspark.ml.feature_store.FeatureStore.remember_files`).
    not_read : set of str
        The paths :func:`identified` found here and did not read.
    """

    def __init__(self, entries=()):
        self.ids = {(path, length, modified): image_id
                    for path, length, modified, image_id in entries}
        self.unknown, self.not_read = {}, set()

    def id_of(self, path, fact):
        """The image id of ``path`` listed with ``fact`` ``(length, modified_ms)``, or None."""
        return self.ids.get((path, *fact))


def identified(spark, reader, files, facts, wanted, known=None):
    """``files`` as ``path, content, image_id``, reading only the files ``known`` lacks.

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
    reader : pyspark.sql.DataFrameReader
        The ``binaryFile`` reader that listed ``files`` (its options apply again).
    files : pyspark.sql.DataFrame
        ``path, content`` rows of every listed file (zero-byte ones included).
    facts : dict
        ``path -> (length, modified_ms)`` of the listed files that are not empty
        (:func:`~covidspark.data.listing.list_binary_files`).
    wanted : iterable of str
        The listed paths the caller keeps: only these are looked up and read. One
        without facts is a zero-byte file, kept with empty content for the check
        to reject.
    known : KnownFiles, optional
        Without it (or when it knows none of ``wanted``) every file is read and
        hashed, as ``files`` stands.

    Returns
    -------
    pyspark.sql.DataFrame
        A known file's row has its recorded ``image_id`` and null ``content``; the
        others have their bytes and their sha256.
    """
    from pyspark.sql import functions as F

    def hashed(rows):
        return rows.withColumn("image_id", F.sha2("content", 256))

    if known is None:
        return hashed(files)
    ids, to_read, new_empty = {}, [], []
    for path in sorted(set(wanted)):
        fact = facts.get(path)
        image_id = None if fact is None else known.id_of(path, fact)
        if fact is None:
            new_empty.append(path)
        elif image_id is None:
            known.unknown[path] = fact
            to_read.append(path)
        else:
            ids[path] = image_id
    known.not_read.update(ids)
    if not ids:
        return hashed(files)
    # Spark's scan reads every file it lists before any filter sees the path:
    # leaving the known files out means listing only the others.
    rows = (binary_files(spark, reader, [literal(p) for p in to_read])[0] if to_read
            else spark.createDataFrame([], "path string, content binary"))
    rows = with_empty_files(spark, rows, new_empty)
    unread = spark.createDataFrame(sorted(ids.items()), "path string, image_id string")
    # One partition: a cluster's default parallelism would make hundreds of tiny ones.
    unread = unread.coalesce(1).withColumn("content", F.lit(None).cast("binary"))
    return hashed(rows).unionByName(unread.select("path", "content", "image_id"))
