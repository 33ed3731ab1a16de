"""Reaching a Spark Connect server: say who is being waited for, and fail on nobody there.

pyspark's Connect client retries an unanswered first call for about ten
minutes (its ``DefaultPolicy``: 15 retries, backoff up to 60 s), on purpose: a
Databricks cluster that is starting takes minutes, and its gateway answers
"unavailable" meanwhile. For a mistyped port or a server that is not running
that is ten silent minutes. So before the session is built covidspark checks
that something listens at the URL's host and port (a plain TCP connection,
retried for :data:`LISTEN_WAIT_S` for a server that is still starting), and
while pyspark waits on a server that listens but does not answer yet it logs a
line every :data:`WAIT_LOG_INTERVAL_S`. URLs are logged as ``sc://host:port``,
never with their parameters: those hold tokens.

A server lost once the session is up (stopped, restarted, the network gone) is
retried just as silently, and a server killed in the middle of a query fails it
at once with a bare gRPC error. :func:`watch_connection` gives the client's
retries lines of their own, and :func:`connection_lost` names the server in
place of the gRPC error, so that the command line reports neither as a bug.
"""
import contextlib
import functools
import logging
import os
import re
import threading
import time
import urllib.parse
import warnings

from covidspark.errors import InputError

logger = logging.getLogger(__name__)

#: Spark Connect's port when the URL gives none.
DEFAULT_CONNECT_PORT = 15002
#: Seconds to wait for something to listen at the URL's host and port.
LISTEN_WAIT_S = 60.0
#: Seconds between "still waiting" lines while the server does not answer.
WAIT_LOG_INTERVAL_S = 30.0

#: gRPC goes through these proxies; a direct connection says nothing of the way it takes.
PROXY_VARIABLES = ("grpc_proxy", "https_proxy", "http_proxy", "HTTPS_PROXY", "HTTP_PROXY")


def proxy_configured():
    """Whether a proxy variable is set: a TCP check of the server says nothing then."""
    return any(os.environ.get(name) for name in PROXY_VARIABLES)


def connect_address(url):
    """``(host, port)`` of a Spark Connect URL ``sc://host[:port][/;param=value...]``.

    Parsed as pyspark's ``DefaultChannelBuilder`` parses it (the port defaults
    to 15002); a URL it would refuse raises :class:`~covidspark.errors.InputError`.
    """
    if not url.startswith("sc://"):
        raise InputError(f"Spark Connect URL {shown_url(url)!r}: it must start with sc:// "
                         f"(sc://HOST:PORT, as spark-submit's --remote)")
    parsed = urllib.parse.urlparse("http" + url[2:])
    try:
        port = parsed.port
    except ValueError:  # urllib's text would quote the port with the parameters (tokens)
        raise InputError(f"Spark Connect URL {shown_url(url)}: the port is not a number from "
                         f"0 to 65535 (sc://HOST:PORT/;param=value...)") from None
    if not parsed.hostname:
        raise InputError(f"Spark Connect URL {shown_url(url)}: no host (sc://HOST:PORT)")
    return parsed.hostname, port if port is not None else DEFAULT_CONNECT_PORT


def shown_url(url):
    """The URL without its parameters (``;token=...``), for logs and errors."""
    return url.split(";", 1)[0].rstrip("/")


def wait_for_listener(url, wait_s=None):
    """Return once something accepts TCP connections at ``url``'s host and port.

    Raises
    ------
    InputError
        The host is unknown, or nothing listened there for ``wait_s`` seconds
        (default :data:`LISTEN_WAIT_S`). Skipped where a proxy is configured.
    """
    if proxy_configured():
        return
    from covidspark.runtime.masters import wait_for_listener as wait

    wait([connect_address(url)], f"Spark Connect server {shown_url(url)}",
         "start the server, or check the URL (--remote, SPARK_REMOTE)",
         LISTEN_WAIT_S if wait_s is None else wait_s)


@contextlib.contextmanager
def waiting_lines(url, interval_s=None):
    """Log a line every ``interval_s`` seconds until the ``with`` block ends.

    Raises
    ------
    InputError
        In place of the client's error when the server never answered
        (gRPC ``UNAVAILABLE`` once its retries are spent).
    """
    interval_s = WAIT_LOG_INTERVAL_S if interval_s is None else interval_s
    stop = threading.Event()
    start = time.monotonic()

    def run():
        first = True
        while not stop.wait(interval_s):
            waited = time.monotonic() - start
            if first:
                logger.warning("Spark Connect server %s: no answer after %.0f s; pyspark's client "
                               "retries for about 10 minutes (a Databricks cluster that is "
                               "starting takes minutes); Ctrl-C stops", shown_url(url), waited)
                first = False
            else:
                logger.warning("Spark Connect server %s: no answer after %.0f s",
                               shown_url(url), waited)

    thread = threading.Thread(target=run, name="covidspark-connect-wait", daemon=True)
    thread.start()
    try:
        yield
    except Exception as exc:
        if not _unavailable(exc):
            raise
        detail = _reason(exc)
        raise InputError(f"Spark Connect server {shown_url(url)}: no answer in "
                         f"{time.monotonic() - start:.0f} s ({detail}); check that a Spark "
                         f"Connect server runs there (--remote, SPARK_REMOTE)") from None
    finally:
        stop.set()
        thread.join()


def _unavailable(exc):
    """True for the client's "server unavailable" error, raw gRPC or wrapped by pyspark."""
    return _grpc_status(exc) == "UNAVAILABLE"


def _grpc_status(exc):
    """The gRPC status name of a client error, raw gRPC or wrapped by pyspark; else None."""
    code = getattr(exc, "getGrpcStatusCode", None) or getattr(exc, "code", None)
    try:
        code = code() if callable(code) else None
    except Exception:  # an RpcError that is not a call has no code to give
        return None
    return getattr(code, "name", None)


def _reason(exc):
    """What the client says went wrong: gRPC's ``details`` line, else the message's first line."""
    details = getattr(exc, "details", None)
    text = str(details() if callable(details) else exc).strip()
    # pyspark wraps a gRPC error's text: "<_InactiveRpcError ...>", "status = ...", "details = ..."
    quoted = re.search(r'details = "([^"]*)"', text)
    if quoted:
        return quoted.group(1)
    return text.splitlines()[0] if text else type(exc).__name__


# The Connect session get_spark built, its server, when its client began retrying, and
# what the server said when it no longer knew the session or its query (it restarted).
_WATCHED = {"session": None, "url": None, "since": None, "forgotten": None}
# Set as the interpreter exits: the watched client's retries end.
_EXITING = threading.Event()

# The server's errors for a session or query it does not know (SESSION_CHANGED: it
# restarted since the session began), and pyspark's for what follows them: a client
# closed on SESSION_CHANGED, a query whose results had begun to arrive.
_FORGOTTEN = "INVALID_HANDLE."
_AFTER_FORGOTTEN = ("NO_ACTIVE_SESSION", "RESPONSE_ALREADY_RECEIVED")


def watch_connection(session, url):
    """Have ``session``'s client say so while it retries a server that stopped answering.

    pyspark's ``DefaultPolicy`` is replaced by one with the same settings that
    logs a line when a streak of "unavailable" retries starts, and one every
    :data:`WAIT_LOG_INTERVAL_S` while it lasts. A client with policies of its
    own, or one without pluggable policies (pyspark before 4.0), is left alone.
    """
    _WATCHED.update(session=session, url=url, since=None, forgotten=None)
    try:
        from pyspark.sql.connect.client.retries import DefaultPolicy
    except ImportError:
        return
    client = getattr(session, "client", None)
    policies = client.get_retry_policies() if hasattr(client, "get_retry_policies") else None
    if not policies or [type(policy) for policy in policies] != [DefaultPolicy]:
        return
    policy_class = _told_policy_class()
    told = policy_class.__new__(policy_class)
    told.__dict__.update(policies[0].__dict__)  # the client's settings, and the policy's name
    told.url, told.last_failure, told.last_said = url, None, None
    client.set_retry_policies([told])
    _end_retries_at_exit()


@functools.lru_cache(maxsize=None)
def _end_retries_at_exit():
    """Have the watched client stop retrying when the interpreter exits.

    A query that failed on a lost server leaves its ``ReleaseExecute`` calls
    retrying in pyspark's release thread pool, and the interpreter joins that
    pool's threads before it runs ``atexit``: ten more minutes before the
    process ended. Hooks registered with ``threading._register_atexit`` (what
    ``concurrent.futures`` itself uses; CPython only) run before that join, the
    latest first, so this one runs before the pool's.
    """
    import concurrent.futures.thread  # noqa: F401 - its hook first, so that this one runs before it

    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        register(_EXITING.set)


@functools.lru_cache(maxsize=None)
def _told_policy_class():
    from pyspark.sql.connect.client.retries import DefaultPolicy

    class RetriesSaidPolicy(DefaultPolicy):
        """pyspark's default policy, which logs while it retries an unavailable server.

        It also sees the error of a server that restarted, before pyspark turns
        it into errors that do not say so (``NO_ACTIVE_SESSION`` on every later
        call, ``RESPONSE_ALREADY_RECEIVED`` for a query in flight).
        """

        def can_retry(self, exception):
            # The process is ending: a retry in flight ends at its next attempt.
            retry = super().can_retry(exception) and not _EXITING.is_set()
            if retry and _unavailable(exception):
                self._say(exception)
            elif not retry and _FORGOTTEN in _reason(exception):
                _WATCHED["forgotten"] = _reason(exception)
            return retry

        def _say(self, exception):
            now = time.monotonic()
            # Retries come at most max_backoff apart: a longer gap starts a new streak.
            gap_s = (self.max_backoff or 60000) / 1000 + 10
            if self.last_failure is None or now - self.last_failure > gap_s:
                _WATCHED["since"], self.last_said = now, None
            self.last_failure = now
            if self.last_said is None:
                logger.warning("Spark Connect server %s: not answering (%s); pyspark's client "
                               "retries for about 10 minutes, then fails; Ctrl-C stops",
                               shown_url(self.url), _reason(exception))
                self.last_said = now
            elif now - self.last_said >= WAIT_LOG_INTERVAL_S:
                logger.warning("Spark Connect server %s: no answer for %.0f s",
                               shown_url(self.url), now - _WATCHED["since"])
                self.last_said = now

    return RetriesSaidPolicy


#: Tries and seconds each that the release of a session at exit gets. The release
#: is a courtesy: a server drops a session that no client uses (Spark Connect's
#: session timeout), and pyspark's own retries would hold a process whose server
#: is gone for about ten more minutes.
EXIT_RELEASE_RETRIES = 3
EXIT_RELEASE_DEADLINE_S = 10.0


def release_at_exit(session, url):
    """Release a Connect ``session`` on its server within seconds, before it is stopped.

    A few quick tries (:data:`EXIT_RELEASE_RETRIES`, each
    :data:`EXIT_RELEASE_DEADLINE_S` at most) instead of pyspark's ten minutes;
    a server that does not answer gets a line, not a traceback, and the session
    is then stopped without a second release. Sessions marked not to be
    released (:func:`connection_lost`) and pyspark 3.5's (no pluggable retries)
    are left to ``stop()``.
    """
    import dataclasses

    client = getattr(session, "client", None)
    if not getattr(session, "release_session_on_close", False) or not hasattr(
            client, "set_retry_policies"):
        return
    from pyspark.sql.connect.client.retries import DefaultPolicy

    client.set_retry_policies([DefaultPolicy(max_retries=EXIT_RELEASE_RETRIES, max_backoff=1000)])
    # A server that is gone without a reset (a network cut) would hold each try until
    # pyspark's deadline for the call, 10 minutes; only pyspark 4.1+ has deadlines.
    deadlines = getattr(client, "_rpc_deadlines", None)
    if dataclasses.is_dataclass(deadlines) and hasattr(deadlines, "release_session"):
        client._rpc_deadlines = dataclasses.replace(
            deadlines, release_session=EXIT_RELEASE_DEADLINE_S)
    try:
        with warnings.catch_warnings():  # pyspark's RETRIES_EXCEEDED: the line below says it
            warnings.simplefilter("ignore")
            client.release_session()
    except Exception as exc:  # noqa: BLE001 - the process ends either way
        logger.warning("Spark Connect server %s: the session was not released at exit (%s); "
                       "the server drops it when it times out",
                       shown_url(url), _reason(exc))
    session.release_session_on_close = False


def watched_url(spark):
    """``sc://host:port`` of ``spark`` (no parameters) when :func:`watch_connection`
    watches it, else None."""
    return shown_url(_WATCHED["url"]) if _WATCHED["session"] is spark else None


def connection_lost(exc):
    """An :class:`InputError` naming the server when ``exc`` is its connection lost, else None.

    Lost: gRPC ``UNAVAILABLE`` (the client's retries spent), a stream the
    server dropped (``CANCELLED``, "Stream removed": the server was killed in
    the middle of a query), or a server that restarted and no longer knows the
    session, on the session :func:`watch_connection` watches. That session is
    then not released when it stops (at exit): releasing a session on a server
    that is gone is retried for another ten minutes.
    """
    url, status = _WATCHED["url"], _grpc_status(exc)
    condition = str(getattr(exc, "getCondition", lambda: None)())
    forgotten = _WATCHED["forgotten"] and (condition in _AFTER_FORGOTTEN
                                           or condition.startswith(_FORGOTTEN))
    detail = _reason(exc)
    dropped = status == "CANCELLED" and "Stream removed" in detail
    if url is None or not (forgotten or dropped or status == "UNAVAILABLE"):
        return None
    _WATCHED["session"].release_session_on_close = False
    if forgotten:
        return InputError(f"Spark Connect server {shown_url(url)}: in the middle of the "
                          f"command it no longer knew the command's session or query "
                          f"({_WATCHED['forgotten']}); it restarted, or dropped them while it "
                          f"could not be reached")
    since = _WATCHED["since"]
    waited = (f" and did not answer for {time.monotonic() - since:.0f} s"
              if status == "UNAVAILABLE" and since is not None else "")
    return InputError(f"Spark Connect server {shown_url(url)}: the connection was lost in the "
                      f"middle of the command ({detail}){waited}; the server stopped, restarted "
                      f"or cannot be reached")
