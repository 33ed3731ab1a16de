"""What a read of images returns or raises when files or rows are rejected.

A strict :func:`covidspark.data.reading.read_images` raises :class:`IngestError`
listing every bad file or row; a lenient one returns an :class:`IngestResult`
whose ``rejects`` table holds them, with ``accepted + rejected == total``.
"""
import dataclasses
import io
from functools import reduce

from covidspark.errors import InputError

REJECT_SCHEMA = "path string, reason string"


# How a workflow's caller (``train(TrainConfig(...))`` and the others) goes on without them.
WORKFLOW_ADVICE = "lenient=True skips them and reports them with the result, under rejected"


class IngestError(InputError):
    """Raised by a strict read; ``rejects`` is the list of ``(path, reason)``.

    ``what`` (the folder or manifest) and ``total`` (files or rows found) let a
    caller say it again in its own words (:func:`format_rejects`).
    """

    def __init__(self, message, rejects, what=None, total=None):
        super().__init__(message)
        self.rejects = rejects
        self.what = what
        self.total = total

    @classmethod
    def of(cls, what, rejects, total, instead=None):
        """The error of a read of ``what`` that found ``total`` and rejected ``rejects``.

        ``instead`` says how the caller's user goes on without the bad files
        (default: ``read_images``' own ``strict=False``).
        """
        advice = {} if instead is None else {"instead": instead}
        return cls(format_rejects(what, rejects, total, **advice), rejects, what, total)

    def in_a_workflow(self):
        """This error worded for a workflow's caller, who passes ``lenient=True``."""
        if self.total is None:
            return self
        return IngestError.of(self.what, self.rejects, self.total, instead=WORKFLOW_ADVICE)

    def command_line_message(self):
        """Names ``--lenient``, the flag that goes on without the bad files, not ``strict=False``."""
        if self.total is None:
            return str(self)
        return format_rejects(self.what, self.rejects, self.total,
                              instead="--lenient skips them and lists them with the results")


@dataclasses.dataclass
class IngestResult:
    """What a non-strict :func:`read_images` returns.

    Attributes
    ----------
    images : pyspark.sql.DataFrame
        The accepted images (columns :data:`covidspark.data.reading.IMAGE_COLUMNS`).
    rejects : pyspark.sql.DataFrame
        ``path, reason`` for every file or manifest row that was not accepted.
    total : int
        Files (or manifest rows) found; ``accepted + rejected == total``.
    rejected : int
    persisted : pyspark.sql.DataFrame or None
        The ingest pass's persisted table (``validate=True``), which ``images``
        reads; :meth:`unpersist` frees it.
    """

    images: object
    rejects: object
    total: int
    rejected: int
    persisted: object = None

    def unpersist(self, blocking=False):
        """Free the ingest pass's table (its bytes on the executors' disks) when done.

        ``images.unpersist()`` alone frees nothing once a file was rejected:
        ``images`` is then a filter over the persisted table, and Spark uncaches
        only the exact plan it cached.
        """
        if self.persisted is not None:
            self.persisted.unpersist(blocking)

    @property
    def accepted(self):
        """Number of accepted images."""
        return self.total - self.rejected


def reject_line(path, reason):
    """``path: reason``, the path once (where ``reason`` already starts with it)."""
    return reason if reason.startswith(path) else f"{path}: {reason}"


def reason_only(path, reason):
    """``reason`` without a leading ``path: `` (a decode error's message names its file)."""
    return reason[len(path) + 2:] if reason.startswith(f"{path}: ") else reason


def shown_rejects(rejects, limit=20):
    """The ``limit`` rejects a message prints: the first of each reason, then the rest in order.

    Cut at ``limit`` in path order, a list can show one reason twenty times and
    hide another: a tree with ``COVID/`` and ``Normal/`` folders printed only
    COVID's rows, so the map that ``Normal`` needed went unseen.
    """
    first = {}
    for index, (_, reason) in enumerate(rejects):
        first.setdefault(reason, index)
    picked = sorted(first.values())[:limit]
    chosen = set(picked)
    picked += [i for i in range(len(rejects)) if i not in chosen][:limit - len(picked)]
    return [rejects[i] for i in sorted(picked)]


def format_rejects(what, rejects, total, limit=20, instead="strict=False returns them as a table"):
    """One message for a list of ``(path, reason)``; ``instead`` says how to go on without them."""
    lines = "\n  ".join(reject_line(p, r) for p, r in shown_rejects(rejects, limit))
    more = f"\n  ... and {len(rejects) - limit} more" if len(rejects) > limit else ""
    return (f"{what}: {len(rejects)} of {total} file(s) or row(s) rejected "
            f"({instead}):\n  {lines}{more}")


def rejects_csv(rejects):
    """``path,reason`` CSV text of ``rejects``, a header first (quoted as CSV needs)."""
    import csv

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "reason"])
    writer.writerows(rejects)
    return text.getvalue()


def summary_lines(rejects, listed_in, limit=20):
    """The lines a lenient command prints for its rejects: the first ``limit``, and where all are.

    ``rejects``: ``(path, reason)`` pairs, or metrics.json's ``{"path", "reason"}``
    entries. ``listed_in``: where the whole list was written (the printed list is
    cut at ``limit`` lines, so a run with thousands of bad files loses none of them).
    """
    rejects = [(r["path"], r["reason"]) if isinstance(r, dict) else r for r in rejects]
    lines = [f"  rejected {reject_line(p, r)}" for p, r in shown_rejects(rejects, limit)]
    if len(rejects) > limit:
        lines.append(f"  ... and {len(rejects) - limit} more")
    if len(rejects) == 1:
        lines.append(f"  the rejected file, with its reason: {listed_in}")
    elif rejects:
        lines.append(f"  all {len(rejects)} rejected files, with their reasons: {listed_in}")
    return lines


def union_reads(results):
    """Union of several :func:`~covidspark.data.reading.read_images` results.

    DataFrames from strict reads, :class:`IngestResult` from lenient ones (their
    counts added up).
    """
    def union_all(frames):
        return reduce(lambda a, b: a.unionByName(b), frames)

    if len(results) == 1:
        return results[0]
    if isinstance(results[0], IngestResult):
        return IngestResult(images=union_all([r.images for r in results]),
                            rejects=union_all([r.rejects for r in results]),
                            total=sum(r.total for r in results),
                            rejected=sum(r.rejected for r in results))
    return union_all(results)
