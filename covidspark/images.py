"""Reading chest X-rays into Spark DataFrames, and decoding them on the executors.

:func:`read_images` turns a class-folder tree or a manifest CSV into a DataFrame

    image_id (sha256 of the bytes), path, label, patient_id, source, content

and checks on the executors that every file decodes; an unreadable file raises
an error that names it. :func:`decode_image` is the one decoder used everywhere
(featurizer, tests, benchmarks): Pillow, EXIF orientation applied, 16-bit scaled
to the full 8-bit range (never truncated to the low byte as Spark's own image
source does), converted to grayscale luminance, resized to the model's input and
replicated to three channels. X-rays carry no colour; colour in public sets is
figure annotation, so it is not kept.
"""
import io
import logging
import os
import posixpath

import numpy as np

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_METADATA_EXTENSIONS = (".csv", ".json", ".txt", ".md")

# sparkdl's scaleHint names are Java AWT hints. Java maps SCALE_DEFAULT, SCALE_FAST
# and SCALE_REPLICATE to pixel replication and SCALE_SMOOTH and SCALE_AREA_AVERAGING
# to area averaging; Pillow's NEAREST and BOX are the same filters.
SCALE_HINTS = {
    "SCALE_AREA_AVERAGING": "BOX",
    "SCALE_SMOOTH": "BOX",
    "SCALE_DEFAULT": "NEAREST",
    "SCALE_FAST": "NEAREST",
    "SCALE_REPLICATE": "NEAREST",
}

# Decompression-bomb guard: more pixels than this is refused before decoding.
DEFAULT_MAX_PIXELS = 60_000_000


class ImageDecodeError(ValueError):
    """A file or value that is not a decodable image; the message names it."""


def _resample(scale_hint):
    from PIL import Image

    try:
        return getattr(Image.Resampling, SCALE_HINTS[scale_hint])
    except KeyError:
        raise ValueError(
            f"Unsupported scaleHint {scale_hint!r}. Supported: {', '.join(SCALE_HINTS)}."
        ) from None


def open_image(data, name="<bytes>", max_pixels=DEFAULT_MAX_PIXELS):
    """Open encoded image bytes with Pillow, fully decoded and EXIF-rotated.

    Parameters
    ----------
    data : bytes
        The encoded file (PNG or JPEG).
    name : str
        How to name the image in error messages (usually its path).
    max_pixels : int
        Refuse images with more pixels than this (decompression bombs).

    Returns
    -------
    PIL.Image.Image

    Raises
    ------
    ImageDecodeError
        If the bytes are empty, not an image, truncated or too large.
    """
    from PIL import Image, ImageOps

    if data is None or len(data) == 0:
        raise ImageDecodeError(f"{name}: empty file (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            raise ImageDecodeError(
                f"{name}: {width}x{height} = {width * height} pixels exceeds the limit of "
                f"{max_pixels} (possible decompression bomb)"
            )
        image.load()
        return ImageOps.exif_transpose(image)
    except ImageDecodeError:
        raise
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ...
        raise ImageDecodeError(f"{name}: not a decodable image ({type(exc).__name__}: {exc})") from exc


# Pillow modes with 8 bits per channel; anything else (I;16*, I, F) is high bit depth.
_EIGHT_BIT_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}


def _gray8(image):
    """8-bit luminance (ITU-R 601-2, Pillow's ``L``); alpha ignored, palette and CMYK via RGB."""
    if image.mode == "L":
        return image
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image.convert("L")


def to_grayscale_float(image):
    """Grayscale luminance of a Pillow image as float32 in [0, 255].

    16-bit images (``I;16*`` and ``I`` modes) are scaled by 255/65535, so that the
    full range is kept.
    """
    if image.mode in _EIGHT_BIT_MODES:
        return np.asarray(_gray8(image), dtype=np.float32)
    if image.mode == "F":
        return np.asarray(image, dtype=np.float32)
    # I;16, I;16B, I;16L and I (32-bit integer, how Pillow opens some 16-bit PNGs).
    return np.asarray(image, dtype=np.float32) * np.float32(255.0 / 65535.0)


def resize_gray(image, size, scale_hint="SCALE_AREA_AVERAGING"):
    """Resize a Pillow image's grayscale to ``size`` x ``size`` (float32, [0, 255])."""
    from PIL import Image

    resample = _resample(scale_hint)
    if image.mode in _EIGHT_BIT_MODES:
        return np.asarray(_gray8(image).resize((size, size), resample), dtype=np.float32)
    # High bit depth: resize in floating point so nothing is rounded to 8 bits first.
    gray = Image.fromarray(to_grayscale_float(image))  # float32 -> mode "F"
    return np.asarray(gray.resize((size, size), resample), dtype=np.float32)


def decode_image(data, size, scale_hint="SCALE_AREA_AVERAGING", name="<bytes>",
                 max_pixels=DEFAULT_MAX_PIXELS):
    """Decode encoded bytes into a model input: ``(size, size, 3)`` float32 in [0, 255].

    Parameters
    ----------
    data : bytes
        PNG or JPEG bytes (8 or 16 bit; grayscale, RGB, RGBA, palette).
    size : int
        Output side in pixels (the model's input size).
    scale_hint : str
        One of :data:`SCALE_HINTS` (sparkdl's names).
    name : str
        Used in error messages.
    max_pixels : int
        Decompression-bomb limit.

    Returns
    -------
    numpy.ndarray
        The grayscale image replicated to three (R = G = B) channels, before the
        model's own preprocessing.
    """
    gray = resize_gray(open_image(data, name, max_pixels), size, scale_hint)
    return np.repeat(gray[:, :, None], 3, axis=2)


# OpenCV type codes used by Spark's image data source (spark.read.format("image")).
_SPARK_IMAGE_MODES = {0: 1, 16: 3, 24: 4}


def decode_image_struct(height, width, n_channels, mode, data, size,
                        scale_hint="SCALE_AREA_AVERAGING", name="<image struct>"):
    """Decode one row of Spark's image struct (BGR(A) bytes, 8 bit) like :func:`decode_image`."""
    from PIL import Image

    if _SPARK_IMAGE_MODES.get(mode) != n_channels or data is None:
        raise ImageDecodeError(
            f"{name}: unsupported Spark image struct (mode={mode}, nChannels={n_channels}); "
            f"supported OpenCV types: CV_8UC1, CV_8UC3, CV_8UC4"
        )
    pixels = np.frombuffer(data, dtype=np.uint8)
    if pixels.size != height * width * n_channels:
        raise ImageDecodeError(
            f"{name}: image struct holds {pixels.size} bytes, expected "
            f"{height}x{width}x{n_channels}"
        )
    pixels = pixels.reshape(height, width, n_channels)
    if n_channels == 1:
        image = Image.fromarray(np.ascontiguousarray(pixels[:, :, 0]))
    else:
        image = Image.fromarray(np.ascontiguousarray(pixels[:, :, 2::-1]))
    gray = resize_gray(image, size, scale_hint)
    return np.repeat(gray[:, :, None], 3, axis=2)


# --------------------------------------------------------------------------- reading


def _qualify(path):
    """A path in the form Spark's file sources report it (``file:/abs`` for local files)."""
    if "://" in path or path.startswith(("file:", "dbfs:")):
        return path
    return "file:" + os.path.abspath(path)


def _is_local(path):
    return "://" not in path and not path.startswith("dbfs:")


def _strip_file_scheme(path):
    return path[len("file:"):] if path.startswith("file:") else path


def read_bytes(path):
    """Read a whole file: local paths directly, other URIs through ``pyarrow.fs``."""
    if _is_local(path):
        with open(_strip_file_scheme(path), "rb") as f:
            return f.read()
    from pyarrow import fs

    filesystem, inner = fs.FileSystem.from_uri(path)
    with filesystem.open_input_stream(inner) as stream:
        return stream.read()


def read_images(spark, path=None, manifest=None, label_map=None, source=None,
                validate=True, max_pixels=DEFAULT_MAX_PIXELS):
    """Read labelled chest X-rays into a DataFrame.

    Parameters
    ----------
    spark : pyspark.sql.SparkSession
    path : str, optional
        Root of a class-folder tree, ``<path>/<label>/*.png|jpg|jpeg``. Local,
        ``file:``, ``dbfs:``, ``s3://`` and other Hadoop paths work.
    manifest : str, optional
        A CSV file with columns ``path,label`` and optionally ``patient_id`` and
        ``source``; relative paths are relative to the manifest's folder.
        Give exactly one of ``path`` and ``manifest``.
    label_map : dict, optional
        Folder name (or manifest label) to label, e.g. ``{"Covid-19": "covid",
        "No_findings": "normal", "Pneumonia": "pneumonia"}``. When given, every
        folder must be in it; an unmapped one is an error that names it.
    source : str, optional
        Value of the ``source`` column (default: the folder's or manifest's name).
    validate : bool
        Decode every image on the executors first and raise, naming each file
        that fails, if any does (one extra pass over the data).
    max_pixels : int
        Decompression-bomb limit used by validation.

    Returns
    -------
    pyspark.sql.DataFrame
        Columns ``image_id`` (hex sha256 of the file bytes), ``path``, ``label``,
        ``patient_id`` (null when unknown), ``source`` and ``content`` (binary).

    Raises
    ------
    ValueError
        If the tree holds no images, a folder is missing from ``label_map``, a
        manifest row is incomplete, or a file does not decode.
    FileNotFoundError
        If the root, the manifest or a file it names does not exist.
    """
    if (path is None) == (manifest is None):
        raise ValueError("Give exactly one of path (a class-folder tree) or manifest (a CSV).")
    if path is not None:
        df = _read_class_folders(spark, path, label_map, source)
    else:
        df = _read_manifest(spark, manifest, label_map, source)
    if validate:
        check_decodable(df, max_pixels=max_pixels)
    return df


def _normalise_uri(path):
    # inputFiles() says file:///a, the path column says file:/a.
    return "file:/" + path[len("file:///"):] if path.startswith("file:///") else path


def _binary_files(reader, paths):
    """``binaryFile`` rows (path, content), keeping the files Spark's scan skips.

    Spark's file sources silently skip zero-byte files. They are added back with
    empty content, so that validation reports them instead of losing them.
    """
    from pyspark.sql import functions as F

    files = reader.load(paths).select("path", "content")
    listed = {_normalise_uri(p) for p in files.inputFiles()}
    read = {r.path for r in files.select("path").collect()}  # column pruning: no bytes read
    skipped = sorted(listed - read)
    if not skipped:
        return files
    logger.warning("%d zero-byte file(s), e.g. %s", len(skipped), skipped[0])
    spark = files.sparkSession
    empty = spark.createDataFrame([(p,) for p in skipped], "path string").withColumn(
        "content", F.lit(bytearray()).cast("binary"))
    return files.unionByName(empty)


def _image_extension_filter(col):
    from pyspark.sql import functions as F

    pattern = r"\.(" + "|".join(ext.lstrip(".") for ext in IMAGE_EXTENSIONS) + r")$"
    return F.lower(col).rlike(pattern)


def _read_class_folders(spark, root, label_map, source):
    from pyspark.sql import functions as F

    if _is_local(root) and not os.path.isdir(_strip_file_scheme(root)):
        raise FileNotFoundError(f"Image folder not found: {root}")
    files = _binary_files(spark.read.format("binaryFile").option("recursiveFileLookup", "true"),
                          root)
    is_image = _image_extension_filter(F.col("path"))
    skipped = [r.path for r in files.filter(~is_image).select("path").collect()]
    if skipped:
        # Metadata beside the images is expected; anything else may be a misnamed image.
        unexpected = [p for p in skipped if not p.lower().endswith(_METADATA_EXTENSIONS)]
        logger.log(
            logging.WARNING if unexpected else logging.INFO,
            "read_images(%s): skipping %d file(s) that are not .png/.jpg/.jpeg, e.g. %s",
            root, len(skipped), ", ".join((unexpected or skipped)[:5]),
        )
    images = files.filter(is_image).withColumn(
        "folder", F.regexp_extract("path", r"([^/]+)/[^/]+$", 1)
    )
    folders = sorted(r.folder for r in images.select("folder").distinct().collect())
    if not folders:
        raise ValueError(
            f"No images (.png, .jpg, .jpeg) found under {root}; expected <root>/<label>/<image>."
        )
    mapping = _label_mapping(folders, label_map, what=f"folder under {root}")
    label = F.create_map(*[F.lit(x) for pair in mapping.items() for x in pair])[F.col("folder")]
    source = source or posixpath.basename(_strip_file_scheme(root).rstrip("/")) or "images"
    return images.select(
        F.sha2("content", 256).alias("image_id"),
        "path",
        label.alias("label"),
        F.lit(None).cast("string").alias("patient_id"),
        F.lit(source).alias("source"),
        "content",
    )


def _label_mapping(names, label_map, what):
    if label_map is None:
        return {name: name for name in names}
    unknown = [n for n in names if n not in label_map]
    if unknown:
        raise ValueError(
            f"{what}: {', '.join(map(repr, unknown))} not in label_map "
            f"(known: {', '.join(map(repr, label_map))}). Add it to label_map."
        )
    return {n: label_map[n] for n in names}


def _read_manifest(spark, manifest, label_map, source):
    from pyspark.sql import functions as F

    import pandas as pd

    local = _strip_file_scheme(manifest)
    if _is_local(manifest) and not os.path.isfile(local):
        raise FileNotFoundError(f"Manifest not found: {manifest}")
    # A manifest is small metadata: reading it on the driver gives precise errors.
    if _is_local(manifest):
        table = pd.read_csv(local, dtype=str, keep_default_na=False)
    else:
        table = spark.read.option("header", "true").csv(manifest).toPandas().fillna("")
    missing_cols = {"path", "label"} - set(table.columns)
    if missing_cols:
        raise ValueError(
            f"{manifest}: missing column(s) {sorted(missing_cols)}; "
            f"expected path,label[,patient_id,source], found {list(table.columns)}"
        )
    base = posixpath.dirname(manifest)
    problems = []
    rows = []
    for i, rec in enumerate(table.to_dict("records"), start=2):  # line 1 is the header
        rel, raw_label = rec["path"].strip(), rec["label"].strip()
        if not rel or not raw_label:
            problems.append(f"line {i}: empty path or label ({rec})")
            continue
        if label_map is not None and raw_label not in label_map:
            problems.append(f"line {i}: label {raw_label!r} not in label_map ({rel})")
            continue
        full = rel if (rel.startswith("/") or "://" in rel or rel.startswith(("file:", "dbfs:"))) \
            else posixpath.join(base, rel)
        if _is_local(full) and not os.path.isfile(_strip_file_scheme(full)):
            problems.append(f"line {i}: file not found: {full}")
            continue
        rows.append((
            _qualify(full),
            label_map[raw_label] if label_map else raw_label,
            rec.get("patient_id") or None,
            rec.get("source") or source or posixpath.basename(base.rstrip("/")) or "manifest",
        ))
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ValueError(f"{manifest}: {len(problems)} bad row(s):\n  {shown}{more}")
    if not rows:
        raise ValueError(f"{manifest}: no rows")
    duplicates = pd.Series([r[0] for r in rows]).duplicated()
    if duplicates.any():
        raise ValueError(
            f"{manifest}: paths listed more than once: "
            f"{sorted(set(r[0] for r, d in zip(rows, duplicates) if d))[:10]}"
        )
    meta = spark.createDataFrame(
        rows, "path string, label string, patient_id string, source string"
    )
    files = _binary_files(spark.read.format("binaryFile"), [r[0] for r in rows])
    joined = meta.join(files, on="path", how="left")
    return joined.select(
        F.sha2("content", 256).alias("image_id"),
        "path", "label", "patient_id", "source", "content",
    )


def check_decodable(df, content_col="content", path_col="path", max_pixels=DEFAULT_MAX_PIXELS):
    """Decode every image of ``df`` on the executors; raise naming each failure.

    Raises
    ------
    ImageDecodeError
        Lists (up to 20) paths with the reason each failed, and the total count.
    """
    import pandas as pd
    from pyspark.sql import functions as F

    @F.pandas_udf("string")
    def decode_error(contents: pd.Series, paths: pd.Series) -> pd.Series:
        out = []
        for data, name in zip(contents, paths):
            try:
                open_image(data, name, max_pixels)
                out.append(None)
            except ImageDecodeError as exc:
                out.append(str(exc))
        return pd.Series(out, dtype=object)

    errors = (
        df.select(decode_error(F.col(content_col), F.col(path_col)).alias("error"))
        .filter(F.col("error").isNotNull())
    )
    failed = errors.limit(21).collect()
    if failed:
        total = errors.count() if len(failed) > 20 else len(failed)
        lines = "\n  ".join(r.error for r in failed[:20])
        raise ImageDecodeError(f"{total} file(s) could not be decoded:\n  {lines}")
