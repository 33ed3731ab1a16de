"""Reaching Spark (a master, a Connect server): a wrong address is a clear error, not a hang."""
import importlib
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO_ROOT, free_port, start_connect_server
from covidspark.errors import InputError
from covidspark.runtime.masters import master_addresses
from covidspark.runtime.remote import PROXY_VARIABLES, connect_address, shown_url
from covidspark.runtime.session import get_spark

URLS = ["sc://localhost", "sc://localhost:15099", "sc://10.1.2.3:443/;token=abc;use_ssl=true",
        "sc://workspace.cloud.example.com:443/;x-databricks-cluster-id=0123"]


# Both need pyspark's Connect client (covidspark[connect]), which the Spark 3.5 pass lacks.
@pytest.mark.connect
@pytest.mark.parametrize("url", URLS)
def test_connect_urls_are_read_as_pyspark_reads_them(url):
    grpc_core = importlib.import_module("pyspark.sql.connect.client.core")
    builder = getattr(grpc_core, "DefaultChannelBuilder", grpc_core.ChannelBuilder)(url)
    host, port = connect_address(url)
    assert f"{host}:{port}" == builder.endpoint
    assert ";" not in shown_url(url) and "token" not in shown_url(url)
    assert shown_url(url).startswith(f"sc://{host}")


def test_a_connect_url_it_cannot_read_names_the_url_not_its_token():
    with pytest.raises(InputError, match="must start with sc://"):
        connect_address("http://localhost:15002")
    with pytest.raises(InputError) as error:
        connect_address("sc://localhost:port/;token=SECRET")
    assert "sc://localhost:port" in str(error.value) and "SECRET" not in str(error.value)
    # Without the "/" urllib reads the parameters as the port, and its error quoted them.
    with pytest.raises(InputError, match="the port is not a number") as error:
        connect_address("sc://localhost:15002;token=SECRET")
    assert "SECRET" not in str(error.value)


def test_a_master_that_is_a_connect_url_is_sent_to_remote():
    # Before any session is looked up: the value is wrong wherever it is used.
    with pytest.raises(InputError) as error:
        get_spark("x", master="sc://localhost:15002/;token=SECRET")
    message = str(error.value)
    assert "--master sc://localhost:15002: a Spark Connect URL" in message
    assert "--remote" in message and "SECRET" not in message


def run_cli(*argv, before="", timeout=120):
    """``covidspark datasets describe`` in a fresh interpreter; it fails before reading."""
    script = (f"import sys\n{before}\nfrom covidspark.cli import main\n"
              f"sys.exit(main(['datasets', 'describe', {REPO_ROOT!r}, *{list(argv)!r}]))\n")
    # A proxy setting turns the listener check off (gRPC would go through the proxy).
    env_skip = ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED", "PYSPARK_GATEWAY_PORT",
                *PROXY_VARIABLES)
    env = {k: v for k, v in os.environ.items() if k not in env_skip}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO_ROOT, env=env)


@pytest.mark.subprocess
@pytest.mark.parametrize("flag, url, shorten, name", [
    ("--remote", "sc://127.0.0.1:{port}/;token=SECRET", "remote as w; w.LISTEN_WAIT_S = 2",
     "Spark Connect server sc://127.0.0.1:{port}"),
    ("--master", "spark://127.0.0.1:{port}", "masters as w; w.MASTER_WAIT_S = 2",
     "Spark master spark://127.0.0.1:{port}"),
    ("--master", "k8s://https://127.0.0.1:{port}", "masters as w; w.MASTER_WAIT_S = 2",
     "Spark master k8s://https://127.0.0.1:{port}")])
def test_nothing_listening_is_a_clear_error_not_minutes_of_silent_retries(flag, url, shorten,
                                                                          name):
    port = free_port()
    done = run_cli(flag, url.format(port=port), before=f"import covidspark.runtime.{shorten}")
    assert done.returncode == 2, done.stderr
    assert (f"{name.format(port=port)}: nothing listens at 127.0.0.1:{port} "
            f"(connection refused) after 2 s; ") in done.stderr
    assert "check" in done.stderr.rsplit("after 2 s; ", 1)[1]  # what to do
    assert "waiting up to 2 s" in done.stderr  # said while it waited
    assert "SECRET" not in done.stderr and "Traceback" not in done.stderr
    assert "a bug" not in done.stderr


@pytest.mark.subprocess
def test_an_unknown_remote_host_fails_at_once():
    done = run_cli("--remote", "sc://no-such-host.invalid:15002")
    assert done.returncode == 2, done.stderr
    assert "host 'no-such-host.invalid' not found" in done.stderr


@pytest.fixture
def silent_server():
    """A port that accepts connections and never says a word (no gRPC behind it)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted = []

    def accept():
        try:
            while True:
                accepted.append(server.accept()[0])
        except OSError:  # closed
            pass

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for conn in accepted:
        conn.close()


@pytest.mark.connect
@pytest.mark.subprocess
def test_a_remote_that_never_answers_is_reported_while_waited_for_and_then_named(silent_server):
    retries = importlib.util.find_spec("pyspark.sql.connect.client.retries")
    if retries is None:
        pytest.skip("this pyspark's Connect client has no retry policy to shorten (Spark < 4)")
    # pyspark retries an unanswered server for about 10 minutes; two retries here.
    shorten = ("import pyspark.sql.connect.client.retries as retries\n"
               "d = list(retries.DefaultPolicy.__init__.__defaults__); d[0] = 2\n"
               "retries.DefaultPolicy.__init__.__defaults__ = tuple(d)\n"
               "import covidspark.runtime.remote as r; r.WAIT_LOG_INTERVAL_S = 1")
    done = run_cli("--remote", f"sc://127.0.0.1:{silent_server}", before=shorten, timeout=240)
    assert done.returncode == 2, done.stderr
    url = f"sc://127.0.0.1:{silent_server}"
    assert f"Spark Connect server {url}: no answer after 1 s; pyspark's client" in done.stderr
    assert f"Spark Connect server {url}: no answer in " in done.stderr
    assert "check that a Spark Connect server runs there" in done.stderr
    assert "a bug" not in done.stderr and "Traceback" not in done.stderr


def test_standalone_and_kubernetes_master_urls_are_read_as_spark_reads_them():
    assert master_addresses("spark://m1:7077,m2:7078") == [("m1", 7077), ("m2", 7078)]
    assert master_addresses("spark://m") == [("m", 7077)]  # Spark's default port
    assert master_addresses("spark://[::1]:7079") == [("::1", 7079)]
    # Kubernetes: https when the URL gives no scheme, and its port
    assert master_addresses("k8s://https://api.example:6443") == [("api.example", 6443)]
    assert master_addresses("k8s://api.example") == [("api.example", 443)]
    assert master_addresses("k8s://http://127.0.0.1") == [("127.0.0.1", 80)]


@pytest.mark.subprocess
def test_a_port_that_is_not_a_spark_master_is_named_not_reported_as_a_bug(silent_server):
    # Spark's client tries three times, 20 s apart (not configurable): about a minute.
    done = run_cli("--master", f"spark://127.0.0.1:{silent_server}", timeout=240)
    assert done.returncode == 2, done.stderr[-3000:]
    assert (f"Spark master spark://127.0.0.1:{silent_server} (--master, or spark-submit's): "
            f"Spark stopped the application's context (its log above says why: 'All masters "
            f"are unresponsive' when the port is not a Spark master's") in done.stderr
    assert "All masters are unresponsive! Giving up." in done.stderr  # Spark's own line
    assert "a bug" not in done.stderr and "Traceback" not in done.stderr


_YARN_SITE = """<?xml version="1.0"?>
<configuration>
  <property><name>yarn.resourcemanager.address</name><value>127.0.0.1:{port}</value></property>
  <property><name>yarn.resourcemanager.connect.max-wait.ms</name><value>2000</value></property>
  <property><name>yarn.resourcemanager.connect.retry-interval.ms</name><value>500</value></property>
  <property><name>ipc.client.connect.max.retries</name><value>0</value></property>
</configuration>
"""


@pytest.mark.subprocess
def test_yarn_without_a_hadoop_configuration_is_refused_at_once_not_after_15_minutes(tmp_path):
    unset = "import os\nfor k in ('HADOOP_CONF_DIR', 'YARN_CONF_DIR'): os.environ.pop(k, None)"
    done = run_cli("--master", "yarn", before=unset)
    assert done.returncode == 2, done.stderr[-3000:]
    assert ("--master yarn (or spark-submit's): the driver finds no yarn-site.xml "
            "(HADOOP_CONF_DIR and YARN_CONF_DIR unset, or without it)") in done.stderr
    assert "Traceback" not in done.stderr
    # With one on the JVM's class path (HADOOP_CONF_DIR), Spark goes on to the
    # ResourceManager it names: nothing listens there, and Hadoop gives up in 2 s.
    port = free_port()
    (tmp_path / "yarn-site.xml").write_text(_YARN_SITE.format(port=port))
    done = run_cli("--master", "yarn", before=f"{unset}\nos.environ['HADOOP_CONF_DIR'] = "
                                               f"{str(tmp_path)!r}")
    assert "finds no yarn-site.xml" not in done.stderr
    assert done.returncode == 2, done.stderr[-3000:]
    assert (f"YARN ResourceManager 127.0.0.1:{port}: nothing listens there (connection "
            f"refused); Hadoop's client retries for up to 2 s") in done.stderr  # before it waits
    assert ("--master yarn (or spark-submit's): a server of the cluster did not answer as the "
            "session started (java.net.ConnectException: Call From ") in done.stderr
    assert f":{port} failed on connection exception" in done.stderr  # which server
    assert "Traceback" not in done.stderr and "a bug" not in done.stderr


@pytest.mark.subprocess
def test_a_master_spark_cannot_parse_is_a_user_error_not_a_bug():
    done = run_cli("--master", "localhost:7077")
    assert done.returncode == 2, done.stderr
    assert ("Spark master 'localhost:7077' (--master, or spark-submit's): Spark cannot parse it"
            in done.stderr)
    assert "a bug" not in done.stderr


def test_an_active_session_is_kept_and_a_master_or_remote_given_is_said_to_be_ignored(
        spark, caplog):
    with caplog.at_level(logging.WARNING, logger="covidspark.runtime.session"):
        assert get_spark("x", master="local[7]") is spark
        assert get_spark("x", remote="sc://elsewhere:15002/;token=SECRET") is spark
    said = [r.getMessage() for r in caplog.records]
    assert said == ["An active Spark session is used as it is; --master local[7] is ignored",
                    "An active Spark session is used as it is; --remote sc://elsewhere:15002 "
                    "is ignored"]


# The client of a Connect server that the test kills and starts again, as a cluster's
# driver dies or restarts under a running command: the query in flight, then a command.
_KILLED_SERVER_CLIENT = '''
import sys
from covidspark.cli import main
from covidspark.runtime.remote import connection_lost
from covidspark.runtime.session import get_spark

spark = get_spark("client", remote=sys.argv[1])
assert spark.range(5).count() == 5
print("QUERY", flush=True)
try:  # about 7 s on an idle server: killed in the middle
    spark.range(0, 6 * 10**8, numPartitions=4).selectExpr("sum(sqrt(id * 1.0001))").collect()
    print("QUERY ENDED", flush=True)
except Exception as exc:
    print("IN THE MIDDLE:", connection_lost(exc), flush=True)
sys.stdin.readline()  # the server is up again
sys.exit(main(["datasets", "describe", sys.argv[2]]))
'''


@pytest.mark.connect
@pytest.mark.subprocess
def test_a_server_killed_mid_query_and_restarted_is_named_not_reported_as_a_bug(fixture_dir):
    """pyspark's own errors: a bare gRPC CANCELLED, then NO_ACTIVE_SESSION from a closed client."""
    import signal

    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED", "PYSPARK_GATEWAY_PORT")}
    server = start_connect_server(port, own_process_group=True)
    client = subprocess.Popen([sys.executable, "-c", _KILLED_SERVER_CLIENT,
                               f"sc://127.0.0.1:{port}", fixture_dir], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert client.stdout.readline().strip() == "QUERY", client.stderr.read()[-3000:]
        threading.Event().wait(2.0)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=60)
        server = start_connect_server(port, own_process_group=True)
        client.stdin.write("restarted\n")
        client.stdin.flush()
        out, err = client.communicate(timeout=300)
    finally:
        client.kill()
        os.killpg(server.pid, signal.SIGKILL)
    url = f"sc://127.0.0.1:{port}"
    # The query in flight: a dropped stream, or retries until the new server answers that
    # it does not know the query (which of the two depends on how the connection went).
    middle = re.search(rf"IN THE MIDDLE: Spark Connect server {re.escape(url)}: (.*)", out)
    assert middle, out + err[-3000:]
    assert middle.group(1).startswith((
        "the connection was lost in the middle of the command (Stream removed",
        "in the middle of the command it no longer knew the command's session or query "
        "([RESPONSE_ALREADY_RECEIVED] INVALID_HANDLE.")), middle.group(1)
    # The next command: the new server does not know the session.
    assert client.returncode == 2, err[-3000:]
    assert (f"Spark Connect server {url}: in the middle of the command it no longer knew the "
            f"command's session or query ([INVALID_HANDLE.SESSION_CHANGED]") in err
    assert "it restarted, or dropped them" in err
    assert "a bug" not in err and "Traceback" not in err


# A Python-API client whose server is gone: a thread of its own retries a query,
# and the main thread ends. pyspark would retry both that query and the session's
# release at exit for about ten minutes each.
_GONE_SERVER_CLIENT = '''
import sys, threading, time
from covidspark.runtime.connect import connect_server
from covidspark.runtime.session import get_spark

spark = get_spark("client", remote=sys.argv[1])
assert spark.range(5).count() == 5
print("SERVER", connect_server(spark), flush=True)  # as metrics.json records it
sys.stdin.readline()  # the server is gone

def query():
    try:
        spark.range(5).count()
    except Exception as exc:
        print("THREAD ENDED:", type(exc).__name__, flush=True)

threading.Thread(target=query).start()  # not a daemon: the interpreter waits for it
time.sleep(2.0)  # its first retries
print("EXIT", time.monotonic(), flush=True)
'''


@pytest.mark.connect
@pytest.mark.subprocess
def test_a_process_whose_server_is_gone_exits_in_seconds_not_ten_minutes():
    import signal

    if importlib.util.find_spec("pyspark.sql.connect.client.retries") is None:
        pytest.skip("this pyspark's Connect client has no retry policies to end (Spark < 4)")
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED", "PYSPARK_GATEWAY_PORT")}
    server = start_connect_server(port, own_process_group=True)
    url = f"sc://127.0.0.1:{port}"
    client = subprocess.Popen([sys.executable, "-c", _GONE_SERVER_CLIENT, url + "/;user_id=me"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
    try:
        said = client.stdout.readline().strip()
        assert said == f"SERVER {url}", said + client.stderr.read()[-3000:]  # no parameters
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=60)
        client.stdin.write("gone\n")
        client.stdin.flush()
        # A retry in flight sleeps out its backoff (12.8 s by then) before it ends.
        out, err = client.communicate(timeout=120)
        ended = time.monotonic()
    finally:
        client.kill()
    exited = re.search(r"EXIT ([\d.]+)", out)
    assert exited, out + err[-3000:]
    # time.monotonic() is system-wide on Linux: the two processes' clocks agree.
    assert ended - float(exited.group(1)) < 60, err[-3000:]
    # The thread's query ended with an error (which one is pyspark's, at interpreter exit).
    assert "THREAD ENDED:" in out, out
    assert (f"Spark Connect server {url}: the session was not released at exit "
            f"(failed to connect to all addresses") in err
    assert "the server drops it when it times out" in err
    assert "Traceback" not in err and "RETRIES_EXCEEDED" not in err
