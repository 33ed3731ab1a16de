"""The helpers that differ between classic and Spark Connect sessions; run in both passes."""
import os
import re

import pytest

from conftest import CONNECT_URL
from covidspark.runtime.connect import (ImageCounter, default_parallelism, is_connect, master,
                                        set_job_description, ship_file)


def test_the_session_is_the_kind_this_pass_asks_for(spark):
    assert is_connect(spark) == bool(CONNECT_URL)
    assert master(spark).startswith("local")
    assert default_parallelism(spark) >= 1


def test_a_shipped_file_is_read_on_the_executors(spark, tmp_path):
    from pyspark.sql import functions as F

    path = tmp_path / f"shipped-{os.getpid()}.txt"
    path.write_text("weights")
    name = ship_file(spark, str(path))
    assert ship_file(spark, str(path)) == name  # once per session

    @F.udf("string")
    def read_shipped(shipped_name):
        from pyspark import SparkFiles

        with open(SparkFiles.get(shipped_name)) as f:
            return f.read()

    # A second, different file of the same name (two fine-tuned models'
    # backbone.weights.h5) ships under its own name; the first stays readable.
    other = tmp_path / "other"
    other.mkdir()
    (other / path.name).write_text("different")
    other_name = ship_file(spark, str(other / path.name))
    assert other_name != name and other_name.endswith(path.name)
    assert ship_file(spark, str(other / path.name)) == other_name
    names = spark.createDataFrame([(name,), (other_name,)], "name string")
    read = {r[0]: r[1] for r in names.select("name", read_shipped("name")).collect()}
    assert read == {name: "weights", other_name: "different"}


def test_the_image_counter_counts_the_rows_of_an_action(spark):
    counter = ImageCounter(spark)
    set_job_description(spark, "count, 17 rows")
    frame = counter.observe(spark.range(17))
    if counter.accumulator is not None:
        from pyspark.sql import functions as F

        accumulator = counter.accumulator

        @F.udf("long")
        def counted(x):
            accumulator.add(1)
            return x

        frame = frame.select(counted("id"))
    assert counter.value == 0
    assert len(frame.collect()) == 17  # collect: a count would prune the UDF away
    assert counter.value == 17


@pytest.mark.skipif(not CONNECT_URL, reason="needs the Connect pass's server")
def test_a_command_given_remote_runs_on_that_server_without_spark_remote(fixture_dir, tmp_path):
    """``--remote sc://...`` (spark-submit's flag) reaches the server; SPARK_REMOTE is unset."""
    import json
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_REMOTE", "PYSPARK_GATEWAY_PORT")}
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "covidspark.cli", "datasets", "describe",
                           fixture_dir, "--remote", CONNECT_URL, "--json", str(report)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(report.read_text())["images"] == 18


@pytest.mark.skipif(not CONNECT_URL, reason="needs the Connect pass's server")
def test_spark_submit_remote_reaches_get_spark(tmp_path):
    """spark-submit --remote sets no SPARK_REMOTE; pyspark's own builder then asks for a master."""
    import subprocess

    from conftest import venv_bin

    script = tmp_path / "probe.py"
    script.write_text("from covidspark.runtime.session import get_spark\n"
                      "from covidspark.runtime.connect import is_connect\n"
                      "spark = get_spark('probe')\n"
                      "print('PROBE', is_connect(spark), spark.range(7).count())\n")
    env = {k: v for k, v in os.environ.items() if k not in ("SPARK_REMOTE", "PYSPARK_GATEWAY_PORT")}
    done = subprocess.run([venv_bin("spark-submit"), "--remote", CONNECT_URL, str(script)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "PROBE True 7" in done.stdout


# A TCP forwarder to the pass's server that the test can cut: the server lost, as a
# stopped cluster or a dropped network leaves a client, while the server itself lives on.
_CUT_CONNECTION_SCRIPT = '''
import socket, sys, threading
import pyspark.sql.connect.client.retries as retries
defaults = list(retries.DefaultPolicy.__init__.__defaults__); defaults[0] = 3
retries.DefaultPolicy.__init__.__defaults__ = tuple(defaults)  # about 1 s of retries, not 10 min
import covidspark.runtime.remote as remote
from covidspark.cli import main
from covidspark.runtime.session import get_spark

listener = socket.create_server(("127.0.0.1", 0))
links = []

def pipe(a, b):
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass

def forward():
    while True:
        try:
            client = listener.accept()[0]
        except OSError:
            return
        server = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
        links.extend([client, server])
        threading.Thread(target=pipe, args=(client, server), daemon=True).start()
        threading.Thread(target=pipe, args=(server, client), daemon=True).start()

def cut():
    listener.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone would not
    listener.close()
    for link in links:
        try:
            link.shutdown(socket.SHUT_RDWR)
        except OSError:  # closed from the other end already
            pass

threading.Thread(target=forward, daemon=True).start()
spark = get_spark("lost", remote=f"sc://127.0.0.1:{listener.getsockname()[1]}/;user_id=someone")
assert spark.range(5).count() == 5
remote.WAIT_LOG_INTERVAL_S = 0  # a line for every retry
threading.Timer(1.5, cut).start()
try:  # about 7 s on the pass's server: cut in the middle
    spark.range(0, 6 * 10**8, numPartitions=4).selectExpr("sum(sqrt(id * 1.0001))").collect()
    print("QUERY ENDED")
except Exception as exc:
    print("IN THE MIDDLE:", remote.connection_lost(exc))
status = main(sys.argv[2:])
# At exit the session stops; releasing it on the lost server would be retried for 10 minutes.
spark.client.get_retry_policies()[0].max_retries = 15
sys.exit(status)
'''


@pytest.mark.skipif(not CONNECT_URL, reason="needs the Connect pass's server")
def test_a_server_lost_mid_command_is_named_and_its_retries_said_not_a_bug(fixture_dir, tmp_path):
    """pyspark retries a lost server for 10 silent minutes, then raises a bare gRPC error."""
    import subprocess
    import sys

    from covidspark.runtime.remote import PROXY_VARIABLES, connect_address

    script = tmp_path / "cut.py"
    script.write_text(_CUT_CONNECTION_SCRIPT)
    env = {k: v for k, v in os.environ.items()
           if k not in ("SPARK_REMOTE", "PYSPARK_GATEWAY_PORT", *PROXY_VARIABLES)}
    done = subprocess.run([sys.executable, str(script), str(connect_address(CONNECT_URL)[1]),
                           "datasets", "describe", fixture_dir], env=env, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-4000:]
    said = done.stdout + done.stderr
    server = re.search(r"Spark Connect server (sc://127\.0\.0\.1:\d+):", said).group(1)
    # A query cut in the middle: the server named, not a bare gRPC error.
    assert f"IN THE MIDDLE: Spark Connect server {server}: the connection was lost" in said
    # The next command: its retries said while they last, then one error, no traceback.
    assert f"Spark Connect server {server}: not answering (" in said
    assert "pyspark's client retries for about 10 minutes" in said
    assert f"Spark Connect server {server}: no answer for " in said
    assert re.search(rf"Spark Connect server {re.escape(server)}: the connection was lost in "
                     r"the middle of the command \(.+\) and did not answer for \d+ s", said)
    assert "a bug" not in said and "Traceback" not in said and "someone" not in said
