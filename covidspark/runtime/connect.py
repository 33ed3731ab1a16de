"""What differs between a classic SparkSession and a Spark Connect one.

Databricks' standard access mode and serverless compute, and any
``SparkSession.builder.remote(...)`` session, reach Spark through Spark Connect:
the client has no JVM, so ``spark.sparkContext`` (and with it ``addFile``,
accumulators, ``_jvm``, ``.rdd``) does not exist. covidspark's main paths go
through the helpers here, which use the classic API where it is there and what
Connect offers where it is not:

=====================  ============================  ================================
need                   classic                       Spark Connect
=====================  ============================  ================================
ship a file            ``SparkContext.addFile``      ``SparkSession.addArtifacts(file=True)``
count images           an accumulator (live)         an ``Observation`` (after the action)
job description        ``setJobDescription``         a job tag (``SparkSession.addTag``)
the master             ``SparkContext.master``       ``spark.master`` from the session conf
=====================  ============================  ================================

Executors find a shipped file with ``SparkFiles.get(name)`` either way.
"""
import logging
import os

from covidspark.runtime.cache import file_sha256


logger = logging.getLogger(__name__)


def is_connect(spark):
    """True when ``spark`` is a Spark Connect session (no JVM on this side)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def session_key(spark):
    """An identity of the session that outlives Python objects (files are shipped once per key)."""
    if is_connect(spark):
        return ("connect", spark.session_id)
    return ("classic", id(spark.sparkContext._jsc))


def connect_server(spark):
    """The Spark Connect server of ``spark``, ``sc://host:port`` without the URL's
    parameters (tokens); None for a classic session.

    For a Connect session covidspark did not build (a notebook's), the host
    its client names: ``sc://host``.
    """
    if not is_connect(spark):
        return None
    from covidspark.runtime.remote import watched_url

    return watched_url(spark) or f"sc://{spark.client.host}"


def set_job_description(spark, text):
    """Name the Spark jobs that follow (the Spark UI's description column).

    Connect has no job description; the text becomes a job tag instead
    (tags may not contain commas), replacing the previous covidspark tag.
    """
    if not is_connect(spark):
        spark.sparkContext.setJobDescription(text)
        return
    tag = "covidspark: " + "".join(c if c.isalnum() or c in " .:-_/" else "_" for c in text)
    for old in [t for t in spark.getTags() if t.startswith("covidspark: ")]:
        spark.removeTag(old)
    spark.addTag(tag[:200])


def master(spark):
    """The session's master URL (``local[2]``, ``spark://...``, ``yarn``), or None if hidden."""
    if not is_connect(spark):
        return spark.sparkContext.master
    try:
        return spark.conf.get("spark.master", None)
    except Exception:  # a server that hides the setting (serverless)  # noqa: BLE001
        return None


def default_parallelism(spark, hidden=2):
    """The cores Spark schedules on: ``defaultParallelism`` (``hidden`` where Connect hides it)."""
    if not is_connect(spark):
        return spark.sparkContext.defaultParallelism
    for key in ("spark.default.parallelism",):
        try:
            value = spark.conf.get(key, None)
        except Exception:  # noqa: BLE001 - not readable on every server
            value = None
        if value:
            return int(value)
    return hidden


# session key -> {name shipped: identity of the file shipped under it}
_SHIPPED = {}


def ship_file(spark, path):
    """Send a local file to every executor once per session; returns the name for ``SparkFiles.get``.

    Spark ships files by name, so a second, different file of an already shipped
    name (two fine-tuned models' ``backbone.weights.h5`` in one session) is
    shipped under a name prefixed by its content's sha256 instead; the file
    keeps its own suffix (Keras reads ``.weights.h5`` by name).

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
        Classic or Spark Connect.
    path : str
        A file on the driver (the client, with Connect).

    Returns
    -------
    str
        The name executors pass to ``SparkFiles.get``.
    """
    name = os.path.basename(path.rstrip("/"))
    shipped = _SHIPPED.setdefault(session_key(spark), {})
    identity = _identity(path)
    if shipped.get(name, identity) != identity:
        digest = file_sha256(path)
        name = f"{digest[:16]}-{name}"
        if name not in shipped:
            path = _content_named_copy(path, name)
    if name not in shipped:
        if is_connect(spark):
            spark.addArtifacts(path, file=True)
        else:
            spark.sparkContext.addFile(path)
        shipped[name] = identity
    return name


def _identity(path):
    """Which file, as it is now: its absolute path, size and modification time."""
    info = os.stat(path)
    return os.path.abspath(path), info.st_size, info.st_mtime_ns


_STAGING = []


def _content_named_copy(path, name):
    """A copy of ``path`` called ``name``, kept for this process's life.

    Classic Spark serves an added file from its path until the session ends,
    so the staging folder must outlive the call; a copy, not a link, because
    Keras rewrites a weights file in place.
    """
    import shutil
    import tempfile

    if not _STAGING:
        _STAGING.append(tempfile.mkdtemp(prefix="covidspark-shipped-"))
    staged = os.path.join(_STAGING[0], name)
    if not os.path.exists(staged):
        shutil.copyfile(path, staged)
    return staged


class ImageCounter:
    """Counts rows that pass a point of a DataFrame's plan, on the executors.

    Classic sessions use an accumulator: it grows while tasks finish (progress
    lines can poll it) and counts a recomputed partition again. Connect has no
    accumulators; there an ``Observation`` counts the rows of each action that
    runs the plan, known once that action has finished (0 before).
    """

    def __init__(self, spark):
        self._connect = is_connect(spark)
        self._accumulator = None if self._connect else spark.sparkContext.accumulator(0)
        self._observations = []

    @property
    def accumulator(self):
        """The accumulator the UDF adds to (None with Connect)."""
        return self._accumulator

    def observe(self, df):
        """``df`` with its rows counted (Connect); ``df`` unchanged (classic: the UDF counts)."""
        if not self._connect:
            return df
        from pyspark.sql import Observation
        from pyspark.sql import functions as F

        observation = Observation()
        self._observations.append(observation)
        return df.observe(observation, F.count(F.lit(1)).alias("images"))

    @property
    def value(self):
        """Images counted so far."""
        if not self._connect:
            return self._accumulator.value
        total = 0
        for observation in self._observations:
            try:
                total += int((observation.get or {}).get("images", 0))
            except Exception:  # noqa: BLE001 - no action has run this plan yet
                continue
        return total


class _CountsParam:
    """AccumulatorParam of ``{key: count}`` dicts, merged by adding counts."""

    @staticmethod
    def zero(value):
        return {}

    @staticmethod
    def addInPlace(a, b):
        for key, count in b.items():
            a[key] = a.get(key, 0) + count
        return a


class WhereItRan:
    """Which engine, precision and device ran each image, tallied on the executors.

    Classic sessions only (an accumulator of ``{"engine precision device @ host": images}``);
    Spark Connect has no accumulators, and :attr:`value` is then None.
    """

    def __init__(self, spark):
        from pyspark.accumulators import AccumulatorParam

        param = type("CountsParam", (_CountsParam, AccumulatorParam), {})()
        self.accumulator = None if is_connect(spark) else spark.sparkContext.accumulator({}, param)

    @property
    def value(self):
        """``{"torch bfloat16 cuda:0 (Spark gpu 0) @ host": images, ...}``, or None (Connect)."""
        return None if self.accumulator is None else dict(self.accumulator.value)
