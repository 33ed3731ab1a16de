"""How Spark spells the files it lists, loads and reports.

One file has three spellings in a read: the path a user or manifest gives,
``inputFiles()``'s percent-encoded URI, and the ``path`` column's decoded one;
and Spark treats every path it loads as a glob. These helpers turn one
spelling into another, so that a file is matched with itself, once.
"""
import re
from urllib.parse import unquote

from covidspark.runtime.filesystem import local_path


def strip_file_scheme(path):
    """``file:/a/b`` -> ``/a/b``; other URIs unchanged."""
    local = local_path(path)
    return local if local is not None else path


def normalise_uri(path):
    """A qualified path as the ``path`` column spells it: ``file:///a`` -> ``file:/a``."""
    return "file:/" + path[len("file:///"):] if path.startswith("file:///") else path


_URI_PARTS = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):(?://(?P<authority>[^/]*))?(?P<path>.*)", re.DOTALL)


def as_path_column(uri):
    """How Spark's ``path`` column spells a file that ``inputFiles()`` lists as ``uri``.

    ``inputFiles()`` gives ``Path.toUri().toString()``: percent-encoded, with an
    empty authority kept (``file:///data/COVID%2019/a.png``). The ``path`` column
    gives Hadoop's ``Path.toString()``: decoded, without an empty authority
    (``file:/data/COVID 19/a.png``). Compared unconverted, every file whose name
    needs encoding (a space, ``%``, ``#``) looked unread, and was added a second time.
    """
    parts = _URI_PARTS.fullmatch(uri)
    if parts is None:  # not a URI: nothing was encoded
        return uri
    authority = parts["authority"]
    return (f"{parts['scheme']}:" + (f"//{unquote(authority)}" if authority else "")
            + unquote(parts["path"]))


_GLOB_CHARACTERS = re.compile(r"([{}\[\]*?\\])")


def literal(uri):
    """``uri`` with Hadoop's glob characters escaped, so Spark loads that one file.

    Spark globs every path it is given: a manifest's ``scan[1].png`` meant
    ``scan1.png``, and ``a{b}.png`` failed the whole read with PATH_NOT_FOUND.
    """
    return _GLOB_CHARACTERS.sub(r"\\\1", uri)


_PATH_NOT_FOUND = re.compile(r"\[PATH_NOT_FOUND\] Path does not exist: (?P<path>.+?)\.?"
                             r"(?:\s+SQLSTATE: \w+)?\s*$")


def not_found_path(error):
    """The path a Spark ``PATH_NOT_FOUND`` error names, as it was given; None for other errors.

    Spark checks that every path it loads exists, and fails the whole load on
    the first that does not (on S3 or HDFS, where covidspark cannot check each
    manifest row cheaply beforehand).
    """
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    found = _PATH_NOT_FOUND.search(first)
    return found["path"] if found else None


def hidden_from_spark(uri):
    """Whether Spark's file sources skip this file by its name, as Spark decides it.

    They treat a name that starts with ``_`` or ``.`` as hidden (``_SUCCESS``,
    ``.DS_Store``, ``__MACOSX/``) and one ending ``._COPYING_`` as half-written,
    even when the file is named explicitly.
    """
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    return ((name.startswith("_") and "=" not in name) or name.startswith(".")
            or name.endswith("._COPYING_"))
