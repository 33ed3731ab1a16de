"""What Spark's file listing of an image folder shows, and what it hides.

Spark's file sources list a folder without two kinds of file: zero-byte files,
and names it treats as hidden (``_x.png``, ``.x.png``, anything under ``_old/``).
Both are chest X-rays a user meant to read. :func:`binary_files` puts the empty
ones back, so that validation rejects them by name; :func:`hidden_images` finds
the hidden ones with a plain listing, so that a read reports them instead of
losing them.
"""
import fnmatch
import posixpath
import re

from covidspark.data.decoding import IMAGE_EXTENSIONS
from covidspark.data.uris import as_path_column, hidden_from_spark, normalise_uri

# What Windows leaves in a folder of pictures: not images, and never the user's data.
WINDOWS_FILES = ("thumbs.db", "ehthumbs.db", "desktop.ini")
HIDDEN_FILE_REASON = ("Spark's file sources skip a file whose name starts with '_' or '.' "
                      "(hidden); rename it")


def binary_files(spark, reader, paths):
    """``binaryFile`` rows (path, content), keeping the files Spark's scan skips.

    Spark's file sources silently skip zero-byte files. They are added back with
    empty content, so that validation reports them instead of losing them. The
    listing (one status call per file of a manifest) runs in a few tasks per core.

    Returns
    -------
    (pyspark.sql.DataFrame, list of str)
        The rows, and every path among them (listed once, on the driver).
    """
    from pyspark.sql import functions as F

    from covidspark.runtime.connect import default_parallelism
    from covidspark.runtime.session import temporary_conf

    # Spark lists more than 32 paths with a job of up to 10,000 tasks by default:
    # a manifest of 1,124 files ran 1,124 listing tasks (9 s on 2 cores).
    with temporary_conf(spark, "spark.sql.sources.parallelPartitionDiscovery.parallelism",
                        4 * default_parallelism(spark)):
        files = reader.load(paths).select("path", "content")
        listed = {as_path_column(p) for p in files.inputFiles()}
    read = {r.path for r in files.select("path").collect()}  # column pruning: no bytes read
    skipped = sorted(listed - read)
    if not skipped:
        return files, sorted(read)
    empty = spark.createDataFrame([(p,) for p in skipped], "path string").withColumn(
        "content", F.lit(bytearray()).cast("binary"))
    return files.unionByName(empty), sorted(read | set(skipped))


def hidden_images(files, root_uri, listed, pattern=None):
    """Image files under a folder that Spark's listing of it left out for their names.

    Parameters
    ----------
    files : covidspark.runtime.filesystem.Files
    root_uri : str
        The folder, qualified.
    listed : iterable of str
        The paths Spark's listing returned.
    pattern : str, optional
        The read's ``pathGlobFilter``: a hidden file it would not match anyway is
        not reported.

    Returns
    -------
    list of (str, str)
        ``(path, reason)`` per hidden image, sorted. An operating system's own
        files (:func:`operating_system_file`) are left out quietly.
    """
    prefix = normalise_uri(root_uri).rstrip("/") + "/"
    listed = set(listed)
    found = []
    for relative in files.list_files(root_uri):
        parts = relative.split("/")
        if prefix + relative in listed or operating_system_file(relative):
            continue
        if posixpath.splitext(parts[-1])[1].lower() not in IMAGE_EXTENSIONS:
            continue
        if pattern and not _glob_matches(pattern, parts[-1]):
            continue
        hidden_folders = [part for part in parts[:-1] if hidden_from_spark(part)]
        if hidden_folders:
            found.append((prefix + relative,
                          f"inside folder '{hidden_folders[0]}', which Spark's file sources "
                          f"skip (its name starts with '_' or '.'); rename the folder"))
        elif hidden_from_spark(parts[-1]):
            found.append((prefix + relative, HIDDEN_FILE_REASON))
    return found


def operating_system_file(path):
    """Whether ``path`` is a file an operating system made beside the images.

    macOS's ``._x.png`` AppleDouble files and ``__MACOSX/`` copies, Windows'
    ``Thumbs.db`` and ``desktop.ini``: a read leaves them out quietly, as it
    does metadata. Spark hides the macOS ones already; reporting the Windows
    ones failed a strict read of every folder a Windows zip had made.
    """
    parts = path.split("/")
    return ("__MACOSX" in parts or parts[-1].startswith("._")
            or parts[-1].lower() in WINDOWS_FILES)


def _glob_matches(pattern, name):
    """Whether ``name`` matches a Hadoop glob (``*``, ``?``, ``[ab]``, ``{png,jpg}``)."""
    alternatives = re.fullmatch(r"(.*?)\{([^{}]*)\}(.*)", pattern)
    if alternatives is None:
        return fnmatch.fnmatchcase(name, pattern)
    head, options, tail = alternatives.groups()
    return any(_glob_matches(head + option + tail, name) for option in options.split(","))
