"""A quiet console: covidspark's own progress and results; Spark's and TensorFlow's logs on ``--verbose``.

Three sources fill a console that nobody reads:

- Spark's JVM logs at INFO from its first line. The jobs' JVM is configured by
  :data:`LOG4J2_CONFIG` (WARN), which ``covidspark spark-env --write`` gives
  ``spark-submit`` and :func:`covidspark.runtime.session.get_spark` gives a
  driver it starts; ``spark.log.level`` covers a JVM started by someone else.
- TensorFlow's native start-up lines (CUDA stubs, oneDNN notes) in every Python
  worker, printed below Python before ``TF_CPP_MIN_LOG_LEVEL`` is read; they
  are silenced around ``import tensorflow`` (:func:`quiet_native_stderr`).
- Python loggers of py4j, urllib3 and h5py.

``COVIDSPARK_VERBOSE=1`` (``--verbose``) keeps all of them.
"""
import contextlib
import logging
import os

#: Spark's log4j2 configuration for covidspark jobs: WARN, and covidspark's own INFO.
LOG4J2_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "log4j2.properties")

VERBOSE_ENV = "COVIDSPARK_VERBOSE"


def verbose():
    """True when ``--verbose`` (or ``COVIDSPARK_VERBOSE=1``) asked for every log."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0", "false")


def configure_logging(verbose_logs=False):
    """Logging of the ``covidspark`` command: INFO (DEBUG when verbose), quiet neighbours.

    With ``verbose_logs`` the setting reaches Spark (INFO) and the Python workers
    (native TensorFlow logs) through the environment they inherit.
    """
    if verbose_logs:
        os.environ[VERBOSE_ENV] = "1"
        os.environ.setdefault("COVIDSPARK_SPARK_LOG_LEVEL", "INFO")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
    logging.basicConfig(level=logging.DEBUG if verbose_logs else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("py4j", "urllib3", "h5py"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose_logs else logging.WARNING)


@contextlib.contextmanager
def quiet_native_stderr():
    """Send file descriptor 2 to /dev/null for the block, unless verbose.

    For native libraries that write to stderr below Python while they load
    (TensorFlow's CUDA-stub and oneDNN lines). Python-level exceptions raised in
    the block are unaffected: they are printed after it, when fd 2 is back.
    """
    if verbose():
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
