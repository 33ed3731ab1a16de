"""What Spark's file listing of an image folder shows, and what it hides.

Spark's file sources list a folder without two kinds of file: zero-byte files,
and names it treats as hidden (``_x.png``, ``.x.png``, anything under ``_old/``).
Both are chest X-rays a user meant to read. :func:`binary_files` puts the empty
ones back, so that validation rejects them by name; :func:`hidden_images` finds
the hidden ones with a plain listing, so that a read reports them instead of
losing them. :func:`binary_files_under` reads only some folders of a listed
tree, and :func:`load_manifest_files` loads a manifest's files one by one,
each missing one a reject.
"""
import fnmatch
import posixpath
import re

from covidspark.data.decoding import IMAGE_EXTENSIONS
from covidspark.data.uris import (as_path_column, hidden_from_spark, literal, normalise_uri,
                                  not_found_path)
from covidspark.errors import InputError

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
    (pyspark.sql.DataFrame, list of str, dict)
        The rows; every path among them (listed once, on the driver); and the
        :func:`list_binary_files` facts of the files that are not empty.
    """
    files, listing, empty, facts = list_binary_files(spark, reader, paths)
    return with_empty_files(spark, files, empty), listing, facts


def list_binary_files(spark, reader, paths):
    """:func:`binary_files` in two halves: ``(rows, listing, empty, facts)``.

    ``empty`` are the zero-byte files not yet among the rows
    (:func:`with_empty_files` adds them); ``facts`` maps every other listed
    path to ``(length, modified_ms)``, its size and modification time as the
    listing saw them, from the same query that lists the paths (no bytes read).
    """
    from pyspark.sql import functions as F

    from covidspark.runtime.connect import default_parallelism
    from covidspark.runtime.session import temporary_conf

    # Spark lists more than 32 paths with a job of up to 10,000 tasks by default:
    # a manifest of 1,124 files ran 1,124 listing tasks (9 s on 2 cores).
    with temporary_conf(spark, "spark.sql.sources.parallelPartitionDiscovery.parallelism",
                        4 * default_parallelism(spark)):
        scan = reader.load(paths)
        files = scan.select("path", "content")
        listed = {as_path_column(p) for p in files.inputFiles()}
    # Column pruning: the content is not selected, so no file's bytes are read.
    facts = {r.path: (r.length, r.modified_ms) for r in scan.select(
        "path", "length", F.expr("unix_millis(modificationTime)").alias("modified_ms")).collect()}
    return files, sorted(set(facts) | listed), sorted(listed - set(facts)), facts


def with_empty_files(spark, files, empty):
    """``files`` and a row with empty ``content`` for each path in ``empty``."""
    from pyspark.sql import functions as F

    if not empty:
        return files
    rows = spark.createDataFrame([(p,) for p in empty], "path string").withColumn(
        "content", F.lit(bytearray()).cast("binary"))
    return files.unionByName(rows)


def binary_files_under(spark, reader, folders, empty):
    """``binaryFile`` rows of the files under ``folders`` only, zero-byte ones included.

    A filter on the rows of a whole tree would come too late: Spark's scan reads
    every listed file's bytes before any filter sees its path. Loading only these
    folders lists them a second time, which costs far less than reading the rest.

    Parameters
    ----------
    folders : list of str
        Folders spelled as the ``path`` column spells them (``file:/data/covid``).
    empty : list of str
        The zero-byte files :func:`list_binary_files` found; those under ``folders``
        are added back.
    """
    if not folders:  # every class is one the task drops: nothing to read (Spark would warn)
        return spark.createDataFrame([], "path string, content binary")
    under = tuple(f.rstrip("/") + "/" for f in folders)
    files = reader.load([literal(f) for f in folders]).select("path", "content")
    return with_empty_files(spark, files, [p for p in empty if p.startswith(under)])


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


#: Spark names one missing path per failed load, and each retry lists every file again.
MAX_MISSING_RETRIES = 10


def unlisted_reason(path, listed):
    """Why a manifest row's existing file is not among the files Spark listed."""
    if hidden_from_spark(path):
        return HIDDEN_FILE_REASON
    return (f"not among the files Spark listed for this path (it spells them "
            f"{next(iter(listed), '-')!r}, ...)")


def load_manifest_files(spark, manifest, rows, first_line):
    """``binary_files`` for a manifest's rows, each row's file loaded literally.

    A file that is not there fails Spark's whole load. Local files were checked
    before; a missing remote one (S3, HDFS, DBFS) becomes the row's ``file not
    found`` reject and the load is tried again without it, up to
    :data:`MAX_MISSING_RETRIES` times; past that one error names them all.

    Returns
    -------
    (pyspark.sql.DataFrame, list of str, dict, list of tuple, list of tuple)
        As ``binary_files``, the rows whose files exist, and the
        ``(path, reason, counted=False)`` rejects of the rows whose files do not.
    """
    from pyspark.errors import AnalysisException

    by_spelling = {literal(r[0]): r for r in rows}
    missing, facts = [], {}
    while True:
        try:
            files, listing, facts = binary_files(spark, spark.read.format("binaryFile"),
                                                 list(by_spelling))
            break
        except AnalysisException as error:
            row = by_spelling.pop(not_found_path(error), None)
            if row is None:  # another failure, or a path we did not give: not the user's row
                raise
            missing.append(row)
            if len(missing) > MAX_MISSING_RETRIES:
                raise InputError(
                    f"{manifest}: more than {MAX_MISSING_RETRIES} rows name files that do "
                    f"not exist (Spark reports one a load), among them: "
                    + "; ".join(f"line {line}: {path}" for line, path in
                                sorted((first_line[r[0]], r[0]) for r in missing))) from None
            if not by_spelling:
                files, listing = None, []
                break
    return (files, listing, facts, list(by_spelling.values()),
            [(r[0], f"line {first_line[r[0]]}: file not found", False) for r in missing])
