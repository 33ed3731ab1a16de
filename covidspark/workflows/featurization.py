"""The featurize workflow: fill a feature store; a rerun computes only the images it lacks."""
import dataclasses
import logging
import os
import time

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
    """

    images: int
    computed: int
    reused: int
    rejected: list
    location: str
    seconds: float
    files_not_read: int = 0

    def summary(self):
        """The text ``covidspark featurize`` prints."""
        return (f"{self.images} images: {self.computed} computed, {self.reused} reused "
                f"({self.seconds:.1f} s); {len(self.rejected)} rejected; "
                f"{self.files_not_read} stored files not read (same size and time)\n"
                f"features: {self.location}")


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
    spark = get_spark(f"covidspark-featurize-{config.model}", master=config.master)
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
    return FeaturizeResult(images=stats["images"], computed=stats["computed"],
                           reused=stats["reused"], rejected=rejects,
                           location=os.fspath(stats["location"]),
                           seconds=time.time() - started, files_not_read=not_read)
