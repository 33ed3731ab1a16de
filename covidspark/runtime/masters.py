"""Reaching the cluster manager a classic session runs on, and naming its failures.

Spark's clients retry a server that is not there without a word a user can act
on: a standalone master's client three times 20 s apart, after which Spark
logs "All masters are unresponsive" and stops the context it was starting
(pyspark then raises "Cannot call methods on a stopped SparkContext" or the
like); YARN's client the ResourceManager for 15 minutes; pyspark's Connect
client (:mod:`covidspark.runtime.remote`) for about ten. A plain TCP connection
to the server's host and port (:func:`wait_for_listener`) says at once whether
anything listens there; it is retried for a while for a server that is still
starting. YARN's ResourceManager is found through the Hadoop configuration,
which must be there.
"""
import logging
import socket
import time
import urllib.parse

from covidspark.errors import InputError

logger = logging.getLogger(__name__)

#: A standalone master's port when its URL gives none (Spark's default).
DEFAULT_MASTER_PORT = 7077
#: Seconds to wait for something to listen at a standalone master's port.
MASTER_WAIT_S = 30.0


def wait_for_listener(addresses, name, advice, wait_s):
    """Return once something accepts TCP connections at one of ``addresses``.

    Parameters
    ----------
    addresses : list of (str, int)
        ``(host, port)``: several for a master with standbys.
    name : str
        The server as errors and lines name it (``Spark master spark://h:7077``).
    advice : str
        What to do when nothing listens (the last words of the error).
    wait_s : float
        How long to wait, with a line once waiting has begun.

    Raises
    ------
    InputError
        A host is unknown, or nothing listened at any address for ``wait_s``.
    """
    deadline = time.monotonic() + wait_s
    shown = _shown(addresses)
    told = False
    while True:
        reason, unknown_host = _connect_to_one(addresses)
        if reason is None:
            return
        if unknown_host:
            raise InputError(f"{name}: {reason}")
        if time.monotonic() >= deadline:
            raise InputError(f"{name}: nothing listens at {shown} ({reason}) after "
                             f"{wait_s:.0f} s; {advice}")
        if not told:
            logger.warning("%s: nothing listens at %s yet (%s); waiting up to %.0f s",
                           name, shown, reason, wait_s)
            told = True
        time.sleep(1.0)


def _shown(addresses):
    """``host:port, host:port`` as lines and errors name the addresses."""
    return ", ".join(f"{host}:{port}" for host, port in addresses)


def _connect_to_one(addresses):
    """``(None, False)`` once one of ``addresses`` accepts a TCP connection, else
    ``(why not, whether a host is unknown)``."""
    reason = None
    for host, port in addresses:
        try:
            socket.create_connection((host, port), timeout=5).close()
            return None, False
        except socket.gaierror as exc:
            if exc.errno != socket.EAI_AGAIN:  # EAI_AGAIN: the resolver may answer later
                return f"host {host!r} not found ({exc.strerror or exc})", True
            reason = exc.strerror or str(exc)
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
    return reason.lower(), False


def master_addresses(master):
    """``[(host, port)]`` of a standalone master URL ``spark://h1[:p1][,h2[:p2]...]``, or of
    a Kubernetes API server's, ``k8s://[https://]host[:port]`` (https when no scheme)."""
    if master.startswith("k8s://"):
        url = master[len("k8s://"):]
        parsed = urllib.parse.urlparse(url if "://" in url else "https://" + url)
        return [(parsed.hostname, parsed.port or (80 if parsed.scheme == "http" else 443))]
    addresses = []
    for part in master[len("spark://"):].split(","):
        host, colon, port = part.strip().rpartition(":")
        if not colon or not port.isdigit():  # no port: Spark's default
            host, port = part.strip(), DEFAULT_MASTER_PORT
        addresses.append((host.strip("[]"), int(port)))
    return addresses


def wait_for_master(master, wait_s=None):
    """Return once something listens at a ``spark://`` or ``k8s://`` master's host and port.

    A Kubernetes API server behind an HTTP proxy (``HTTPS_PROXY``, which
    Spark's Kubernetes client follows) is not checked.

    Raises
    ------
    InputError
        Nothing listened there for ``wait_s`` (default :data:`MASTER_WAIT_S`)
        seconds, or a host is unknown.
    """
    from covidspark.runtime.remote import proxy_configured

    wait_s = MASTER_WAIT_S if wait_s is None else wait_s
    if not master.startswith("k8s://"):
        advice = "start the master (cluster_configs/standalone/cluster.sh start), or check"
    elif proxy_configured():
        return
    else:
        advice = "check that this machine reaches the cluster's API server, and"
    wait_for_listener(master_addresses(master), f"Spark master {master}",
                      f"{advice} the URL (--master, or spark-submit's)", wait_s)


def require_yarn_config(settings):
    """Raise :class:`InputError` when ``--master yarn`` has no ResourceManager to find.

    Hadoop's YARN client reads ``yarn-site.xml`` from the driver JVM's class
    path (where Spark's launcher puts ``HADOOP_CONF_DIR`` and ``YARN_CONF_DIR``,
    also when ``spark-env.sh`` sets them); without one, and without
    ``spark.hadoop.yarn.resourcemanager.*`` in ``settings`` (the session's
    Spark settings), it retries the default ResourceManager, 0.0.0.0:8032, for
    15 minutes (``yarn.resourcemanager.connect.max-wait.ms``), logged at INFO
    only. spark-submit refuses such a launch itself; a session that pyspark
    starts is not checked. Call once the driver JVM runs.
    """
    from pyspark import SparkContext

    if any(key.startswith("spark.hadoop.yarn.resourcemanager.") for key in settings):
        return
    loader = SparkContext._jvm.java.lang.Thread.currentThread().getContextClassLoader()
    if loader.getResource("yarn-site.xml") is not None:
        _say_if_no_resource_manager(settings)
        return
    raise InputError("--master yarn (or spark-submit's): the driver finds no yarn-site.xml "
                     "(HADOOP_CONF_DIR and YARN_CONF_DIR unset, or without it), so Spark cannot "
                     "find the ResourceManager (it would try 0.0.0.0:8032 for 15 minutes); run "
                     "on a node of the cluster (EMR's primary node has them) or export "
                     "HADOOP_CONF_DIR=/etc/hadoop/conf")


def _say_if_no_resource_manager(settings):
    """Log a line when nothing listens at the ResourceManager(s) the configuration names.

    A line, not an error: Hadoop's client may reach them in ways a plain TCP
    connection does not (a SOCKS socket factory), and it retries for as long as
    ``yarn.resourcemanager.connect.max-wait.ms`` says, silently.
    """
    from pyspark import SparkContext

    try:
        yarn = SparkContext._jvm.org.apache.hadoop.yarn.conf
        conf = yarn.YarnConfiguration()
        for key, value in settings.items():  # as Spark hands them to Hadoop
            if key.startswith("spark.hadoop."):
                conf.set(key[len("spark.hadoop."):], value)
        ids = list(yarn.HAUtil.getRMHAIds(conf)) if yarn.HAUtil.isHAEnabled(conf) else [""]
        addresses = []
        for rm in ids:
            suffix = f".{rm}" if rm else ""
            address = conf.get(f"yarn.resourcemanager.address{suffix}") or (
                f"{conf.get(f'yarn.resourcemanager.hostname{suffix}') or '0.0.0.0'}:8032")
            host, _, port = address.rpartition(":")
            addresses.append((host, int(port)))
        wait_s = conf.getLong("yarn.resourcemanager.connect.max-wait.ms", 900000) / 1000
    except Exception:  # noqa: BLE001 - a configuration this does not read: Hadoop's to say
        logger.debug("ResourceManager address not read", exc_info=True)
        return
    reason, _ = _connect_to_one(addresses)
    if reason is not None:
        logger.warning("YARN ResourceManager %s: nothing listens there (%s); Hadoop's client "
                       "retries for up to %.0f s (yarn.resourcemanager.connect.max-wait.ms), "
                       "then fails; Ctrl-C stops", _shown(addresses), reason, wait_s)


def start_error(master, exc):
    """The :class:`InputError` for ``exc``, raised as a session started on ``master``, when
    the master is the cause (the user's to mend), else None."""
    text = str(exc)
    if "Could not parse Master URL" in text:
        return InputError(f"Spark master {master!r} (--master, or spark-submit's): Spark cannot "
                          f"parse it; give local[N], spark://HOST:PORT, yarn or k8s://HOST:PORT")
    if master == "yarn" and "failed on connection exception" in text:
        said = next((line for line in text.splitlines() if "ConnectException" in line), text)
        # The ResourceManager, or HDFS (the application's staging folder): the line says which.
        return InputError(f"--master yarn (or spark-submit's): a server of the cluster did not "
                          f"answer as the session started ({said.strip(': ')}); check that YARN "
                          f"and HDFS run there and that the driver's Hadoop configuration "
                          f"(yarn-site.xml, core-site.xml) names them")
    return stopped_context_error()


def stopped_context_error():
    """The :class:`InputError` when Spark has stopped the context a standalone master
    was to run, else None.

    Spark stops it when the master does not register the application (after
    three tries, 20 s apart: "All masters are unresponsive") or removes it
    (killed on the master's page). pyspark's errors then depend on how far the
    stop has gone ("Cannot call methods on a stopped SparkContext", "LiveListenerBus
    is stopped", ...), and may come from the command's first use of the session.
    """
    from pyspark import SparkContext

    context = SparkContext._active_spark_context
    if context is None or not context.master.startswith("spark://"):
        return None
    try:
        if not context._jsc.sc().isStopped():
            return None
    except Exception:  # noqa: BLE001 - the JVM itself is gone: not this case
        return None
    import pyspark

    return InputError(f"Spark master {context.master} (--master, or spark-submit's): Spark "
                      f"stopped the application's context (its log above says why: 'All masters "
                      f"are unresponsive' when the port is not a Spark master's or the master "
                      f"runs another Spark version than this client's {pyspark.__version__}; "
                      f"'Master removed our application' when it was killed there)")
