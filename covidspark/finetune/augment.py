"""Augmentation of one model input, on the CPU, in a DataLoader worker.

Geometric changes (rotation, shift, zoom) are one affine warp by Pillow with
bilinear resampling, filled with the image's mean grey so that no black
corners teach the network a shortcut; then brightness and contrast. Each
image's random draw comes from its own generator (seeded by the run's seed,
the epoch, the rank and the position), so a resumed run augments exactly as
an uninterrupted one.
"""
import math

import numpy as np


def augment(pixels, recipe, rng):
    """A randomly transformed copy of ``pixels``.

    Parameters
    ----------
    pixels : numpy.ndarray
        Grey ``(size, size)``, or ``(size, size, 3)`` with R = G = B (the featurizer's
        decode); float32 in [0, 255].
    recipe : covidspark.finetune.recipe.Recipe
    rng : numpy.random.Generator

    Returns
    -------
    numpy.ndarray
        Same shape and dtype, in [0, 255].
    """
    from PIL import Image

    if not recipe.augments:
        return pixels
    size = pixels.shape[0]
    angle = math.radians(rng.uniform(-recipe.rotation, recipe.rotation))
    scale = 1.0 + rng.uniform(-recipe.zoom, recipe.zoom)
    dx, dy = rng.uniform(-recipe.shift, recipe.shift, size=2) * size
    gray = pixels if pixels.ndim == 2 else pixels[:, :, 0]
    fill = float(gray.mean())
    # Output pixel (x, y) samples the input at the inverse transform (Pillow's convention).
    c = (size - 1) / 2.0
    cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
    matrix = (cos, sin, c - cos * (c + dx) - sin * (c + dy),
              -sin, cos, c + sin * (c + dx) - cos * (c + dy))
    warped = np.asarray(Image.fromarray(gray.astype(np.float32), mode="F").transform(
        (size, size), Image.AFFINE, matrix, resample=Image.BILINEAR, fillcolor=fill))
    if recipe.hflip and rng.random() < 0.5:
        warped = warped[:, ::-1]
    brightness = rng.uniform(-recipe.brightness, recipe.brightness) * 255.0
    contrast = 1.0 + rng.uniform(-recipe.contrast, recipe.contrast)
    mean = warped.mean()
    out = np.clip((warped - mean) * contrast + mean + brightness, 0.0, 255.0).astype(np.float32)
    return out if pixels.ndim == 2 else np.repeat(out[:, :, None], 3, axis=2)
