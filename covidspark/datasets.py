"""Data sets: the embedded synthetic chest X-ray set, and the known public layouts.

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
import dataclasses
import json
import logging
import os

import numpy as np

logger = logging.getLogger(__name__)

CLASSES = ("covid", "normal", "pneumonia")

# Folder names of the Ozturk et al. (2020) set (GitHub muhammedtalo/COVID-19).
OZTURK_LABEL_MAP = {"Covid-19": "covid", "No_findings": "normal", "Pneumonia": "pneumonia"}

SYNTHETIC_VERSION = 3


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
        raise ValueError(f"n_per_class must be >= 1. Received: n_per_class={n_per_class}")
    if not 32 <= min_size <= max_size:
        raise ValueError(f"Need 32 <= min_size <= max_size. Received: {min_size}, {max_size}")
    stamp = os.path.join(out_dir, ".synthetic.json")
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
    from covidspark.models import default_cache_dir

    return os.path.join(default_cache_dir(), f"synthetic-v{SYNTHETIC_VERSION}-n{n_per_class}-s{seed}")


# ---------------------------------------------------------------- public data sets

COHEN_FRONTAL_VIEWS = ("PA", "AP", "AP Supine")
# Agents named in early versions of Cohen's metadata, before "Pneumonia/<kind>/<agent>".
_COHEN_PNEUMONIA_AGENTS = {
    "sars", "mers", "mers-cov", "streptococcus", "pneumocystis", "legionella", "klebsiella",
    "chlamydophila", "e.coli", "mycoplasma", "influenza", "varicella", "lipoid", "aspergillosis",
    "nocardia", "staphylococcus", "herpes",
}


@dataclasses.dataclass(frozen=True)
class KnownDataset:
    """Where a public set lives, how it is laid out and how its labels map."""

    name: str
    title: str
    url: str
    fetch: str              # "git" or "manual"
    layout: str
    label_map: dict
    subdir: str = ""        # folder inside the download that holds the images
    path_filter: str = None
    manual_steps: str = ""


KNOWN_DATASETS = {
    d.name: d for d in [
        KnownDataset(
            name="ozturk",
            title="Ozturk et al. 2020 (125 COVID-19, 500 no findings, 500 pneumonia)",
            url="https://github.com/muhammedtalo/COVID-19.git",
            fetch="git",
            layout="class folders: X-Ray Image DataSet/{Covid-19,No_findings,Pneumonia}/*",
            label_map=OZTURK_LABEL_MAP,
            subdir="X-Ray Image DataSet",
        ),
        KnownDataset(
            name="cohen",
            title="Cohen et al. covid-chestxray-dataset (metadata.csv + images/)",
            url="https://github.com/ieee8023/covid-chestxray-dataset.git",
            fetch="git",
            layout="metadata.csv with finding, view, modality, patientid, folder, filename",
            label_map={},
        ),
        KnownDataset(
            name="chowdhury",
            title="COVID-19 Radiography Database (Chowdhury et al.; Kaggle)",
            url="https://www.kaggle.com/datasets/tawsifurrahman/covid19-radiography-database",
            fetch="manual",
            layout="COVID-19_Radiography_Dataset/<class>/images/*.png (+ masks/, ignored); "
                   "Lung_Opacity is not one of the three classes and is left out",
            label_map={"COVID": "covid", "Normal": "normal", "Viral Pneumonia": "pneumonia"},
            subdir="COVID-19_Radiography_Dataset",
            path_filter=r"^(COVID|Normal|Viral Pneumonia)/images/",
            manual_steps="needs a Kaggle account: kaggle datasets download -d "
                         "tawsifurrahman/covid19-radiography-database --unzip -p DIR",
        ),
    ]
}


class DatasetUnavailableError(RuntimeError):
    """A public data set could not be fetched; the message says how to fetch it by hand."""


def known_dataset(name):
    """The registry entry of a public data set (error lists the known names)."""
    try:
        return KNOWN_DATASETS[name]
    except KeyError:
        raise ValueError(f"Unknown data set {name!r}. Known: {', '.join(KNOWN_DATASETS)}.") from None


def download(name, to, timeout=1800):
    """Fetch a public data set into ``to`` (``git clone --depth 1``) on a networked machine.

    Raises
    ------
    DatasetUnavailableError
        Offline, on a git failure, or for sets that need a manual download; the
        message gives the command to run by hand.
    """
    import subprocess

    dataset = known_dataset(name)
    by_hand = (f"git clone --depth 1 {dataset.url} {to}" if dataset.fetch == "git"
               else dataset.manual_steps.replace("DIR", to))
    if dataset.fetch != "git":
        raise DatasetUnavailableError(
            f"{dataset.title} cannot be downloaded automatically: fetch it from {dataset.url} "
            f"({by_hand}), then read it with covidspark.datasets.read_dataset(spark, "
            f"{name!r}, {to!r})."
        )
    if os.path.isdir(os.path.join(to, ".git")):
        return to
    try:
        subprocess.run(["git", "clone", "--depth", "1", "--quiet", dataset.url, to],
                       check=True, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except FileNotFoundError:
        raise DatasetUnavailableError(f"git is not installed; on a machine with git run: {by_hand}") \
            from None
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        said = (getattr(exc, "stderr", "") or "").strip().splitlines()
        raise DatasetUnavailableError(
            f"Could not fetch {dataset.title} from {dataset.url}"
            f"{': ' + said[-1] if said else ''}. On a machine with network access run: "
            f"{by_hand} and copy {to} here."
        ) from exc
    return to


def cohen_label(finding):
    """covid / pneumonia / normal for a Cohen ``finding``, or None (left out)."""
    text = (finding or "").strip()
    lowered = text.lower()
    if "covid-19" in lowered:
        return "covid"
    if lowered in ("no finding", "no findings", "normal"):
        return "normal"
    if lowered.startswith("pneumonia") or lowered in _COHEN_PNEUMONIA_AGENTS:
        return "pneumonia"
    return None


def cohen_manifest(metadata_csv, views=COHEN_FRONTAL_VIEWS):
    """Cohen's metadata.csv as a manifest: frontal X-rays with a mapped finding.

    Returns
    -------
    (pandas.DataFrame, dict)
        ``path`` (relative to the metadata's folder), ``label``, ``patient_id``
        (``cohen:<patientid>``), ``source`` (``cohen``); and the counts of rows
        left out and why (not an X-ray, not a frontal view, unmapped finding).
    """
    import pandas as pd

    table = pd.read_csv(metadata_csv, dtype=str, keep_default_na=False)
    columns = {c.strip().lower(): c for c in table.columns}
    for needed in ("finding", "view", "filename"):
        if needed not in columns:
            raise ValueError(f"{metadata_csv}: no {needed!r} column; found {list(table.columns)}")
    left_out = {"not X-ray": 0, "not a frontal view": 0, "finding not covid/normal/pneumonia": 0}
    rows = []
    for rec in table.to_dict("records"):
        get = lambda key, default="": (rec.get(columns.get(key, ""), default) or default).strip()  # noqa: E731
        modality = get("modality", "X-ray")
        view = get("view")
        if modality.lower() != "x-ray" or view.upper() == "CT":
            left_out["not X-ray"] += 1
            continue
        if view not in views:
            left_out["not a frontal view"] += 1
            continue
        label = cohen_label(get("finding"))
        if label is None:
            left_out["finding not covid/normal/pneumonia"] += 1
            continue
        folder = get("folder", "images")
        rows.append({"path": f"{folder}/{get('filename')}", "label": label,
                     "patient_id": f"cohen:{get('patientid')}", "source": "cohen"})
    return pd.DataFrame(rows, columns=["path", "label", "patient_id", "source"]), left_out


def read_dataset(spark, name, root, **kwargs):
    """Read a known public set from ``root`` with its layout and label mapping.

    Extra keyword arguments go to :func:`covidspark.images.read_images`
    (``strict``, ``max_pixels``, ...).
    """
    from covidspark.images import read_images

    dataset = known_dataset(name)
    if name == "cohen":
        manifest, left_out = cohen_manifest(os.path.join(root, "metadata.csv"))
        logger.info("cohen: left out %s", left_out)
        return read_images(spark, manifest=manifest, base_dir=root, source="cohen", **kwargs)
    folder = os.path.join(root, dataset.subdir) if dataset.subdir and \
        os.path.isdir(os.path.join(root, dataset.subdir)) else root
    return read_images(spark, folder, label_map=dataset.label_map, source=name,
                       path_filter=dataset.path_filter, **kwargs)


def describe(spark, images, max_distance=None):
    """Counts, sizes, bit depths, modes and duplicates of an image DataFrame.

    Parameters
    ----------
    images : pyspark.sql.DataFrame
        As :func:`covidspark.images.read_images` returns.
    max_distance : int, optional
        Perceptual-hash distance for near duplicates (default
        :data:`covidspark.duplicates.DEFAULT_MAX_DISTANCE`).

    Returns
    -------
    dict
        ``images``, ``by_label``, ``by_source``, ``formats``, ``modes``,
        ``bit_depths``, ``width`` / ``height`` (min, median, max), ``undecodable``
        and ``duplicate_groups``.
    """
    from pyspark.sql import functions as F

    from covidspark.duplicates import DEFAULT_MAX_DISTANCE, duplicate_groups, image_info

    max_distance = DEFAULT_MAX_DISTANCE if max_distance is None else max_distance
    info = (image_info(images).select("path", "image_id", "label", "source", "info.*")
            .persist())
    try:
        def counts(col):
            return {str(r[col]): r["count"] for r in info.groupBy(col).count().orderBy(col).collect()}

        ok = info.filter(F.col("error").isNull())
        sizes = ok.agg(*[f(c).alias(f"{c}_{name}") for c in ("width", "height")
                         for name, f in (("min", F.min), ("max", F.max),
                                         ("median", lambda c: F.percentile_approx(c, 0.5)))]).first()
        report = {
            "images": info.count(),
            "by_label": counts("label"),
            "by_source": counts("source"),
            "formats": {k: v for k, v in counts("format").items() if k != "None"},
            "modes": {k: v for k, v in counts("mode").items() if k != "None"},
            "bit_depths": {k: v for k, v in counts("bits").items() if k != "None"},
            "width": {k: sizes[f"width_{k}"] for k in ("min", "median", "max")},
            "height": {k: sizes[f"height_{k}"] for k in ("min", "median", "max")},
            "undecodable": [(r.path, r.error) for r in info.filter(F.col("error").isNotNull())
                            .select("path", "error").collect()],
            "max_distance": max_distance,
            "duplicate_groups": duplicate_groups(ok, max_distance),
        }
    finally:
        info.unpersist()
    return report


def format_description(report):
    """:func:`describe`'s report as text for a terminal."""
    lines = [f"images: {report['images']}"]
    for key in ("by_label", "by_source", "formats", "modes", "bit_depths"):
        lines.append(f"{key.replace('_', ' ')}: " +
                     ", ".join(f"{k} {v}" for k, v in report[key].items()))
    for key in ("width", "height"):
        lines.append(f"{key}: min {report[key]['min']}, median {report[key]['median']}, "
                     f"max {report[key]['max']}")
    if report["undecodable"]:
        lines.append(f"undecodable: {len(report['undecodable'])}")
        lines += [f"  {reason}" for _, reason in report["undecodable"][:20]]
    groups = report["duplicate_groups"]
    lines.append(f"duplicate groups (sha256 equal, or perceptual hash within "
                 f"{report['max_distance']} bits): {len(groups)}")
    for g in groups:
        kind = "exact (same bytes)" if g["exact"] else f"near (distance <= {g['max_distance']})"
        warning = "  LABELS DIFFER" if g["label_conflict"] else ""
        lines.append(f"  {kind}, {'/'.join(g['labels'])}{warning}:")
        lines += [f"    {p}" for p in g["paths"]]
    return "\n".join(lines)


def merge(*frames, labels=("covid", "normal", "pneumonia")):
    """Combine image DataFrames of several sources into one.

    Each frame comes from :func:`covidspark.images.read_images` or
    :func:`read_dataset` with its own label mapping applied, so labels are
    already harmonised; this checks that they are, and that every frame has a
    ``source``. Find duplicates across sources afterwards with
    :func:`covidspark.duplicates.resolve_duplicates` (``source_priority`` says
    which copy to keep).

    Returns
    -------
    (pyspark.sql.DataFrame, dict)
        The union, and ``{source: {label: count}}``.

    Raises
    ------
    ValueError
        If a frame has a label outside ``labels`` (naming the source and label).
    """
    from functools import reduce

    from pyspark.sql import functions as F

    from covidspark.images import IMAGE_COLUMNS

    if not frames:
        raise ValueError("merge needs at least one DataFrame")
    union = reduce(lambda a, b: a.unionByName(b), [f.select(*IMAGE_COLUMNS) for f in frames])
    counts = {}
    for r in union.groupBy("source", "label").count().collect():
        counts.setdefault(r.source, {})[r.label] = r["count"]
    bad = [(s, lab) for s, per in counts.items() for lab in per if lab not in labels]
    if bad:
        raise ValueError("Labels not harmonised: " + ", ".join(
            f"source {s!r} has label {lab!r}" for s, lab in bad) +
            f"; map them to {', '.join(labels)} with label_map.")
    if union.filter(F.col("source").isNull()).limit(1).count():
        raise ValueError("Every merged row needs a source")
    return union, counts
