"""pyarrow filesystems for the URIs covidspark opens itself: spelled as pyarrow parses
them, and built once per bucket (or namenode) in a process.

Building one is not free: pyarrow's S3 filesystem looks up the bucket's region
over the network when the URI does not name one. An executor's Python worker
given a path column opens every image through here, so a filesystem per file
was a region lookup per image; now it is one per bucket and worker. The
filesystems keep the credentials they were built with for the life of the
process, as Hadoop's own ``FileSystem`` cache does.
"""
from urllib.parse import quote

# What a path may hold as it is, in pyarrow's URI parser (RFC 3986 pchar, and "/").
_ARROW_SAFE = "/!$&'()*+,;=:@~"

# "scheme://authority" -> (filesystem, what comes before a URI's path in the
# filesystem's own paths, whether that path keeps its leading "/")
_BUILT = {}


def for_arrow(uri):
    """``uri`` as pyarrow's URI parser takes it: its path percent-encoded.

    covidspark's URIs are spelled as Spark's ``path`` column spells them, decoded
    (``s3://b/Viral Pneumonia/x.png``). pyarrow refuses a space and decodes
    ``%xx``, so a name's ``%`` is encoded as well, and comes back as it was.
    """
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return uri
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority}{slash}{quote(path, safe=_ARROW_SAFE)}"


def arrow_filesystem(uri):
    """``(pyarrow filesystem, path inside it)`` for ``uri`` (``s3a://`` read as ``s3://``).

    The first URI of a bucket is parsed by pyarrow; how its path maps into the
    filesystem's (``bucket/key`` on S3 and GCS, ``/key`` on HDFS) is learnt from
    that answer and reused, with the filesystem, for the bucket's other URIs.

    Raises
    ------
    Exception
        Whatever pyarrow raises for a URI it cannot open (no such filesystem,
        no library for it): the caller names the URI.
    """
    from pyarrow import fs

    if uri.lower().startswith("s3a://"):  # Hadoop's S3 connector; the same bucket for pyarrow
        uri = "s3://" + uri[len("s3a://"):]
    scheme, sep, rest = uri.partition("://")
    authority, _, path = rest.partition("/")
    path = "/" + path
    key = f"{scheme.lower()}://{authority}"
    # A folder's trailing "/" is pyarrow's to drop or keep, and a bucket's root says
    # nothing of the slash: such URIs are always parsed, and nothing is learnt from them.
    cacheable = bool(sep) and not path.endswith("/")
    known = _BUILT.get(key) if cacheable else None
    if known is not None:
        filesystem, prefix, keeps_slash = known
        return filesystem, prefix + (path if keeps_slash else path[1:])
    filesystem, inner = fs.FileSystem.from_uri(for_arrow(uri))
    if cacheable:
        if inner.endswith(path):
            learnt = (filesystem, inner[:len(inner) - len(path)], True)
        elif inner.endswith(path[1:]):
            learnt = (filesystem, inner[:len(inner) - len(path) + 1], False)
        else:
            learnt = None  # a mapping not seen before: ask pyarrow every time
        if learnt is not None:
            _BUILT.setdefault(key, learnt)  # atomic: decode threads may race here
    return filesystem, inner
