"""Reading chest X-rays into Spark DataFrames, with every bad file accounted for.

:func:`read_images` turns a class-folder tree or a manifest CSV into a DataFrame

    image_id (sha256 of the bytes), path, label, patient_id, source, content

and decodes every image once on the executors to check it and to record what
later steps need (:mod:`covidspark.data.ingest`). Nothing is dropped
silently: with ``strict=True`` (the default) any bad file or row fails the read
with one error that lists each one and why; with ``strict=False`` the read
returns an :class:`IngestResult` whose ``rejects`` table holds them, and
accepted + rejected always equals the files (or manifest rows) found.

Decoding itself lives in :mod:`covidspark.data.decoding`.
"""
import io
import logging
import os
import posixpath

from covidspark.data import layouts
from covidspark.data.decoding import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, METADATA_EXTENSIONS
from covidspark.data.known_files import identified
from covidspark.data.listing import (binary_files_under, hidden_images, list_binary_files,
                                     load_manifest_files, operating_system_file, unlisted_reason,
                                     with_empty_files)
# What a read returns or raises for bad rows; imported from here by callers.
from covidspark.data.rejects import (REJECT_SCHEMA, IngestError, IngestResult,  # noqa: F401
                                     format_rejects)
from covidspark.data.uris import normalise_uri, strip_file_scheme
from covidspark.errors import InputError, InputNotFoundError
from covidspark.runtime.filesystem import Files, has_scheme, join, on_this_machine

logger = logging.getLogger(__name__)

IMAGE_COLUMNS = ["image_id", "path", "label", "patient_id", "source", "content"]
# ----------------------------------------------------------------- paths


def read_bytes(path):
    """Read a whole file on an executor: local paths directly, other URIs through pyarrow."""
    return Files().read_bytes(path)


# ----------------------------------------------------------------- reading


def read_images(spark, path=None, manifest=None, label_map=None, source=None, pattern=None,
                path_filter=None, patients=None, strict=True, validate=True,
                max_pixels=DEFAULT_MAX_PIXELS, base_dir=None, known_labels=None, labelled=True,
                stored_ids=None, inspect_labels=None, known_files=None):
    """Read labelled chest X-rays into a DataFrame.

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
    path : str, optional
        Root of a class-folder tree, ``<path>/<label>/.../*.png|jpg|jpeg|dcm``: the
        first folder under the root is the label. Local, ``file:``, ``dbfs:``,
        ``/Volumes/...``, ``s3://`` and other Hadoop paths work.
    manifest : str or pandas.DataFrame, optional
        A CSV with columns ``path,label`` and optionally ``patient_id`` and
        ``source``; relative paths are relative to the manifest's folder (or to
        ``base_dir`` for a pandas DataFrame). Give exactly one of ``path`` and
        ``manifest``.
    label_map : dict, optional
        Folder name (or manifest label) to label, e.g. ``{"Covid-19": "covid",
        "No_findings": "normal", "Pneumonia": "pneumonia"}``. When given, a
        folder or label missing from it is a reject that names it.
    source : str, optional
        Value of the ``source`` column (default: the folder's or manifest's name).
    pattern : str, optional
        Glob on file names (Spark's ``pathGlobFilter``), e.g. ``"*.png"``.
    path_filter : str, optional
        Regular expression that a file's path relative to ``path`` must match,
        e.g. ``"^[^/]+/images/"`` to skip ``masks`` folders.
    patients : str, optional
        CSV with ``path`` (relative to its folder) and ``patient_id`` or
        ``patient_group``: fills the ``patient_id`` column.
    strict : bool
        True: raise :class:`IngestError` listing every bad file. False: return
        an :class:`IngestResult` with the rejects as a table.
    validate : bool
        Decode every image on the executors, once (:mod:`covidspark.data.ingest`):
        the check, size, mode, bit depth, perceptual hash and baseline thumbnail
        come from that one decode and land in an ``info`` column; the result is
        persisted (``DISK_ONLY``; free it when done: ``unpersist()`` the table,
        or :meth:`IngestResult.unpersist` a non-strict read's result), so later
        steps read neither the files nor decode them again for these facts.
        Without it only file-level problems are caught here; decoding errors
        surface when the images are used.
    max_pixels : int
        Decompression-bomb limit (default 60 megapixels).
    base_dir : str, optional
        Folder that relative paths of a pandas ``manifest`` are relative to.
    known_labels : sequence of str, optional
        Labels (after ``label_map``) the caller accepts, e.g.
        ``covidspark.ml.pipelines.ALL_LABELS``: any other label is a reject that
        names it. By default every folder name or manifest label is kept.
    labelled : bool
        False: ``path`` is a folder (or glob) of images in any layout, or one
        image file, for prediction; every image file under it is read and
        ``label`` is null.
    stored_ids : pyspark.sql.DataFrame, optional
        With ``validate``: ``image_id`` of images a feature store already holds
        features for (:meth:`covidspark.ml.feature_store.FeatureStore.stored_ids`).
        They decoded when they were stored, so they are read and hashed but not
        decoded again, and their ``content`` and ``info`` facts are null.
    inspect_labels : sequence of str, optional
        Read (and with ``validate`` decode-check) only images with these labels,
        a task's classes. The others are listed and counted, but their bytes are
        never read: null ``image_id``, ``content`` (and ``info`` facts), and a
        broken (or, on S3 or HDFS, missing) file among them is not reported (the
        task drops them unread). Under a glob ``path`` they are read and hashed,
        not decoded. Default: every image.
    known_files : covidspark.data.known_files.KnownFiles, optional
        Files whose id is known from an earlier read (a feature store's
        :meth:`~covidspark.ml.feature_store.FeatureStore.known_files`): listed
        with the same path, size and modification time, they are not read;
        they take that id, with null ``content`` (and ``info`` facts). Only
        for images a feature store holds (give their ids in ``stored_ids``
        too): such a row is not checked, and only the store has its features.
        The files the read had to read are in ``known_files.unknown``, for
        the caller to record.

    Returns
    -------
    pyspark.sql.DataFrame or IngestResult
        Columns ``image_id`` (hex sha256 of the file bytes), ``path``, ``label``,
        ``patient_id`` (null when unknown), ``source``, ``content`` (binary), and
        with ``validate`` the ingest pass's ``info`` struct (``format``, ``mode``,
        ``width``, ``height``, ``bits``, ``phash``, ``phash64``, ``thumbnail``).

    Raises
    ------
    IngestError
        With ``strict=True``, if any file or row is rejected: empty, truncated,
        not an image, unsupported format, too many pixels, unknown label, file
        missing, path listed twice.
    InputError
        Before any file is read, if no class folder is a label ``label_map`` maps
        or ``known_labels`` holds (a data set's root, whose class folders are one
        level down: the message says so).
    FileNotFoundError
        If the root or the manifest does not exist.
    ValueError
        If no images are found, or the manifest lacks a ``path`` or ``label`` column.
    """
    if (path is None) == (manifest is None):
        raise InputError("Give exactly one of path (a class-folder tree) or manifest (a CSV).")
    if path is not None:
        candidates, n_candidates, rejects = _class_folder_candidates(
            spark, path, label_map, source, pattern, path_filter, labelled, inspect_labels,
            known_files, known_labels)
        what = path
    else:
        candidates, n_candidates, rejects = _manifest_candidates(
            spark, manifest, label_map, source, base_dir, inspect_labels, known_files)
        what = manifest if isinstance(manifest, str) else f"manifest table ({base_dir})"
    if patients is not None:
        candidates = _attach_patients(spark, candidates, patients)
    images, persisted = candidates, None
    if validate:
        from covidspark.data.ingest import inspect_and_persist

        # Unknown labels are found by the ingest pass's own query of its failures.
        images, ingest_rejects = inspect_and_persist(candidates, max_pixels, stored_ids,
                                                     inspect_labels, known_labels, n_candidates)
        rejects = rejects + ingest_rejects
        persisted = images
    elif known_labels is not None:
        from covidspark.data.ingest import unknown_label, unknown_label_reason

        known = list(known_labels)
        unknown = candidates.filter(unknown_label(known)).select("path", "label").collect()
        rejects = rejects + [(r.path, unknown_label_reason(r.label, known), True)
                             for r in unknown]
    total = n_candidates + sum(1 for _, _, counted in rejects if not counted)
    reject_rows = [(p, reason) for p, reason, _ in rejects]
    if strict and reject_rows:
        if validate:
            images.unpersist()
        raise IngestError.of(what, reject_rows, total)
    rejected_paths = sorted({p for p, _, counted in rejects if counted})
    if rejected_paths:
        from pyspark.sql import functions as F

        images = images.filter(~F.col("path").isin(rejected_paths))
    if strict:
        return images
    if reject_rows:
        from covidspark.data.rejects import reject_line

        # Neutral words: a command prints its own list after this, an API caller has .rejects.
        logger.warning("read_images(%s): %d of %d files rejected, the first: %s",
                       what, len(reject_rows), total, reject_line(*reject_rows[0]))
    return IngestResult(images, spark.createDataFrame(reject_rows, REJECT_SCHEMA),
                        total, len(reject_rows), persisted)


def _class_folder_candidates(spark, root, label_map, source, pattern, path_filter, labelled=True,
                             read_labels=None, known=None, known_labels=None):
    """Rows to validate, their number, and the ``(path, reason, counted)`` rejects
    found from paths alone.

    A tree none of whose class folders is among ``known_labels`` (a data set's
    root whose class folders are one level down) is an :class:`InputError` that
    says so, before any file is read.

    ``counted`` says whether the rejected path is among the rows (and so counted
    in their number) or was set aside before. Images of class folders whose
    label is not in ``read_labels`` are rows without bytes (:func:`_with_unread`),
    and so are the files ``known`` knows (:func:`~covidspark.data.known_files.identified`).
    """
    from pyspark.sql import functions as F

    is_glob = any(c in root for c in "*?[{")
    files_layer = Files(spark)
    # As Spark means it: a path without a scheme is on the default filesystem.
    root_uri = files_layer.qualify(root)
    # One image file, for reads without labels (predict --images x.png): Spark lists it alone.
    listable = is_glob or files_layer.is_dir(root_uri)
    one_file = not listable and files_layer.exists(root_uri)
    if one_file and labelled:
        raise InputError(f"{root} is a file; images with labels are read from a folder of "
                         f"class folders, <folder>/<label>/<image>, or a manifest")
    if not listable and not one_file:
        raise InputNotFoundError(f"Image folder not found: {root}"
                                 + (f" ({root_uri})" if root_uri.rstrip("/") != root.rstrip("/")
                                    else ""))
    reader = spark.read.format("binaryFile").option("recursiveFileLookup", "true")
    if pattern:
        reader = reader.option("pathGlobFilter", pattern)
    files, listing, empty, facts = list_binary_files(spark, reader, root_uri)
    prefix = normalise_uri(root_uri).rstrip("/") + "/"
    # A glob's folders are Spark's to expand: only a plain folder is listed again.
    hidden = {} if is_glob or one_file else dict(hidden_images(files_layer, root_uri, listing,
                                                                   pattern))
    rejects, keep, labels = [], [], {}
    for p in sorted([*listing, *hidden]):
        relative = p[len(prefix):] if p.startswith(prefix) else p.rsplit("/", 1)[-1]
        if path_filter and not _matches(path_filter, relative):
            continue
        if p in hidden:
            rejects.append((p, hidden[p], False))
            continue
        extension = posixpath.splitext(p)[1].lower()
        if extension not in IMAGE_EXTENSIONS:
            if extension not in METADATA_EXTENSIONS and not operating_system_file(relative):
                rejects.append((p, f"unsupported file type '{extension or p.rsplit('/', 1)[-1]}' "
                                   f"(supported: {', '.join(IMAGE_EXTENSIONS)})", False))
            continue
        if not labelled:
            keep.append(p)
            continue
        if "/" not in relative:
            rejects.append((p, "not inside a class folder <root>/<label>/", False))
            continue
        folder = relative.split("/", 1)[0]
        if label_map is not None and folder not in label_map:
            rejects.append((p, f"folder '{folder}' not in label_map "
                               f"(known: {', '.join(map(repr, label_map))})", False))
            continue
        keep.append(p)
        labels[folder] = label_map[folder] if label_map is not None else folder
    if labelled and label_map is not None and not labels and listing:
        raise InputError(layouts.no_folder_mapped(root, listing, prefix, label_map))
    if labelled and known_labels is not None and labels and \
            not set(labels.values()) & set(known_labels):
        raise InputError(layouts.no_known_class_folder(root, listing, prefix, labels, keep,
                                                       list(known_labels)))
    if not keep and not rejects:
        raise InputError(
            f"No images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}"
            + ("; expected <root>/<label>/<image>." if labelled else ".")
        )
    source = source or posixpath.basename(strip_file_scheme(root).rstrip("/")) or "images"
    unread = []
    if read_labels is not None and labelled and not is_glob:
        def label_of(p):
            return labels[p[len(prefix):].split("/", 1)[0]]

        unread = [(p, label_of(p), None, source) for p in keep if label_of(p) not in read_labels]
        if unread:
            files = binary_files_under(spark, reader, sorted(
                prefix + f for f, label in labels.items() if label in read_labels), empty)
            keep = [p for p in keep if label_of(p) in read_labels]
    if not unread:
        files = with_empty_files(spark, files, empty)
    files = identified(spark, reader, files, facts, keep, known)
    kept = spark.createDataFrame([(p,) for p in keep], "path string")
    if labelled:
        label = F.create_map(*[F.lit(x) for pair in labels.items() for x in pair])[
            F.split(F.substring("path", len(prefix) + 1, 1 << 20), "/").getItem(0)]
    else:
        label = F.lit(None).cast("string")
    candidates = files.join(F.broadcast(kept), on="path", how="inner").select(
        "image_id",
        "path",
        label.alias("label"),
        F.lit(None).cast("string").alias("patient_id"),
        F.lit(source).alias("source"),
        "content",
    )
    return _with_unread(spark, candidates, unread), len(keep) + len(unread), rejects


def _matches(regex, text):
    import re

    return re.search(regex, text) is not None


def _read_small_csv(spark, path):
    """A metadata CSV as a pandas DataFrame of strings (driver-side: precise errors)."""
    import pandas as pd

    files = Files(spark)
    uri = files.qualify(path)
    if not files.exists(uri):
        raise InputNotFoundError(f"CSV not found: {path}"
                                 + (f" ({uri})" if uri.rstrip("/") != path.rstrip("/") else ""))
    return pd.read_csv(io.BytesIO(files.read_bytes(uri)), dtype=str, keep_default_na=False)


def _resolve(files, base, relative):
    """A manifest's path as a qualified URI: relative to the manifest's folder ``base``."""
    if relative.startswith("/") or has_scheme(relative):
        return normalise_uri(files.qualify(relative))
    return normalise_uri(files.qualify(join(base, relative)))


def _manifest_candidates(spark, manifest, label_map, source, base_dir=None, read_labels=None,
                         known=None):
    """As :func:`_class_folder_candidates`, for a manifest's rows."""
    from pyspark.sql import functions as F

    files_layer = Files(spark)
    if isinstance(manifest, str):
        table = _read_small_csv(spark, manifest)
        base = posixpath.dirname(files_layer.qualify(manifest))
    else:
        table = manifest.fillna("").astype(str)
        manifest = f"manifest table ({base_dir or '.'})"
        base = files_layer.qualify(base_dir or ".")
    missing_cols = {"path", "label"} - set(table.columns)
    if missing_cols:
        raise InputError(
            f"{manifest}: missing column(s) {sorted(missing_cols)}; "
            f"expected path,label[,patient_id,source], found {list(table.columns)}"
        )
    default_source = source or posixpath.basename(base.rstrip("/")) or "manifest"
    rejects, rows, first_line = [], [], {}
    for line, rec in enumerate(table.to_dict("records"), start=2):  # line 1 is the header
        rel, raw_label = rec["path"].strip(), rec["label"].strip()
        where = f"line {line}"
        if not rel or not raw_label:
            rejects.append((rel or f"{manifest}:{line}", f"{where}: empty path or label", False))
            continue
        full = _resolve(files_layer, base, rel)
        if label_map is not None and raw_label not in label_map:
            rejects.append((full, f"{where}: label {raw_label!r} not in label_map", False))
            continue
        if full in first_line:
            rejects.append((full, f"{where}: duplicate path (first listed on line "
                                  f"{first_line[full]})", False))
            continue
        opened = on_this_machine(full)  # a local or mounted file: checked here, cheaply
        if opened is not None and not os.path.isfile(opened):
            rejects.append((full, f"{where}: file not found", False))
            continue
        first_line[full] = line
        rows.append((full, label_map[raw_label] if label_map else raw_label,
                     rec.get("patient_id") or None, rec.get("source") or default_source))
    if not rows:
        if rejects:
            return spark.createDataFrame([], _EMPTY_SCHEMA), 0, rejects
        raise InputError(f"{manifest}: no rows")
    unread = [] if read_labels is None else [r for r in rows if r[1] not in read_labels]
    if unread:
        rows = [r for r in rows if r[1] in read_labels]
    if not rows:
        return _with_unread(spark, None, unread), len(unread), rejects
    files, listing, facts, rows, missing = load_manifest_files(spark, manifest, rows, first_line)
    rejects += missing
    # Every row's file was listed (a missing one fails the listing), so a row is lost
    # only if Spark hides its name or spells its path differently: say which.
    listed = set(listing)
    rejects += [(r[0], f"line {first_line[r[0]]}: {unlisted_reason(r[0], listed)}", False)
                for r in rows if r[0] not in listed]
    rows = [r for r in rows if r[0] in listed]
    if not rows:
        return _with_unread(spark, None, unread), len(unread), rejects
    meta = spark.createDataFrame(rows, "path string, label string, patient_id string, "
                                       "source string")
    files = identified(spark, spark.read.format("binaryFile"), files, facts,
                       [r[0] for r in rows], known)
    # The rows are broadcast, so the bytes stay in the scan's partitions: joined the
    # other way round (the manifest's rows kept), Spark shuffled every image's bytes.
    candidates = files.join(F.broadcast(meta), on="path", how="inner").select(
        "image_id", "path", "label", "patient_id", "source", "content")
    return _with_unread(spark, candidates, unread), len(rows) + len(unread), rejects


def _with_unread(spark, candidates, unread):
    """``candidates`` and a row per ``(path, label, patient_id, source)`` in ``unread``.

    An unread row (an image of a class the task drops) has no bytes and no
    ``image_id``: it is counted, never hashed or decoded.
    """
    if not unread:
        return candidates if candidates is not None else spark.createDataFrame([], _EMPTY_SCHEMA)
    # One partition: a cluster's default parallelism would make hundreds of tiny ones,
    # a task each in every later scan of the ingest table.
    rows = spark.createDataFrame([(None, *r, None) for r in unread], _EMPTY_SCHEMA).coalesce(1)
    return rows if candidates is None else candidates.unionByName(rows)


_EMPTY_SCHEMA = ("image_id string, path string, label string, patient_id string, "
                 "source string, content binary")


def _attach_patients(spark, candidates, patients):
    from pyspark.sql import functions as F

    table = _read_small_csv(spark, patients)
    column = next((c for c in ("patient_id", "patient_group") if c in table.columns), None)
    if "path" not in table.columns or column is None:
        raise InputError(f"{patients}: needs columns path and patient_id (or patient_group); "
                         f"found {list(table.columns)}")
    files = Files(spark)
    base = posixpath.dirname(files.qualify(patients))
    mapping = spark.createDataFrame(
        [(_resolve(files, base, p), g or None) for p, g in zip(table["path"], table[column])],
        "path string, _patient string")
    return (candidates.join(F.broadcast(mapping), on="path", how="left")
            .withColumn("patient_id", F.coalesce("_patient", "patient_id"))
            .select(*IMAGE_COLUMNS))
