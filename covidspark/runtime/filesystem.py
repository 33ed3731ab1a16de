"""One filesystem layer for everything covidspark reads or writes itself.

Spark reads and writes DataFrames and models on any Hadoop filesystem; the
files covidspark writes itself (metrics.json, report.md, figures, predictions
as CSV, heat maps, feature-store markers) and the folders it checks go through
:class:`Files`, so they land where a Spark writer with the same path would put
them:

- A path without a scheme means what it means to Spark: it is qualified
  against the session's default filesystem (``fs.defaultFS``: ``file:`` on a
  laptop, ``hdfs://`` on EMR, ``dbfs:`` on Databricks), never forced to ``file:``.
- On Databricks, the paths of its FUSE mounts are given to Spark as Databricks
  documents them for Spark: ``/Volumes/...`` as ``dbfs:/Volumes/...``, ``/dbfs/x``
  as ``dbfs:/x``, ``/Workspace/...`` as ``file:/Workspace/...``. Never
  ``file:/Volumes``: a JVM cannot open volume files through the FUSE path on every
  access mode.
- ``file:`` URIs, and ``dbfs:`` URIs on a machine that mounts them, are read and
  written with plain file calls.
- Any other URI (``hdfs://``, ``s3://``, ``s3a://``, ``dbfs:/``, ``viewfs://``,
  ``abfss://``, ``gs://``) goes through Hadoop's own ``FileSystem`` in the
  driver's JVM in a classic session, with the cluster's credentials and
  settings; under Spark Connect (no JVM on the client) and in processes without
  a session (fine-tuning ranks) through ``pyarrow.fs``
  (S3, HDFS with libhdfs, GCS) or the ``/dbfs`` mount.

A location nothing here can write is refused by :meth:`Files.check_writable`
before any work, naming the URI and what is missing.
"""
import contextlib
import io
import os
import posixpath
import uuid

from covidspark.errors import InputError
from covidspark.runtime.arrow_fs import arrow_filesystem
from covidspark.runtime.connect import is_connect
from covidspark.runtime.mounts import databricks_spelling, fuse_path


def has_scheme(path):
    """True for ``scheme:/...`` URIs (``file:/a``, ``s3://b/k``, ``dbfs:/x``), not for paths."""
    head = path.split("/", 1)[0]
    return head.endswith(":") and len(head) > 2  # not a Windows drive letter


def scheme_of(uri):
    """``"s3"`` for ``s3://b/k``, ``"file"`` for ``file:/a``; ``""`` without a scheme."""
    return uri.split(":", 1)[0].lower() if has_scheme(uri) else ""


def join(base, *names):
    """``base/name/...`` for paths and URIs alike (never ``os.path``: ``s3://`` keeps its ``//``)."""
    out = base.rstrip("/") if base not in ("/", "") else base
    for name in names:
        out = posixpath.join(out, name) if out else name
    return out


def on_this_machine(uri):
    """The path plain file calls open for ``uri``: a local file or a FUSE-mounted one; else None."""
    local = local_path(uri)
    return local if local is not None else fuse_path(uri)


def local_path(uri):
    """The local path of a ``file:`` URI or of a plain path; None for any other URI."""
    if not has_scheme(uri):
        return uri
    if scheme_of(uri) != "file":
        return None
    rest = uri[len("file:"):]
    # file:///a and file:/a are the same file; file://host/a names a host.
    if rest.startswith("///"):
        return rest[2:]
    if rest.startswith("//"):
        return None
    return rest


class Files:
    """Read, write and list files at the URIs a user gives, as Spark would resolve them.

    Parameters
    ----------
    spark : pyspark.sql.SparkSession or None
        Classic or Spark Connect. ``None``: local files only (tools without Spark).

    Examples
    --------
    >>> files = Files(spark)                                         # doctest: +SKIP
    >>> out = files.qualify("runs/lr")          # file:/home/me/runs/lr, or hdfs://nn/user/me/runs/lr
    >>> files.write_text(join(out, "report.md"), "# report")         # doctest: +SKIP
    """

    def __init__(self, spark=None):
        self.spark = spark
        self._connect = spark is not None and is_connect(spark)
        self._hadoop_conf = None

    # ----------------------------------------------------------- resolving

    def default_fs(self):
        """The session's default filesystem URI (``file:///`` when it has none)."""
        if self.spark is None:
            return "file:///"
        if not self._connect:
            return self._jvm_conf().get("fs.defaultFS") or "file:///"
        for key in ("spark.hadoop.fs.defaultFS", "fs.defaultFS"):
            try:
                value = self.spark.conf.get(key, None)
            except Exception:  # noqa: BLE001 - a server that hides the key
                value = None
            if value:
                return value
        return "file:///"

    def qualify(self, path):
        """``path`` as a full URI: scheme-less paths against the default filesystem.

        ``file:`` URIs come back as ``file:/abs/path`` (the form Spark's file
        sources report), relative paths are resolved against the working
        directory on a local filesystem and the user's home on a remote one.
        """
        if not path:
            raise InputError("An empty path was given")
        if has_scheme(path):
            local = local_path(path)
            return "file:" + os.path.abspath(local) if local is not None else path
        spelled = databricks_spelling(path)
        if spelled is not None:
            return spelled
        if not self._connect and self.spark is not None:
            jvm = self.spark.sparkContext._jvm
            jpath = jvm.org.apache.hadoop.fs.Path(path)
            return jpath.getFileSystem(self._jvm_conf()).makeQualified(jpath).toString()
        default = self.default_fs().rstrip("/")
        if scheme_of(default) == "file":
            return "file:" + os.path.abspath(path)
        if not path.startswith("/"):
            raise InputError(f"{path!r}: give an absolute path or a full URI; the default "
                             f"filesystem is {default} and a Spark Connect client cannot "
                             f"tell which folder on it a relative path means")
        return default + path

    def is_local(self, uri):
        """True when plain file calls open ``uri`` (qualified): a local file, or a
        ``dbfs:`` one through Databricks' mount."""
        return on_this_machine(uri) is not None

    # ----------------------------------------------------------- backends

    def _jvm_conf(self):
        if self._hadoop_conf is None:
            self._hadoop_conf = self.spark.sparkContext._jsc.hadoopConfiguration()
        return self._hadoop_conf

    def _hadoop(self, uri):
        jvm = self.spark.sparkContext._jvm
        path = jvm.org.apache.hadoop.fs.Path(uri)
        try:
            return path.getFileSystem(self._jvm_conf()), path
        except Exception as error:  # py4j wraps Hadoop's "No FileSystem for scheme"
            raise InputError(f"{uri}: Hadoop cannot open this filesystem "
                             f"({_java_message(error)}); add its connector to the cluster "
                             f"or use another location") from None

    def _arrow(self, uri):
        scheme = scheme_of(uri)
        try:
            filesystem, inner = arrow_filesystem(uri)
        except Exception as error:  # noqa: BLE001 - pyarrow names what it lacks
            who = ("a Spark Connect client" if self._connect
                   else "a process without a Spark session (an executor's Python worker, "
                        "a training rank, a tool)")
            if scheme == "dbfs":  # pyarrow has no dbfs: filesystem; only the mounts open it
                raise InputError(
                    f"{uri}: {who} opens dbfs: files through Databricks' /Volumes and /dbfs "
                    f"mounts, and this machine has none. Run on Databricks (a notebook or "
                    f"job), or use a URI pyarrow opens (s3://, gs://)") from None
            raise InputError(
                f"{uri}: {who} reads and writes {scheme}:// files itself, through pyarrow, "
                f"and cannot here ({error}). Use a /Volumes path on Databricks, an s3:// or "
                f"hdfs:// URI, or a classic session") from None
        return filesystem, inner

    def arrow_location(self, uri):
        """``(pyarrow filesystem, path)`` of ``uri`` for readers that take one
        (``pyarrow.parquet``); the filesystem is None for a path on this machine."""
        uri = self.qualify(uri)
        local = on_this_machine(uri)
        return (None, local) if local is not None else self._arrow(uri)

    def _backend(self, uri):
        """``("local", path)``, ``("hadoop", (fs, path))`` or ``("arrow", (fs, path))``."""
        uri = self.qualify(uri)
        local = on_this_machine(uri)
        if local is not None:
            return "local", local
        if self.spark is not None and not self._connect:
            return "hadoop", self._hadoop(uri)
        return "arrow", self._arrow(uri)

    # ----------------------------------------------------------- operations

    def exists(self, uri):
        """True when a file or folder is at ``uri``."""
        kind, target = self._backend(uri)
        if kind == "local":
            return os.path.exists(target)
        if kind == "hadoop":
            fs, path = target
            return bool(fs.exists(path))
        from pyarrow import fs as pafs

        filesystem, inner = target
        return filesystem.get_file_info(inner).type != pafs.FileType.NotFound

    def is_dir(self, uri):
        """True when ``uri`` is a folder."""
        kind, target = self._backend(uri)
        if kind == "local":
            return os.path.isdir(target)
        if kind == "hadoop":
            fs, path = target
            return bool(fs.exists(path)) and bool(fs.getFileStatus(path).isDirectory())
        from pyarrow import fs as pafs

        filesystem, inner = target
        return filesystem.get_file_info(inner).type == pafs.FileType.Directory

    def makedirs(self, uri):
        """Create the folder ``uri`` and its parents (no error if it exists)."""
        kind, target = self._backend(uri)
        if kind == "local":
            os.makedirs(target, exist_ok=True)
        elif kind == "hadoop":
            fs, path = target
            fs.mkdirs(path)
        else:
            filesystem, inner = target
            filesystem.create_dir(inner, recursive=True)

    def list_dirs(self, uri):
        """Sub-folders of ``uri`` as qualified URIs, sorted (``[]`` if ``uri`` does not exist)."""
        kind, target = self._backend(uri)
        base = self.qualify(uri).rstrip("/")
        if kind == "local":
            if not os.path.isdir(target):
                return []
            return sorted(join(base, name) for name in os.listdir(target)
                          if os.path.isdir(os.path.join(target, name)))
        if kind == "hadoop":
            fs, path = target
            if not fs.exists(path):
                return []
            return sorted(join(base, s.getPath().getName()) for s in fs.listStatus(path)
                          if s.isDirectory())
        from pyarrow import fs as pafs

        filesystem, inner = target
        if filesystem.get_file_info(inner).type == pafs.FileType.NotFound:
            return []
        infos = filesystem.get_file_info(pafs.FileSelector(inner))
        return sorted(join(base, posixpath.basename(i.path)) for i in infos
                      if i.type == pafs.FileType.Directory)

    def read_bytes(self, uri):
        """The whole file at ``uri``."""
        kind, target = self._backend(uri)
        if kind == "local":
            with open(target, "rb") as f:
                return f.read()
        if kind == "hadoop":
            fs, path = target
            stream = fs.open(path)
            try:
                jvm = self.spark.sparkContext._jvm
                return bytes(jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
            finally:
                stream.close()
        filesystem, inner = target
        with filesystem.open_input_stream(inner) as stream:
            return stream.read()

    def list_files(self, uri):
        """Every file under the folder ``uri`` as a relative posix path, sorted.

        Hidden names (``_x``, ``.x``) are listed too: unlike Spark's file sources,
        this is a plain listing.
        """
        kind, target = self._backend(uri)
        if kind == "local":
            return sorted(_walk_local(target))
        if kind == "hadoop":
            fs, path = target
            prefix = fs.makeQualified(path).toString().rstrip("/") + "/"
            listing = fs.listFiles(path, True)
            names = []
            while listing.hasNext():
                names.append(listing.next().getPath().toString()[len(prefix):])
            return sorted(names)
        from pyarrow import fs as pafs

        filesystem, inner = target
        infos = filesystem.get_file_info(pafs.FileSelector(inner, recursive=True))
        return sorted(i.path[len(inner.rstrip("/")) + 1:] for i in infos
                      if i.type == pafs.FileType.File)

    def read_tree(self, uri):
        """Every file under the folder ``uri``: ``(relative posix path, bytes)``, sorted by path."""
        kind, target = self._backend(uri)
        base = self.qualify(uri).rstrip("/") + "/"
        for relative in self.list_files(uri):
            if kind == "local":  # the OS's own name: no URI spelling to get wrong
                with open(os.path.join(target, relative), "rb") as f:
                    yield relative, f.read()
            else:
                yield relative, self.read_bytes(base + relative)

    def read_text(self, uri):
        """The file at ``uri`` as UTF-8 text."""
        return self.read_bytes(uri).decode("utf-8")

    def write_bytes(self, uri, data):
        """Write ``data`` to ``uri`` (replacing it), creating parent folders.

        Local files are written to a temporary name and renamed, so a reader
        never sees half a file.
        """
        kind, target = self._backend(uri)
        if kind == "local":
            parent = os.path.dirname(target)
            if parent:
                os.makedirs(parent, exist_ok=True)
            tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, target)
        elif kind == "hadoop":
            fs, path = target
            stream = fs.create(path, True)
            try:
                # py4j sends a bytearray as byte[] in one call.
                stream.write(bytearray(data))
            finally:
                stream.close()
        else:
            filesystem, inner = target
            with filesystem.open_output_stream(inner) as stream:
                stream.write(data)
        return uri

    def write_text(self, uri, text):
        """Write ``text`` as UTF-8 to ``uri``."""
        return self.write_bytes(uri, text.encode("utf-8"))

    @contextlib.contextmanager
    def open_write(self, uri):
        """A binary stream whose contents are written to ``uri`` when the block ends."""
        buffer = io.BytesIO()
        yield buffer
        self.write_bytes(uri, buffer.getvalue())

    def delete(self, uri):
        """Remove the file ``uri`` if it exists."""
        kind, target = self._backend(uri)
        if kind == "local":
            if os.path.isfile(target):
                os.remove(target)
        elif kind == "hadoop":
            fs, path = target
            fs.delete(path, False)
        else:
            filesystem, inner = target
            with contextlib.suppress(FileNotFoundError):  # pyarrow raises for a missing file
                filesystem.delete_file(inner)

    def check_writable(self, uri, what="--out"):
        """Refuse, before any work, a location covidspark could not write.

        Creates the folder and writes and removes a probe file in it.

        Returns
        -------
        str
            ``uri`` qualified.

        Raises
        ------
        InputError
            Naming ``what``, the URI and the reason.
        """
        qualified = self.qualify(uri)
        probe = join(qualified, f"._covidspark-write-probe-{uuid.uuid4().hex[:8]}")
        try:
            self.makedirs(qualified)
            self.write_bytes(probe, b"")
            self.delete(probe)
        except InputError as error:
            said = str(error)  # says the URI already where it begins with it
            raise InputError(f"{what} {said}" if said.startswith((uri, qualified))
                             else f"{what} {uri}: {said}") from None
        except Exception as error:  # noqa: BLE001 - permission, missing bucket, credentials
            raise InputError(f"{what} {uri} ({qualified}) cannot be written: "
                             f"{_java_message(error)}") from None
        return qualified


def _walk_local(folder):
    """Relative posix paths of the files under ``folder``, through linked folders.

    Hadoop's local filesystem, and so Spark's listing, follows a linked folder
    (``data/covid -> /disk2/covid``). A link to a folder above it in the walk
    is not followed, so a looping tree ends.
    """
    above = {}  # each folder still to walk -> the real folders on its way down
    for root, dirs, names in os.walk(folder, followlinks=True):
        chain = above.pop(root, frozenset()) | {os.path.realpath(root)}
        dirs[:] = [d for d in dirs if os.path.realpath(os.path.join(root, d)) not in chain]
        above.update((os.path.join(root, d), chain) for d in dirs)
        for name in names:
            yield os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")


def _java_message(error):
    """The first line of a (py4j-wrapped Java) exception's message."""
    text = str(getattr(error, "java_exception", None) or error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__
