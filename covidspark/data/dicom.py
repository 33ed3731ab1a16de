"""DICOM decoding (optional extra: ``pip install covidspark[dicom]``, which adds pydicom).

A radiograph's stored values become display grey levels in the DICOM order:
modality LUT (Rescale Slope / Intercept), then the VOI transform (a VOI LUT
sequence, or the linear window of Window Center / Width, DICOM PS3.3
C.11.2.1.2.1), then MONOCHROME1 inverted so that bone is bright as in
MONOCHROME2. Without a window, the full range of values is used.
"""
import io

import numpy as np
from covidspark.errors import InputError

DICOM_EXTENSIONS = (".dcm", ".dicom")


def looks_like_dicom(data, name=""):
    """DICOM Part 10 files carry 'DICM' after a 128-byte preamble."""
    return (len(data) >= 132 and data[128:132] == b"DICM") or name.lower().endswith(DICOM_EXTENSIONS)


def _first(value):
    # Window Center/Width may be multi-valued; the first pair is the default view.
    try:
        return float(value[0])
    except TypeError:
        return float(value)


def linear_window(values, center, width):
    """DICOM's linear VOI window to [0, 255] (PS3.3 C.11.2.1.2.1)."""
    if width < 1:
        raise InputError(f"Window Width must be >= 1. Received: {width}")
    low = center - 0.5 - (width - 1) / 2
    high = center - 0.5 + (width - 1) / 2
    scaled = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    return np.where(values <= low, 0.0, np.where(values > high, 255.0, scaled)).astype(np.float32)


def decode_dicom(data, name, max_pixels, error_class):
    """Decode DICOM bytes to a float32 grayscale array in [0, 255].

    Returns
    -------
    (numpy.ndarray, dict)
        The pixels and ``{"bits": BitsStored, "photometric": ...}``.

    Raises
    ------
    error_class
        Not DICOM, no pixel data, too many pixels, or pydicom missing (the
        message gives the install command).
    """
    try:
        import pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:
        raise error_class(
            f"{name}: DICOM files need pydicom: pip install 'covidspark[dicom]'"
        ) from None
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        rows, columns = int(ds.Rows), int(ds.Columns)
    except Exception as exc:
        raise error_class(f"{name}: not a readable DICOM file ({type(exc).__name__}: {exc})") from exc
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if rows * columns * frames > max_pixels:
        raise error_class(
            f"{name}: {columns}x{rows}x{frames} = {rows * columns * frames} pixels exceeds the "
            f"limit of {max_pixels} (possible decompression bomb)"
        )
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # compressed syntaxes need extra handlers
        raise error_class(
            f"{name}: DICOM pixel data could not be decoded ({type(exc).__name__}: {exc}); "
            f"compressed transfer syntaxes need e.g. pip install pylibjpeg pylibjpeg-libjpeg"
        ) from exc
    if frames > 1:
        raise error_class(f"{name}: multi-frame DICOM ({frames} frames) is not a radiograph")
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    if pixels.ndim == 3:  # RGB secondary capture: ITU-R 601-2 luma
        pixels = pixels[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.clip(pixels, 0, 255), {"bits": int(ds.BitsStored), "photometric": photometric}
    values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float32)
    if "VOILUTSequence" in ds:
        values = np.asarray(apply_voi_lut(values, ds, index=0), dtype=np.float32)
        gray = _full_range(values)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        gray = linear_window(values, _first(ds.WindowCenter), _first(ds.WindowWidth))
    else:
        gray = _full_range(values)
    if photometric == "MONOCHROME1":
        gray = 255.0 - gray
    return gray.astype(np.float32), {"bits": int(ds.BitsStored), "photometric": photometric}


def _full_range(values):
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values, dtype=np.float32)
    return ((values - low) * (255.0 / (high - low))).astype(np.float32)
