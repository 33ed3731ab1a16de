"""SparkSession set-up that makes the Python workers use the driver's environment.

A plain ``spark-submit`` (or ``SparkSession.builder``) starts its Python workers
on ``python3`` from the PATH, which in a virtual environment that was not
activated lacks pandas, pyarrow and TensorFlow. Two fixes, both used by
``make``:

- :func:`get_spark` sets ``PYSPARK_PYTHON`` to the running interpreter before
  it starts a local-mode SparkContext (unless the user set it; never for a
  cluster master, whose nodes do not have this path).
- :func:`write_spark_env` makes the venv's ``spark-submit`` default to the
  venv's Python for the driver and the workers, activated or not.
"""
import contextlib
import logging
import os
import sys

from covidspark.errors import InputError, InputNotFoundError
from covidspark.runtime.masters import (require_yarn_config, start_error, stopped_context_error,
                                        wait_for_master)
from covidspark.runtime.logs import LOG4J2_CONFIG, verbose
from covidspark.runtime.remote import shown_url

logger = logging.getLogger(__name__)

_SPARK_ENV_MARKER = "# covidspark: use this virtual environment's Python"

# Settings the featurizer relies on; see README "Spark settings".
DEFAULT_CONF = {
    # One Keras model per Python worker is only possible when workers are reused.
    "spark.python.worker.reuse": "true",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}


def get_spark(app_name="covidspark", master=None, conf=None, remote=None):
    """Return the active SparkSession, or start one configured for covidspark.

    Parameters
    ----------
    app_name : str
        Application name shown in the Spark UI (``spark-submit --name`` wins).
    master : str, optional
        e.g. ``"local[2]"`` or ``"spark://host:7077"``. By default the master
        given to ``spark-submit`` is used, or ``local[*]``.
    conf : dict, optional
        Extra Spark settings (override :data:`DEFAULT_CONF` and submitted ones).
    remote : str, optional
        A Spark Connect URL, ``sc://host:port`` (default: ``SPARK_REMOTE``, or
        ``spark-submit --remote``'s; :func:`connect_url`): a Connect session.

    Returns
    -------
    pyspark.sql.SparkSession
        An existing session (Databricks, a notebook, spark-submit) is returned
        unchanged: its settings are the cluster's to decide.

    Notes
    -----
    Local-mode defaults (8 shuffle partitions, this interpreter as the workers'
    ``PYSPARK_PYTHON``) apply only when the master is ``local``: on a cluster
    the workers' Python and the partition count are the cluster's settings, and
    this machine's interpreter path means nothing on another node.

    covidspark's settings are defaults: any given to Spark itself
    (``spark-submit --conf``, ``spark-defaults.conf``, ``PYSPARK_SUBMIT_ARGS``)
    wins (:func:`submitted_settings`), and only ``conf`` overrides those.
    Spark's console bar is off while stderr is not a terminal (a log file).
    """
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    if master and master.startswith("sc://"):
        raise InputError(f"--master {shown_url(master)}: a Spark Connect URL, not a Spark "
                         f"master; give it as --remote (or SPARK_REMOTE, spark-submit --remote)")
    active = SparkSession.getActiveSession()
    if active is not None:
        if master or remote:  # a notebook's session is the cluster's to decide
            logger.warning("An active Spark session is used as it is; %s is ignored",
                           f"--master {master}" if master else f"--remote {shown_url(remote)}")
        return active
    remote = remote or connect_url()
    if remote:
        return _connect_session(app_name, remote, master, conf)
    # Decided before resolve_master may connect to spark-submit's JVM.
    own_jvm = SparkContext._jvm is None and "PYSPARK_GATEWAY_PORT" not in os.environ
    resolved = resolve_master(master)
    if resolved.startswith(("spark://", "k8s://")):  # before Spark's own retries
        wait_for_master(resolved)
    local = is_local_master(resolved)
    if local:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    defaults = dict(DEFAULT_CONF, **{"spark.app.name": app_name})
    # Applied when the SparkContext starts (Spark >= 3.5): spark-submit's default is INFO.
    defaults["spark.log.level"] = "WARN"
    if local:
        # A laptop-sized default; 200 shuffle partitions of a few rows each is overhead.
        defaults["spark.sql.shuffle.partitions"] = LOCAL_SHUFFLE_PARTITIONS
    launch = {}
    if not _is_terminal(sys.stderr):
        # Spark's bar redraws itself with carriage returns: in a log file (an EMR
        # step's stderr, CI) it is line after line of noise beside covidspark's progress.
        defaults["spark.ui.showConsoleProgress"] = "false"
        if own_jvm:
            # pyspark starts its JVM as a shell, which turns the bar on unless told.
            launch["spark.ui.showConsoleProgress"] = "false"
    java_options = missing_native_math_options() if local and own_jvm else []
    if not verbose() and own_jvm and "SPARK_SUBMIT_OPTS" not in os.environ:
        # A JVM this call starts logs at WARN from its first line (not only once the
        # context is up); one started by spark-submit got it from `spark-env --write`.
        java_options.insert(0, f"-Dlog4j2.configurationFile=file:{LOG4J2_CONFIG}")
    if java_options:
        launch["spark.driver.extraJavaOptions"] = " ".join(java_options)
    if own_jvm:
        # Settings that act only when the JVM starts (spark.driver.memory) must be
        # there when this call starts it: the caller's conf goes with the launch.
        launch.update(conf or {})
    # covidspark's defaults yield to what the user gave Spark itself (pyspark's
    # convention): spark-submit's --conf, spark-defaults.conf, PYSPARK_SUBMIT_ARGS.
    submitted = submitted_settings(launch)
    if resolved == "yarn":  # the JVM runs now: its class path has the Hadoop configuration
        require_yarn_config({**submitted, **(conf or {})})
    if submitted.get("spark.app.name", "") in _default_app_names(sys.argv):
        submitted.pop("spark.app.name", None)  # spark-submit's name when --name gave none
    settings = {key: value for key, value in defaults.items() if key not in submitted}
    kept = sorted(set(defaults) & set(submitted))
    if kept:
        logger.info("Spark settings as submitted, not covidspark's defaults: %s",
                    ", ".join(f"{key}={submitted[key]}" for key in kept))
    if os.environ.get("COVIDSPARK_SPARK_LOG_LEVEL"):
        settings["spark.log.level"] = os.environ["COVIDSPARK_SPARK_LOG_LEVEL"]
    settings.update(conf or {})
    builder = SparkSession.builder.master(master) if master else SparkSession.builder
    for key, value in settings.items():
        builder = builder.config(key, value)
    try:
        session = builder.getOrCreate()
    except Exception as exc:
        error = start_error(resolved, exc)
        if error is None:
            raise
        raise error from None
    # pyspark 3.5 may hand the session back while Spark stops its context; 4.x raises.
    stopped = stopped_context_error()
    if stopped is not None:
        raise stopped
    return session


#: MLlib's netlib loaders: the system library each one opens, and the property that stops it.
_NATIVE_MATH = (("libblas.so.3", "blas"), ("liblapack.so.3", "lapack"),
                ("libarpack.so.2", "arpack"))


def missing_native_math_options():
    """``-D`` options that keep MLlib from opening system BLAS/LAPACK/ARPACK that are absent.

    Where a library is missing, netlib's native code prints ``netlib-blas:
    JNI_OnLoad: dlopen(libblas.so.3) failed`` to stderr in the middle of a job
    and MLlib goes on with its Java implementation. This process opens each
    library as netlib would; for the absent ones netlib is told not to try, so
    the same Java code runs without the line. Linux only (the names are Linux's),
    for the local-mode JVM this process starts: a cluster's nodes have their own.
    """
    if not sys.platform.startswith("linux"):
        return []
    import ctypes

    options = []
    for library, name in _NATIVE_MATH:
        try:
            ctypes.CDLL(library)
        except OSError:
            options.append(f"-Ddev.ludovic.netlib.{name}.allowNative=false")
    return options


def _default_app_names(argv):
    """The names spark-submit gives an application without ``--name``: its script's, the shell's."""
    return {os.path.basename(argv[0]) if argv else "", "", "PySparkShell", "pyspark-shell"}


def submitted_settings(launch=None):
    """The Spark settings this process's JVM was given: ``{key: value}``.

    spark-submit's ``--conf`` flags, ``spark-defaults.conf`` and
    ``PYSPARK_SUBMIT_ARGS`` reach the driver JVM as system properties, which a
    new ``SparkConf`` loads. Without a running JVM this starts one (the gateway
    pyspark would start anyway), given ``launch``: settings that must be there
    from the JVM's first line. A launch setting counts as submitted only where
    the user's own overrode it (``PYSPARK_SUBMIT_ARGS`` comes after it).
    """
    from pyspark import SparkConf, SparkContext

    launch = launch or {}
    SparkContext._ensure_initialized(
        conf=SparkConf(loadDefaults=False).setAll(launch.items()) if launch else None)
    return {key: value for key, value in SparkConf().getAll() if launch.get(key) != value}


def _is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced by an object without it, or closed
        return False


def connect_url():
    """The Spark Connect URL this process is to use, or None.

    ``SPARK_REMOTE``, or ``spark-submit --remote``'s URL: spark-submit hands a
    Python application its settings as ``PYSPARK_REMOTE_INIT_CONF_<i>`` (JSON)
    and sets no ``SPARK_REMOTE``, so pyspark's own builder (4.3) asks for a master.
    """
    import json

    if os.environ.get("SPARK_REMOTE"):
        return os.environ["SPARK_REMOTE"]
    for i in range(int(os.environ.get("PYSPARK_REMOTE_INIT_CONF_LEN", "0") or 0)):
        remote = json.loads(os.environ.get(f"PYSPARK_REMOTE_INIT_CONF_{i}", "{}")).get(
            "spark.remote", "")
        if remote.startswith("sc://"):
            return remote
    return None


def _connect_session(app_name, remote, master, conf):
    """A Spark Connect session: the server's settings are its own; only SQL settings apply."""
    from pyspark.sql import SparkSession

    from covidspark.runtime.remote import wait_for_listener, waiting_lines, watch_connection

    if master:
        logger.warning("Spark Connect session at %s: --master %s is ignored",
                       shown_url(remote), master)
    wait_for_listener(remote)
    with waiting_lines(remote):
        session = SparkSession.builder.remote(remote).appName(app_name).getOrCreate()
    watch_connection(session, remote)
    _stop_at_exit(session, remote)
    for key, value in (conf or {}).items():
        if key.startswith("spark.sql."):
            session.conf.set(key, value)
        else:
            logger.info("Spark Connect: %s is the server's setting; not changed", key)
    return session


_STOPPED_AT_EXIT = set()


def _stop_at_exit(session, url):
    """Stop a Spark Connect session when the interpreter exits, before its objects are freed.

    A pyspark.ml model on Connect releases its server-side copy from ``__del__``.
    At interpreter exit that call can block forever (SPARK-52764, SPARK-59292): a
    job that loaded a ``PipelineModel`` wrote its output and never ended. Once the
    session is stopped those releases do nothing, and the server drops the
    session's models with the session. atexit runs this before the client's own
    exit handler (registered earlier), which then finds the client closed. The
    session is released within seconds (:func:`~covidspark.runtime.remote.release_at_exit`):
    with pyspark's retries, a process whose server had gone waited ten more minutes.
    """
    import atexit

    if id(session) in _STOPPED_AT_EXIT:
        return
    _STOPPED_AT_EXIT.add(id(session))

    def stop():
        if not getattr(session, "is_stopped", False):  # pyspark 3.5 has no is_stopped
            from covidspark.runtime.remote import release_at_exit

            release_at_exit(session, url)
            session.stop()

    atexit.register(stop)


#: ``spark.sql.shuffle.partitions`` in local mode (a cluster keeps its own, 200 by default).
LOCAL_SHUFFLE_PARTITIONS = "8"


def is_local_master(master):
    """True for ``local``, ``local[N]``, ``local[*]`` and ``local-cluster[...]`` masters."""
    return master.startswith("local")


def resolve_master(master=None):
    """The master a new session of this process will run on.

    ``master`` if given; under ``spark-submit`` (whose JVM is already running and
    holds ``--master`` as the ``spark.master`` property) that value; otherwise a
    ``--master`` in ``PYSPARK_SUBMIT_ARGS``, or Spark's own default, ``local[*]``.
    """
    if master:
        return master
    if "PYSPARK_GATEWAY_PORT" in os.environ:
        from pyspark import SparkContext

        SparkContext._ensure_initialized()
        value = SparkContext._jvm.java.lang.System.getProperty("spark.master")
        if value:
            return value
    submit_args = os.environ.get("PYSPARK_SUBMIT_ARGS", "").split()
    if "--master" in submit_args[:-1]:
        return submit_args[submit_args.index("--master") + 1]
    return "local[*]"


def find_spark_home_script():
    """The pip-installed ``find-spark-home`` next to this interpreter, or None."""
    bindir = os.path.dirname(sys.executable)
    script = os.path.join(bindir, "find-spark-home")
    if os.path.isfile(script) and os.path.isfile(os.path.join(bindir, "find_spark_home.py")):
        return script
    return None


def write_spark_env(python=None):
    """Make this environment's ``spark-submit`` and ``pyspark`` use ``python``.

    pip's ``spark-submit`` finds Spark, and then starts the driver and the
    workers, with ``python3`` from the PATH unless ``PYSPARK_PYTHON`` is set; from
    a virtual environment that was not activated that is the system Python,
    which lacks pyspark, pandas and TensorFlow. This adds one marked line to the
    environment's ``bin/find-spark-home`` (which ``spark-submit`` sources first)
    that defaults ``PYSPARK_PYTHON`` to ``python``; an exported value still wins.
    Re-running it replaces the line; reinstalling pyspark removes it.

    Parameters
    ----------
    python : str, optional
        Interpreter to use; defaults to the running one.

    Returns
    -------
    str
        The path written.

    Raises
    ------
    FileNotFoundError
        If this interpreter's environment has no pip-installed pyspark scripts.
    """
    python = python or sys.executable
    script = find_spark_home_script()
    if script is None:
        raise InputNotFoundError(
            f"No pip-installed find-spark-home next to {sys.executable}; "
            f"export PYSPARK_PYTHON={python} instead."
        )
    with open(script) as f:
        lines = [line for line in f.read().splitlines()
                 if not line.startswith(_SPARK_ENV_MARKER)
                 and not line.startswith('export PYSPARK_PYTHON="${PYSPARK_PYTHON:-')
                 and "-Dlog4j2.configurationFile=file:" not in line]
    block = [
        f"{_SPARK_ENV_MARKER} (an exported PYSPARK_PYTHON wins); "
        "written by `covidspark spark-env --write`",
        f'export PYSPARK_PYTHON="${{PYSPARK_PYTHON:-{python}}}"',
        # Spark's own start-up logs at WARN (COVIDSPARK_VERBOSE=1 or --verbose: Spark's default).
        f'{_SPARK_ENV_MARKER}: quiet Spark start-up',
        f'[ -n "$COVIDSPARK_VERBOSE" ] || export SPARK_SUBMIT_OPTS="${{SPARK_SUBMIT_OPTS:-'
        f'-Dlog4j2.configurationFile=file:{LOG4J2_CONFIG}}}"',
    ]
    # After the shebang, before anything that runs Python.
    lines = lines[:1] + block + lines[1:]
    with open(script, "w") as f:
        f.write("\n".join(lines) + "\n")
    return script


def worker_python(spark):
    """The interpreter the Python workers actually run (one tiny Spark job; classic or Connect)."""
    from pyspark.sql.functions import udf

    probe = udf(lambda _: __import__("sys").executable, "string")
    return spark.range(1).select(probe("id")).first()[0]


@contextlib.contextmanager
def temporary_conf(spark, key, value):
    """Set the runtime SQL setting ``key`` to ``value`` while the ``with`` block runs.

    The session's own value (or its absence) is restored afterwards, also on error:
    a library call must not change the user's session.
    """
    previous = spark.conf.get(key, None)
    spark.conf.set(key, str(value))
    try:
        yield
    finally:
        if previous is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, previous)
