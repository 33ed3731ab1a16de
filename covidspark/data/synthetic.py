"""The embedded synthetic chest X-ray set: labelled, deterministic, not medical data.

:func:`synthetic` writes a deterministic, labelled, chest-X-ray-like image set in
the class-folder layout. It is what the tests and the demo run on, so that
covidspark works from a fresh clone with no download. It is *not* medical data:
every report made on it says so.

The classes differ only in the lung fields, never in file format, size or
border, so that a model cannot learn them from the kind of shortcut that real
public sets contain (see ../shared/DESIGN.md, decision 10):

- ``normal``: clear lung fields.
- ``pneumonia``: one dense, lobar consolidation in one lung.
- ``covid``: several hazy, peripheral, lower-zone ground-glass opacities in both lungs.
"""
import csv
import json
import logging
import os

import numpy as np
from covidspark.errors import InputError

logger = logging.getLogger(__name__)

CLASSES = ("covid", "normal", "pneumonia")

SYNTHETIC_VERSION = 3

#: Written last into a generated set: its parameters (a complete set has it).
STAMP = ".synthetic.json"


def _grid(height, width, rng):
    # Normalised coordinates in [-1, 1], with a small random shift of the patient.
    y = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None] + rng.uniform(-0.04, 0.04)
    x = np.linspace(-1.0, 1.0, width, dtype=np.float32)[None, :] + rng.uniform(-0.04, 0.04)
    return y, x


def _soft_ellipse(y, x, cy, cx, ry, rx, sharpness=12.0):
    d = np.sqrt(((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2)
    return 1.0 / (1.0 + np.exp(np.minimum(sharpness * (d - 1.0), 60.0)))


def _lesions(label, rng):
    """Lesions as (cy, cx, radius, amplitude) in normalised coordinates."""
    if label == "pneumonia":
        side = rng.choice([-1.0, 1.0])
        return [(rng.uniform(-0.05, 0.3), side * rng.uniform(0.3, 0.45),
                 rng.uniform(0.2, 0.28), rng.uniform(110, 140))]
    if label == "covid":
        out = []
        for side in (-1.0, 1.0):
            for _ in range(rng.integers(2, 4)):
                out.append((rng.uniform(0.05, 0.45), side * rng.uniform(0.48, 0.58),
                            rng.uniform(0.11, 0.16), rng.uniform(70, 90)))
        return out
    return []


def render_xray(label, height, width, rng):
    """Render one synthetic chest X-ray.

    Returns
    -------
    (numpy.ndarray, list)
        The 8-bit grayscale image and its lesions as ``(cy, cx, radius)`` in
        normalised [-1, 1] coordinates (empty for ``normal``).
    """
    y, x = _grid(height, width, rng)
    # Anatomy varies between patients: body and lung size and position, heart, ribs.
    lung_y, lung_x = rng.uniform(-0.1, 0.06), rng.uniform(0.33, 0.43)
    lung_ry, lung_rx = rng.uniform(0.5, 0.66), rng.uniform(0.21, 0.3)
    image = np.full((height, width), rng.uniform(8, 30), dtype=np.float32)
    image += rng.uniform(80, 110) * _soft_ellipse(y, x, rng.uniform(0, 0.2), 0.0,
                                                   1.0, rng.uniform(0.72, 0.92), 8.0)  # soft tissue
    lungs = (_soft_ellipse(y, x, lung_y, -lung_x, lung_ry, lung_rx)
             + _soft_ellipse(y, x, lung_y + rng.uniform(-0.04, 0.04), lung_x, lung_ry, lung_rx))
    image -= rng.uniform(45, 65) * lungs                                      # air in the lungs
    ribs = (np.sin(rng.uniform(22, 30) * (y + rng.uniform(0.25, 0.45) * x ** 2)
                   + rng.uniform(0, np.pi)) > 0.55).astype(np.float32)
    image += rng.uniform(15, 30) * ribs * lungs
    image += 85.0 * _soft_ellipse(y, x, 0.0, rng.uniform(-0.03, 0.03), 1.1,
                                  rng.uniform(0.08, 0.13), 10.0)              # spine, mediastinum
    image += 30.0 * _soft_ellipse(y, x, rng.uniform(0.22, 0.38), rng.uniform(0.05, 0.18),
                                  rng.uniform(0.24, 0.34), rng.uniform(0.24, 0.36), 6.0)  # heart
    lesions = _lesions(label, rng)
    for cy, cx, radius, amplitude in lesions:
        blob = np.exp(-(((y - cy) ** 2 + (x - cx) ** 2) / (2 * (radius / 1.6) ** 2)))
        image += amplitude * blob * np.clip(lungs, 0.0, 1.0)
    image = image * rng.uniform(0.85, 1.15) + rng.uniform(-12, 12)            # exposure
    image += rng.normal(0.0, 6.0, size=image.shape).astype(np.float32)        # quantum noise
    return np.clip(image, 0, 255).astype(np.uint8), [(cy, cx, r) for cy, cx, r, _ in lesions]


def synthetic(out_dir, n_per_class=40, seed=0, min_size=256, max_size=1024, overwrite=False):
    """Write a deterministic synthetic chest X-ray set in the class-folder layout.

    Parameters
    ----------
    out_dir : str
        Folder to write ``<out_dir>/<label>/syn-<label>-<i>.png|jpg`` and
        ``<out_dir>/manifest.csv`` into.
    n_per_class : int
        Images per class (covid, normal, pneumonia).
    seed : int
        Same seed, same files (for a given Pillow version).
    min_size, max_size : int
        Range of the image sides in pixels; sizes and PNG/JPEG format are drawn
        independently of the class.
    overwrite : bool
        Regenerate even when ``out_dir`` already holds this exact set.

    Returns
    -------
    str
        ``out_dir``. Its ``manifest.csv`` has columns ``path, label, patient_id,
        source, lesions`` (lesions: JSON list of ``[cy, cx, radius]`` in [-1, 1]
        image coordinates).
    """
    from PIL import Image

    if n_per_class < 1:
        raise InputError(f"n_per_class must be >= 1. Received: n_per_class={n_per_class}")
    if not 32 <= min_size <= max_size:
        raise InputError(f"Need 32 <= min_size <= max_size. Received: {min_size}, {max_size}")
    stamp = os.path.join(out_dir, STAMP)
    params = {"version": SYNTHETIC_VERSION, "n_per_class": n_per_class, "seed": seed,
              "min_size": min_size, "max_size": max_size}
    if not overwrite and os.path.exists(stamp):
        with open(stamp) as f:
            if json.load(f) == params:
                return out_dir
    rows = []
    for class_index, label in enumerate(CLASSES):
        os.makedirs(os.path.join(out_dir, label), exist_ok=True)
        for i in range(n_per_class):
            rng = np.random.default_rng([seed, class_index, i])
            side = int(rng.integers(min_size, max_size + 1))
            aspect = rng.uniform(0.85, 1.15)
            height, width = side, int(np.clip(round(side * aspect), min_size, max_size))
            pixels, lesions = render_xray(label, height, width, rng)
            fmt = "png" if rng.random() < 0.5 else "jpg"
            rel = f"{label}/syn-{label}-{i:04d}.{fmt}"
            image = Image.fromarray(pixels)
            if fmt == "png":
                image.save(os.path.join(out_dir, rel), optimize=False)
            else:
                image.save(os.path.join(out_dir, rel), quality=int(rng.integers(85, 96)))
            rows.append({
                "path": rel,
                "label": label,
                # Two images per patient, so that patient-grouped splits have work to do.
                "patient_id": f"syn-{label}-p{i // 2:04d}",
                "source": "synthetic",
                "lesions": json.dumps([[round(v, 4) for v in les] for les in lesions]),
            })
    with open(os.path.join(out_dir, "manifest.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(stamp, "w") as f:
        json.dump(params, f)
    logger.info("Wrote %d synthetic images to %s", len(rows), out_dir)
    return out_dir


def default_synthetic_dir(n_per_class=40, seed=0):
    """Where the embedded default data set lives (generated on first use)."""
    from covidspark.runtime.cache import default_cache_dir

    return os.path.join(default_cache_dir(), f"synthetic-v{SYNTHETIC_VERSION}-n{n_per_class}-s{seed}")
