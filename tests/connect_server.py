"""A local Spark Connect server for the tests: ``python tests/connect_server.py PORT``.

A classic local[2] session with Spark's Connect plugin, in its own process (as a
Databricks cluster is to a notebook): the client process has no JVM of its own.
Prints ``ready`` once it accepts sessions and serves until its stdin closes.
"""
import os
import sys


def main(port):
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from covidspark.runtime.session import get_spark

    get_spark("covidspark-connect-server", master="local[2]", conf={
        "spark.plugins": "org.apache.spark.sql.connect.SparkConnectPlugin",
        "spark.connect.grpc.binding.port": str(port),
        "spark.ui.enabled": "false", "spark.driver.memory": "3g",
        "spark.ui.showConsoleProgress": "false"})
    print("ready", flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main(int(sys.argv[1]))
