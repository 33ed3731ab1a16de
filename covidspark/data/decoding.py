"""Decoding chest X-ray files into model inputs, on the executors.

One decoder serves the featurizer, validation, the tests and the benchmarks:
Pillow for PNG and JPEG (8 and 16 bit; grayscale, RGB, RGBA, palette, CMYK;
EXIF orientation applied) and pydicom for DICOM (:mod:`covidspark.data.dicom`).
16-bit values are scaled to the full 8-bit range, never truncated to the low
byte as Spark's own image source does. Everything is converted to grayscale
luminance: X-rays carry no colour, and colour in public sets is figure
annotation.
"""
import io
import os

import numpy as np

from covidspark.data import dicom
from covidspark.errors import InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg") + dicom.DICOM_EXTENSIONS
# What Pillow may report for a file we accept (MPO: multi-picture JPEG from phones).
SUPPORTED_FORMATS = ("PNG", "JPEG", "MPO")
METADATA_EXTENSIONS = (".csv", ".json", ".txt", ".md")

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


#: When set to a folder, every :func:`open_image` call appends one byte to
#: ``<folder>/<pid>``: the benchmarks and tests count decodes per image across
#: Spark's Python workers with it (off by default; one small write per decode).
COUNT_DECODES_ENV = "COVIDSPARK_COUNT_DECODES"


def _count_decode():
    folder = os.environ.get(COUNT_DECODES_ENV)
    if folder:
        with open(os.path.join(folder, str(os.getpid())), "ab") as f:
            f.write(b".")


def counted_decodes(folder):
    """Decodes recorded under ``folder`` by processes run with :data:`COUNT_DECODES_ENV`."""
    return sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder))


class ImageDecodeError(InputError):
    """A file or value that is not a decodable image; the message names it."""


def resample_filter(scale_hint):
    from PIL import Image

    try:
        return getattr(Image.Resampling, SCALE_HINTS[scale_hint])
    except KeyError:
        raise InputError(
            f"Unsupported scaleHint {scale_hint!r}. Supported: {', '.join(SCALE_HINTS)}."
        ) from None


def open_image(data, name="<bytes>", max_pixels=DEFAULT_MAX_PIXELS, draft_size=None):
    """Open encoded image bytes, fully decoded and EXIF-rotated.

    Parameters
    ----------
    data : bytes
        The encoded file: PNG, JPEG or DICOM.
    name : str
        How to name the image in error messages (usually its path).
    max_pixels : int
        Refuse images with more pixels than this, before decoding them
        (decompression bombs).
    draft_size : (int, int), optional
        Let libjpeg decode JPEGs in grayscale at a reduced scale (1/2 to 1/8)
        that stays at least this large: several times faster for thumbnails.

    Returns
    -------
    PIL.Image.Image
        DICOM images come back in mode ``F`` (grey levels in [0, 255] after the
        modality and VOI transforms), with ``image.info["format"] == "DICOM"``
        and ``image.info["bits"]``.

    Raises
    ------
    ImageDecodeError
        If the bytes are empty, not an image, an unsupported format, truncated
        or too large; the message starts with ``name``.
    """
    from PIL import Image, ImageOps

    _count_decode()
    if data is None:  # a null in the caller's column, not a file: b"" is an empty file
        raise ImageDecodeError(f"{name}: null content (the row holds no image bytes)")
    if len(data) == 0:
        raise ImageDecodeError(f"{name}: empty file (0 bytes)")
    if dicom.looks_like_dicom(data, name):
        pixels, info = dicom.decode_dicom(data, name, max_pixels, ImageDecodeError)
        image = Image.fromarray(pixels)
        image.info.update(info, format="DICOM")
        return image
    try:
        image = Image.open(io.BytesIO(data))
    except Exception as exc:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError, ...
        # Pillow's UnidentifiedImageError names the BytesIO object, which says nothing.
        detail = ("no known image format" if type(exc).__name__ == "UnidentifiedImageError"
                  else f"{type(exc).__name__}: {exc}")
        raise ImageDecodeError(f"{name}: not a decodable image ({detail})") from exc
    if image.format not in SUPPORTED_FORMATS:
        raise ImageDecodeError(
            f"{name}: unsupported format {image.format} (supported: PNG, JPEG, DICOM)"
        )
    width, height = image.size
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"{name}: {width}x{height} = {width * height} pixels exceeds the limit of "
            f"{max_pixels} (possible decompression bomb)"
        )
    if draft_size is not None and image.format == "JPEG":
        image.draft("L", tuple(draft_size))
    try:
        image.load()
        rotated = ImageOps.exif_transpose(image)
    except Exception as exc:
        raise ImageDecodeError(f"{name}: not a decodable image ({type(exc).__name__}: {exc})") from exc
    rotated.info.setdefault("format", image.format)
    return rotated


def bit_depth(image):
    """Bits per sample of an opened image (8, 16 or DICOM's BitsStored)."""
    if "bits" in image.info:
        return int(image.info["bits"])
    return 8 if image.mode in _EIGHT_BIT_MODES else 16


# Pillow modes with 8 bits per channel; anything else (I;16*, I, F) is high bit depth.
_EIGHT_BIT_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}


def to_gray8(image):
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
        return np.asarray(to_gray8(image), dtype=np.float32)
    if image.mode == "F":
        return np.asarray(image, dtype=np.float32)
    # I;16, I;16B, I;16L and I (32-bit integer, how Pillow opens some 16-bit PNGs).
    return np.asarray(image, dtype=np.float32) * np.float32(255.0 / 65535.0)


def resize_gray(image, size, scale_hint="SCALE_AREA_AVERAGING", compact=False):
    """Resize a Pillow image's grayscale to ``size`` x ``size`` (float32, [0, 255]).

    ``compact``: an 8-bit source's result as uint8 (the same values: an 8-bit
    resize gives whole numbers), a quarter of the bytes to move.
    """
    from PIL import Image

    resample = resample_filter(scale_hint)
    if image.mode in _EIGHT_BIT_MODES:
        return np.asarray(to_gray8(image).resize((size, size), resample),
                          dtype=np.uint8 if compact else np.float32)
    # High bit depth: resize in floating point so nothing is rounded to 8 bits first.
    gray = Image.fromarray(to_grayscale_float(image))  # float32 -> mode "F"
    return np.asarray(gray.resize((size, size), resample), dtype=np.float32)


def center_crop(image, fraction):
    """The central ``fraction`` of a Pillow image's width and height (1.0: unchanged)."""
    if not 0.0 < fraction <= 1.0:
        raise InputError(f"center crop fraction must be in (0, 1]. Received: {fraction}")
    if fraction == 1.0:
        return image
    return image.crop(crop_box(*image.size, fraction))


def crop_box(width, height, fraction):
    """``(left, top, right, bottom)`` of the central ``fraction`` of a width x height image."""
    w, h = max(1, round(width * fraction)), max(1, round(height * fraction))
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


CLAHE_CLIP_LIMIT = 2.0
CLAHE_TILES = (8, 8)


def apply_clahe(image, clip_limit=CLAHE_CLIP_LIMIT, tiles=CLAHE_TILES):
    """Contrast-limited adaptive histogram equalisation of the grayscale (OpenCV).

    As one of the original studies used it: clip limit 2.0, 8x8 tiles. High
    bit-depth images are brought to 8 bits first. Needs the optional extra
    ``covidspark[clahe]`` (opencv-python-headless).
    """
    from PIL import Image

    try:
        import cv2
    except ImportError:
        raise ImportError("CLAHE needs OpenCV: pip install 'covidspark[clahe]'") from None
    gray = np.clip(np.rint(to_grayscale_float(image)), 0, 255).astype(np.uint8)
    equalised = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=tiles).apply(gray)
    return Image.fromarray(equalised)


def prepare(image, size, scale_hint="SCALE_AREA_AVERAGING", crop=1.0, clahe=False,
            compact=False):
    """An opened image to a model input: crop, CLAHE, resize, three channels.

    ``compact``: the one grey channel, ``(size, size)``, uint8 for 8-bit sources
    (else float32), for an engine that widens it to three float channels itself
    (on the GPU: a twelfth of the bytes to stack, pin and copy).
    """
    image = center_crop(image, crop)
    if clahe:
        image = apply_clahe(image)
    gray = resize_gray(image, size, scale_hint, compact)
    return gray if compact else np.repeat(gray[:, :, None], 3, axis=2)


def decode_image(data, size, scale_hint="SCALE_AREA_AVERAGING", name="<bytes>",
                 max_pixels=DEFAULT_MAX_PIXELS, crop=1.0, clahe=False, compact=False):
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
    crop : float
        Keep the central fraction of width and height first (1.0: whole image).
    clahe : bool
        Apply CLAHE (clip 2.0, 8x8 tiles) before resizing.
    compact : bool
        Return the one grey channel only (see :func:`prepare`).

    Returns
    -------
    numpy.ndarray
        The grayscale image replicated to three (R = G = B) channels, before the
        model's own preprocessing.
    """
    return prepare(open_image(data, name, max_pixels), size, scale_hint, crop, clahe, compact)


# OpenCV type codes used by Spark's image data source (spark.read.format("image")).
_SPARK_IMAGE_MODES = {0: 1, 16: 3, 24: 4}


def decode_image_struct(height, width, n_channels, mode, data, size,
                        scale_hint="SCALE_AREA_AVERAGING", name="<image struct>", crop=1.0,
                        clahe=False, compact=False):
    """Decode one row of Spark's image struct (BGR(A) bytes, 8 bit) like :func:`decode_image`."""
    from PIL import Image

    if data is None:
        raise ImageDecodeError(f"{name}: null image (the row holds no image)")
    if height == -1 and width == -1:  # how Spark's image source marks a file it could not decode
        raise ImageDecodeError(
            f"{name}: Spark's image source could not decode this file (its row says height "
            f"-1); load with dropInvalid=true to leave such files out, or read with "
            f"covidspark.read_images(..., strict=False), which says why each one is bad")
    if _SPARK_IMAGE_MODES.get(mode) != n_channels:
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
    return prepare(image, size, scale_hint, crop, clahe, compact)
