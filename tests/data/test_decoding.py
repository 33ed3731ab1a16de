"""Decoding every supported format into model inputs (files generated here)."""
import io

import numpy as np
import pytest
from PIL import Image

from conftest import gradient as _gradient
from conftest import png_bytes as _png
from conftest import require_module
from covidspark.data.decoding import ImageDecodeError, decode_image, open_image


def _encode(image, fmt, **kwargs):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_decode_8bit_gray_matches_plain_pillow():
    pixels = _gradient()
    got = decode_image(_png(pixels), 32)
    expected = np.asarray(Image.fromarray(pixels).resize((32, 32), Image.Resampling.BOX),
                          dtype=np.float32)
    assert got.shape == (32, 32, 3) and got.dtype == np.float32
    np.testing.assert_array_equal(got[:, :, 0], expected)
    np.testing.assert_array_equal(got[:, :, 0], got[:, :, 2])


@pytest.mark.parametrize("bits", [8, 16])
def test_compact_decode_is_the_grey_channel_uint8_only_for_8bit_sources(bits):
    pixels = (_gradient() if bits == 8 else
              np.linspace(1000, 65535, 64 * 64).reshape(64, 64).astype(np.uint16))
    full = decode_image(_png(pixels), 32)
    compact = decode_image(_png(pixels), 32, compact=True)
    assert compact.shape == (32, 32)
    assert compact.dtype == (np.uint8 if bits == 8 else np.float32)
    np.testing.assert_array_equal(compact.astype(np.float32), full[:, :, 0])


def test_decode_16bit_png_keeps_the_full_range():
    # Values above 255 everywhere: truncating to the low byte (as Spark's image
    # source does) would give noise; scaling keeps the gradient.
    pixels = np.linspace(1000, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    data = _png(pixels)
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    got = decode_image(data, 64, scale_hint="SCALE_FAST")[:, :, 0]
    np.testing.assert_allclose(got, pixels.astype(np.float32) * 255 / 65535, atol=1e-3)
    assert got.max() > 254 and got.min() < 5


def test_decode_rgb_and_rgba_use_luminance_and_ignore_alpha():
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[..., 1] = 100
    luma = decode_image(_png(rgb), 40)[:, :, 0]
    # ITU-R 601-2: L = 0.299 R + 0.587 G + 0.114 B
    np.testing.assert_allclose(luma, 0.299 * 200 + 0.587 * 100, atol=1)
    rgba = np.dstack([rgb, np.full((40, 40), 7, np.uint8)])
    np.testing.assert_array_equal(decode_image(_png(rgba), 40), decode_image(_png(rgb), 40))


def test_decode_applies_exif_orientation():
    pixels = np.zeros((20, 60), np.uint8)
    pixels[:, :10] = 255  # bright left edge
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(pixels).save(buffer, format="JPEG", exif=exif, quality=100)
    image = open_image(buffer.getvalue())
    assert image.size == (20, 60)  # width and height swapped
    top = np.asarray(image)[:5].mean()
    assert top > 200  # the bright left edge is now at the top


@pytest.mark.parametrize("data, reason", [
    (b"", "empty file"),                                       # zero bytes
    (None, "null content"),                                    # a null, not a file
    (b"this is a text file, not an image\n" * 10, "not a decodable image"),
    (_png(_gradient(256, 256))[:400], "not a decodable image"),  # truncated PNG
])
def test_decode_errors_name_the_file(data, reason):
    with pytest.raises(ImageDecodeError, match=f"scan-17.png: {reason}"):
        decode_image(data, 32, name="scan-17.png")


def test_decompression_bomb_is_refused_before_decoding():
    with pytest.raises(ImageDecodeError, match="exceeds the limit of 1000"):
        decode_image(_png(_gradient(64, 64)), 32, name="bomb.png", max_pixels=1000)


def test_unknown_scale_hint_lists_the_supported_ones():
    with pytest.raises(ValueError, match="SCALE_AREA_AVERAGING"):
        decode_image(_png(_gradient()), 32, scale_hint="SCALE_MAGIC")




def test_palette_image_decodes_through_its_palette():
    pixels = _gradient(32, 32)
    palette_image = Image.fromarray(pixels).convert("P")
    got = decode_image(_encode(palette_image, "PNG"), 32, scale_hint="SCALE_FAST")[:, :, 0]
    np.testing.assert_allclose(got, pixels, atol=1)


def test_cmyk_jpeg_decodes_to_luminance():
    cmyk = Image.new("CMYK", (32, 32), (0, 0, 0, 0))  # no ink: white
    got = decode_image(_encode(cmyk, "JPEG", quality=100), 32)
    assert got.min() > 245


def test_16bit_grayscale_is_not_truncated_to_the_low_byte():
    # 0x0100 and 0x01FF have equal low bytes to 0x0000/0x00FF; a truncating decoder
    # would see the same image. Scaled, both are near black (values 1 and 2).
    low = np.full((16, 16), 0x00FF, np.uint16)
    high = np.full((16, 16), 0xFF00, np.uint16)
    assert decode_image(_png(low), 16).max() < 2
    assert decode_image(_png(high), 16).min() > 253


def test_unsupported_formats_are_named():
    for fmt in ("GIF", "BMP", "TIFF"):
        data = _encode(Image.fromarray(_gradient(16, 16)), fmt)
        with pytest.raises(ImageDecodeError, match=f"x.png: unsupported format {fmt}"):
            decode_image(data, 16, name="x.png")


# ------------------------------------------------------------------ DICOM

requires_pydicom = require_module("pydicom")

def dicom_bytes(pixels, photometric="MONOCHROME2", slope=None, intercept=None, window=None,
           bits_stored=12):
    """A DICOM file (uncompressed, 16-bit allocated) of ``pixels``, as bytes."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def ramp():
    """A 12-bit horizontal ramp, 8 x 64."""
    return np.tile(np.linspace(0, 4095, 64).astype(np.uint16), (8, 1))


@requires_pydicom
def test_dicom_full_range_without_window():
    got = decode_image(dicom_bytes(ramp()), 64, scale_hint="SCALE_FAST")[:, :, 0]
    np.testing.assert_allclose(got[0], np.linspace(0, 255, 64), atol=0.1)
    assert open_image(dicom_bytes(ramp())).info["format"] == "DICOM"


@requires_pydicom
@pytest.mark.parametrize("center,width", [(0, 400), (500, 1001), (-600, 2)])
def test_dicom_window_after_rescale_equals_pydicom(center, width):
    # Stored 0..4095, rescaled to -1024..3071 (HU-like), then windowed in rescaled units:
    # pydicom's own apply_modality_lut + apply_voi_lut is the reference.
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    pixels = ramp()
    data = dicom_bytes(pixels, slope=1, intercept=-1024, window=(center, width))
    got = decode_image(data, 64, scale_hint="SCALE_FAST")[0, :, 0]
    ds = pydicom.dcmread(io.BytesIO(data))
    windowed = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)[0]
    # pydicom maps the window onto the rescaled range of BitsStored: [0, 4095] * 1 - 1024.
    y_min, y_max = 0 * 1 - 1024, 4095 * 1 - 1024
    expected = (windowed - y_min) / (y_max - y_min) * 255
    np.testing.assert_allclose(got, expected, atol=0.01)
    assert got.min() == 0 and got.max() == 255


@requires_pydicom
def test_dicom_monochrome1_is_inverted():
    plain = decode_image(dicom_bytes(ramp()), 64, scale_hint="SCALE_FAST")
    inverted = decode_image(dicom_bytes(ramp(), photometric="MONOCHROME1"), 64, scale_hint="SCALE_FAST")
    np.testing.assert_allclose(inverted, 255 - plain, atol=1e-3)


@requires_pydicom
def test_dicom_bomb_and_garbage():
    with pytest.raises(ImageDecodeError, match="exceeds the limit of 100"):
        decode_image(dicom_bytes(ramp()), 16, name="big.dcm", max_pixels=100)
    with pytest.raises(ImageDecodeError, match="bad.dcm"):
        decode_image(b"\x00" * 128 + b"DICM" + b"\x01" * 20, 16, name="bad.dcm")


# ------------------------------------------------------------------ preprocessing options


def test_center_crop_keeps_the_middle():
    pixels = np.full((100, 80), 50, np.uint8)
    pixels[:10, :] = pixels[-10:, :] = 255  # burnt-in label bands at top and bottom
    got = decode_image(_png(pixels), 40, crop=0.5, scale_hint="SCALE_FAST")[:, :, 0]
    assert got.max() == 50
    expected = np.asarray(Image.fromarray(pixels[25:75, 20:60]).resize((40, 40), Image.Resampling.NEAREST))
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        decode_image(_png(pixels), 40, crop=0.0)


def _histogram_equalisation(pixels):
    """Global histogram equalisation from the cumulative histogram (Gonzalez & Woods 3.3.1):
    ``v -> round(255 * cdf(v) / n)``; what CLAHE is with one tile and no clipping."""
    cdf = np.cumsum(np.bincount(pixels.ravel(), minlength=256))
    lut = np.floor(cdf * 255.0 / pixels.size + 0.5).clip(0, 255).astype(np.uint8)
    return lut[pixels]


def test_clahe_with_one_tile_and_no_clip_is_histogram_equalisation():
    require_module("cv2", now=True)
    from covidspark.data.decoding import apply_clahe

    rng = np.random.default_rng(0)
    pixels = (100 + rng.normal(0, 12, (96, 80))).clip(0, 255).astype(np.uint8)
    got = np.asarray(apply_clahe(Image.fromarray(pixels), clip_limit=1000.0, tiles=(1, 1)))
    np.testing.assert_array_equal(got, _histogram_equalisation(pixels))


def test_clahe_clip_limit_bounds_the_contrast_gain():
    # A clip limit c caps every bin at c * (tile pixels / 256) before equalising, so the
    # mapping's slope, and with it the gain in contrast, is at most about c.
    require_module("cv2", now=True)
    rng = np.random.default_rng(0)
    pixels = (100 + rng.normal(0, 4, (128, 128))).clip(0, 255).astype(np.uint8)  # flat, low contrast
    got = decode_image(_png(pixels), 128, clahe=True, scale_hint="SCALE_FAST")[:, :, 0]
    unclipped = _histogram_equalisation(pixels)
    assert 1.5 * pixels.std() < got.std() < 0.5 * unclipped.std()
    from covidspark.data.decoding import CLAHE_CLIP_LIMIT

    assert got.std() <= CLAHE_CLIP_LIMIT * pixels.std() * 1.5
