"""Known public chest X-ray sets: their layouts, label mappings, download, description, merging.

The embedded synthetic set lives in :mod:`covidspark.data.synthetic`.
"""
import dataclasses
import logging
import os

from covidspark.data.rejects import reject_line
from covidspark.errors import InputError, UserError

logger = logging.getLogger(__name__)

CLASSES = ("covid", "normal", "pneumonia")

# Folder names of the Ozturk et al. (2020) set (GitHub muhammedtalo/COVID-19).
OZTURK_LABEL_MAP = {"Covid-19": "covid", "No_findings": "normal", "Pneumonia": "pneumonia"}


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


class DatasetUnavailableError(UserError, RuntimeError):
    """A public data set could not be fetched; the message says how to fetch it by hand."""


def known_dataset(name):
    """The registry entry of a public data set (error lists the known names)."""
    try:
        return KNOWN_DATASETS[name]
    except KeyError:
        raise InputError(f"Unknown data set {name!r}. Known: {', '.join(KNOWN_DATASETS)}.") from None


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
            f"({by_hand}), then read it with covidspark.data.datasets.read_dataset(spark, "
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
            raise InputError(f"{metadata_csv}: no {needed!r} column; found {list(table.columns)}")
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

    Extra keyword arguments go to :func:`covidspark.data.reading.read_images`
    (``strict``, ``max_pixels``, ...).
    """
    from covidspark.data.reading import read_images

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
        As :func:`covidspark.data.reading.read_images` returns.
    max_distance : int, optional
        Perceptual-hash distance for near duplicates (default
        :data:`covidspark.data.duplicates.DEFAULT_MAX_DISTANCE`).

    Returns
    -------
    dict
        ``images``, ``by_label``, ``by_source``, ``formats``, ``modes``,
        ``bit_depths``, ``width`` / ``height`` (min, median, max), ``undecodable``
        and ``duplicate_groups``.
    """
    from pyspark.sql import functions as F

    from covidspark.data.duplicates import DEFAULT_MAX_DISTANCE, duplicate_groups
    from covidspark.data.ingest import has_info, inspect_images

    max_distance = DEFAULT_MAX_DISTANCE if max_distance is None else max_distance
    # read_images has decoded every image once already: its facts are reused.
    inspected = images if has_info(images) else inspect_images(images)
    info = (inspected.select("path", "image_id", "label", "source", "info.*")
            .drop("thumbnail").persist())
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
        lines += [f"  {reject_line(path, reason)}" for path, reason in report["undecodable"][:20]]
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

    Each frame comes from :func:`covidspark.data.reading.read_images` or
    :func:`read_dataset` with its own label mapping applied, so labels are
    already harmonised; this checks that they are, and that every frame has a
    ``source``. Find duplicates across sources afterwards with
    :func:`covidspark.data.duplicates.resolve_duplicates` (``source_priority`` says
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

    from covidspark.data.ingest import has_info
    from covidspark.data.reading import IMAGE_COLUMNS

    if not frames:
        raise InputError("merge needs at least one DataFrame")
    # The ingest pass's facts travel along when every frame has them.
    columns = IMAGE_COLUMNS + (["info"] if all(has_info(f) for f in frames) else [])
    union = reduce(lambda a, b: a.unionByName(b), [f.select(*columns) for f in frames])
    counts = {}
    for r in union.groupBy("source", "label").count().collect():
        counts.setdefault(r.source, {})[r.label] = r["count"]
    bad = [(s, lab) for s, per in counts.items() for lab in per if lab not in labels]
    if bad:
        raise InputError("Labels not harmonised: " + ", ".join(
            f"source {s!r} has label {lab!r}" for s, lab in bad) +
            f"; map them to {', '.join(labels)} with label_map.")
    if union.filter(F.col("source").isNull()).limit(1).count():
        raise InputError("Every merged row needs a source")
    return union, counts
