"""The describe workflow: counts, sizes, bit depths, modes and duplicates of an image collection."""
import dataclasses
import json
from typing import Optional

from covidspark.workflows.config import parse_label_map


@dataclasses.dataclass
class DescribeConfig:
    """What ``covidspark datasets describe`` reads.

    Attributes
    ----------
    path : str
        A class-folder tree, or the root of a known data set.
    dataset : str, optional
        Read ``path`` with this known data set's layout and label mapping.
    label_map : dict or str, optional
    max_distance : int, optional
        Perceptual-hash bits for near duplicates (default 2).
    json_out : str, optional
        Also write the report as JSON here.
    master : str, optional
    remote : str, optional
        Spark Connect URL ``sc://host:port`` instead of a master.
    """

    path: Optional[str] = None
    dataset: Optional[str] = None
    label_map: Optional[dict] = None
    max_distance: Optional[int] = None
    json_out: Optional[str] = None
    master: Optional[str] = None
    remote: Optional[str] = None

    def __post_init__(self):
        self.label_map = parse_label_map(self.label_map)


def describe_dataset(config):
    """Describe a collection; every unreadable file is listed, not dropped.

    Returns
    -------
    dict
        :func:`covidspark.data.datasets.describe`'s report plus ``rejected``
        (``[path, reason]`` pairs).
    """
    from covidspark.data import datasets
    from covidspark.data.reading import read_images
    from covidspark.runtime.session import get_spark

    spark = get_spark("covidspark-describe", master=config.master, remote=config.remote)
    if config.dataset:
        result = datasets.read_dataset(spark, config.dataset, config.path, strict=False)
    else:
        result = read_images(spark, config.path, label_map=config.label_map, strict=False)
    report = datasets.describe(spark, result.images, config.max_distance)
    report["rejected"] = [(r.path, r.reason) for r in result.rejects.collect()]
    if config.json_out:
        from covidspark.runtime.filesystem import Files

        Files(spark).write_text(config.json_out, json.dumps(report, indent=2))
    return report


def format_report(report, json_out=None):
    """The text ``covidspark datasets describe`` prints.

    ``json_out``: where ``--json`` wrote the report (its ``rejected`` lists every
    reject; the text lists the first 20).
    """
    from covidspark.data.datasets import format_description
    from covidspark.data.rejects import summary_lines

    lines = [format_description(report)]
    if report["rejected"]:
        lines.append(f"rejected: {len(report['rejected'])}")
        lines += summary_lines(report["rejected"],
                               f"{json_out}, under rejected" if json_out
                               else "run again with --json FILE to write them")
    return "\n".join(lines)
