"""Progress of long Spark work on the driver: images done / total, rate and ETA.

Spark's UI shows stages and tasks; a job's log should also say, in the
user's units, how far it is. :class:`Progress` polls a counter (usually
:meth:`DeepImageFeaturizer.imagesFeaturized`, a Spark accumulator that grows
as tasks finish) from a daemon thread and logs one line every ``interval``
seconds, and a last line when the work ends.
"""
import contextlib
import logging
import threading
import time

logger = logging.getLogger(__name__)


def format_progress(label, done, total, elapsed, unit="images"):
    """``"featurize ResNet50: 480/1124 images (42.7 %), 6.9 images/s, ETA 93 s"``."""
    rate = done / elapsed if elapsed > 0 else 0.0
    line = f"{label}: {done}/{total} {unit}" if total is not None else f"{label}: {done} {unit}"
    if total:
        line += f" ({100.0 * done / total:.1f} %)"
    line += f", {rate:.1f} {unit}/s"
    if total and done and done < total and rate > 0:
        line += f", ETA {(total - done) / rate:.0f} s"
    return line


class Progress:
    """Log progress of ``counter()`` towards ``total`` while the ``with`` block runs.

    Parameters
    ----------
    label : str
        What is being done, e.g. ``"featurize ResNet50"``.
    total : int
        Images (``unit``) expected.
    counter : callable
        Returns the images done so far (read on the driver).
    interval : float
        Seconds between lines.
    unit : str
        What is counted, as the lines say it (``"images"``; the ingest pass
        counts ``"files"``, bad ones included).

    Examples
    --------
    >>> with Progress("featurize", n, featurizer.imagesFeaturized):   # doctest: +SKIP
    ...     features.count()
    """

    def __init__(self, label, total, counter, interval=10.0, log=None, unit="images"):
        self.label, self.total, self.counter, self.interval = label, total, counter, interval
        self.unit = unit
        self.log = log or logger.info
        self.lines = []
        self._stop = threading.Event()
        self._thread = None
        self._start = None
        self._base = 0

    def _emit(self):
        line = format_progress(self.label, self.counter() - self._base, self.total,
                               time.time() - self._start, self.unit)
        self.lines.append(line)
        self.log(line)

    def _run(self):
        while not self._stop.wait(self.interval):
            self._emit()

    def __enter__(self):
        self._start = time.time()
        self._base = self.counter()
        self._thread = threading.Thread(target=self._run, name="covidspark-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._emit()
        return False


def featurize_progress(featurizer):
    """``progress(n)``: a :class:`Progress` of ``n`` images through ``featurizer``'s network.

    Labelled ``featurize with <model>`` and counted by ``imagesFeaturized``; what
    :meth:`covidspark.ml.feature_store.FeatureStore.featurize` takes as ``progress``.
    """
    label = f"featurize with {featurizer.getModelName()}"
    return lambda images: Progress(label, images, featurizer.imagesFeaturized)


class Stopwatch:
    """Seconds the driver spent in each named step of a job (``metrics.json``'s ``timing_s``).

    Spark is lazy: a step's seconds are those it waited for, including work an
    earlier step only planned. Each step is logged as it ends.

    Examples
    --------
    >>> watch = Stopwatch()
    >>> with watch.step("fit"):   # doctest: +SKIP
    ...     model = pipeline.fit(features)
    >>> watch.seconds()           # doctest: +SKIP
    {'fit': 12.31, 'total': 12.31}
    """

    def __init__(self):
        self._started = time.time()
        self._steps = {}

    @contextlib.contextmanager
    def step(self, name):
        """Time the ``with`` block as ``name`` (added to any earlier time of that name)."""
        start = time.time()
        try:
            yield
        finally:
            took = time.time() - start
            self._steps[name] = self._steps.get(name, 0.0) + took
            logger.info("%s: %.1f s", name, took)

    def seconds(self):
        """``{step: seconds, ..., "total": seconds since the stopwatch was made}``, rounded."""
        timed = {name: round(took, 2) for name, took in self._steps.items()}
        return {**timed, "total": round(time.time() - self._started, 2)}
