"""Perceptual hashes of images, for finding near-duplicates.

:func:`phash` is the DCT hash of ``imagehash.phash`` (hash_size 8,
highfreq_factor 4): grayscale, Lanczos-resized to 32x32, 2-D DCT-II, the 8x8
lowest frequencies compared with their median. It is computed with numpy
alone, so executors need no extra package; it equals ``imagehash.phash`` bit
for bit on 8-bit images (checked against the hashes in the Ozturk manifest).
"""
import numpy as np

HASH_SIZE = 8
_IMAGE_SIZE = HASH_SIZE * 4


def _dct_matrix(n):
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    return np.cos(np.pi * (2 * i + 1) * k / (2 * n))


_DCT = _dct_matrix(_IMAGE_SIZE)


def phash_bits(image):
    """The 64 hash bits (row-major, bool) of a Pillow image."""
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        from covidspark.data.decoding import to_grayscale_float

        small = Image.fromarray(to_grayscale_float(image)).resize(
            (_IMAGE_SIZE, _IMAGE_SIZE), Image.Resampling.LANCZOS)
    else:
        from covidspark.data.decoding import to_gray8

        small = to_gray8(image).resize((_IMAGE_SIZE, _IMAGE_SIZE), Image.Resampling.LANCZOS)
    pixels = np.asarray(small, dtype=np.float64)
    # scipy's unnormalised DCT-II differs by a constant factor, which the median test ignores.
    coefficients = _DCT @ pixels @ _DCT.T
    low = coefficients[:HASH_SIZE, :HASH_SIZE]
    return (low > np.median(low)).flatten()


def bits_to_hex(bits):
    """imagehash's string form: the bits as one big-endian hex number."""
    value = int("".join("1" if b else "0" for b in bits), 2)
    return f"{value:0{len(bits) // 4}x}"


def hex_to_signed64(value):
    """A 64-bit hex hash as a signed int64 (Spark's LongType), for XOR and bit_count."""
    number = int(value, 16)
    return number - (1 << 64) if number >= 1 << 63 else number


def phash(image):
    """imagehash-compatible perceptual hash of a Pillow image, as 16 hex digits."""
    return bits_to_hex(phash_bits(image))


def hamming(a, b):
    """Bits that differ between two hex hashes."""
    return bin(int(a, 16) ^ int(b, 16)).count("1")
