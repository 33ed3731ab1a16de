"""The featurize workflow: fill a feature store; a rerun computes only the images it lacks."""
import dataclasses
import logging
import os
import time
import uuid
from typing import Optional

from covidspark.runtime import lineage
from covidspark.workflows import steps

logger = logging.getLogger("covidspark")


@dataclasses.dataclass
class FeaturizeResult:
    """What :func:`featurize` did.

    Attributes
    ----------
    images, computed, reused : int
        Images in the store for this featurizer; computed now; found there already.
    rejected : list of (str, str)
        ``(path, reason)`` of files a lenient read skipped.
    location : str
        The store's folder for this featurizer.
    seconds : float
    files_not_read : int
        Stored images whose files were not read: listed with the size and
        modification time they had when they were stored.
    rejected_out : str or None
        The CSV (``path,reason``) of every rejected file, written under
        ``location`` (``rejected/<time>-<id>.csv``) when there are any.
    """

    images: int
    computed: int
    reused: int
    rejected: list
    location: str
    seconds: float
    files_not_read: int = 0
    rejected_out: Optional[str] = None

    def summary(self):
        """The text ``covidspark featurize`` prints."""
        from covidspark.data.rejects import summary_lines

        return "\n".join([
            f"{self.images} images: {self.computed} computed, {self.reused} reused "
            f"({self.seconds:.1f} s); {len(self.rejected)} rejected; "
            f"{self.files_not_read} stored files not read (same size and time)",
            *summary_lines(self.rejected, self.rejected_out and steps.shown(self.rejected_out)),
            f"features: {self.location}"])


@lineage.frees_what_it_keeps
def featurize(config):
    """Featurize the config's images into its feature store (only the missing ones).

    Parameters
    ----------
    config : covidspark.workflows.FeaturizeConfig

    Returns
    -------
    FeaturizeResult
    """
    from covidspark.ml.feature_store import DEFAULT_CHUNK_SIZE, FeatureStore
    from covidspark.runtime.progress import featurize_progress
    from covidspark.runtime.session import get_spark

    config.validate()
    notes = []
    spark = get_spark(f"covidspark-featurize-{config.model}", master=config.master,
                      remote=config.remote)
    started = time.time()
    featurizer, _ = steps.make_featurizer(config, notes)
    store = FeatureStore(spark, config.features)
    # Images the store holds decoded when they were stored, so the ingest pass
    # decodes only the new ones; files listed as they were then are not even read.
    known = store.known_files(featurizer)
    images, _, _, rejects = steps.read_input(spark, config, notes,
                                             stored_ids=store.stored_ids(featurizer),
                                             known_files=known)
    _, stats = store.featurize(images, featurizer,
                               chunk_size=config.chunk_size or DEFAULT_CHUNK_SIZE,
                               progress=featurize_progress(featurizer))
    not_read = len(known.not_read)
    store.remember_files(featurizer, images, known)
    location = os.fspath(stats["location"])
    rejected_out = None
    if rejects:
        # Kept with the store (each run its own file): rejected files have no
        # features, and a summary lists only the first few.
        from covidspark.data.rejects import rejects_csv
        from covidspark.runtime.filesystem import join

        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started))
        rejected_out = join(location, "rejected", f"{stamp}-{uuid.uuid4().hex[:8]}.csv")
        store.files.write_text(rejected_out, rejects_csv(rejects))
    return FeaturizeResult(images=stats["images"], computed=stats["computed"],
                           reused=stats["reused"], rejected=rejects, location=location,
                           seconds=time.time() - started, files_not_read=not_read,
                           rejected_out=rejected_out)
