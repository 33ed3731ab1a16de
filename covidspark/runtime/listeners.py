"""Before a session is built on a cluster: is its server there to be found?

Spark's clients retry a server that is not there without a word a user can act
on: pyspark's Connect client for about ten minutes, a standalone master's
client three times 20 s apart, after which Spark logs "All masters are
unresponsive" and the context it was starting stops (pyspark then raises
"Cannot call methods on a stopped SparkContext"). A plain TCP connection to the
server's host and port says at once whether anything listens there; it is
retried for a while for a server that is still starting. YARN's
ResourceManager is found through the Hadoop configuration, which must be there.
"""
import logging
import os
import socket
import time

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
    shown = ", ".join(f"{host}:{port}" for host, port in addresses)
    told = False
    while True:
        reason = None
        for host, port in addresses:
            try:
                socket.create_connection((host, port), timeout=5).close()
                return
            except socket.gaierror as exc:
                if exc.errno != socket.EAI_AGAIN:  # EAI_AGAIN: the resolver may answer later
                    raise InputError(f"{name}: host {host!r} not found "
                                     f"({exc.strerror or exc})") from None
                reason = exc.strerror or str(exc)
            except OSError as exc:
                reason = exc.strerror or str(exc) or type(exc).__name__
        if time.monotonic() >= deadline:
            raise InputError(f"{name}: nothing listens at {shown} ({reason.lower()}) after "
                             f"{wait_s:.0f} s; {advice}")
        if not told:
            logger.warning("%s: nothing listens at %s yet (%s); waiting up to %.0f s",
                           name, shown, reason.lower(), wait_s)
            told = True
        time.sleep(1.0)


def master_addresses(master):
    """``[(host, port)]`` of a standalone master URL ``spark://h1[:p1][,h2[:p2]...]``."""
    addresses = []
    for part in master[len("spark://"):].split(","):
        host, colon, port = part.strip().rpartition(":")
        if not colon or not port.isdigit():  # no port: Spark's default
            host, port = part.strip(), DEFAULT_MASTER_PORT
        addresses.append((host.strip("[]"), int(port)))
    return addresses


def wait_for_master(master, wait_s=None):
    """Return once something listens at a ``spark://`` master's host and port.

    Raises
    ------
    InputError
        Nothing listened there for ``wait_s`` (default :data:`MASTER_WAIT_S`)
        seconds, or a host is unknown.
    """
    wait_s = MASTER_WAIT_S if wait_s is None else wait_s
    wait_for_listener(master_addresses(master), f"Spark master {master}",
                      "start the master (cluster_configs/standalone/cluster.sh start), or check "
                      "the URL (--master, or spark-submit's)", wait_s)


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
        return
    raise InputError("--master yarn (or spark-submit's): the driver finds no yarn-site.xml "
                     "(HADOOP_CONF_DIR and YARN_CONF_DIR unset, or without it), so Spark cannot "
                     "find the ResourceManager (it would try 0.0.0.0:8032 for 15 minutes); run "
                     "on a node of the cluster (EMR's primary node has them) or export "
                     "HADOOP_CONF_DIR=/etc/hadoop/conf")
