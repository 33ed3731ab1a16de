"""A class-data sharing archive for the JVMs the tests start beside their own session.

Each spark-submit job, subprocess session, standalone daemon and executor of the suite
is a fresh JVM that parses and verifies thousands of Spark classes from the jars before
its first job: measured here, a trivial spark-submit job used 14 s of CPU, 8.5 s with
Java's class-data sharing (CDS) archive of those classes, a train job 50 s against 40 s.

``start(cache)`` runs, once per test run and in the background, this file as a
spark-submit job (``main``: the Spark paths the tests take - binary files, a pandas UDF,
Parquet, MLlib fit, save and load) in a driver with ``-XX:ArchiveClassesAtExit``, and
renames the archive into place when that JVM exits. ``jvm_options(cache)`` names it in
``-XX:SharedArchiveFile``: a JVM started before it exists, or with another class path
(spark-class's launcher, Spark 3.5's jars), runs without it, silently (``-Xshare:auto``,
the JVM's default, and the cds log off). JDK 17 cannot share one archive between
garbage collectors: it is for the short-lived JVMs' options only.
"""
import os
import subprocess
import sys

ARCHIVE = "jvm-classes.jsa"
#: The JIT and collector of the JVMs the tests start beside their own session (conftest).
SHORT_LIVED = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
_QUIET = "-Xlog:cds=off,cds+dynamic=off"


def jvm_options(cache):
    """JAVA_TOOL_OPTIONS for short-lived JVMs: their JIT and collector, and the archive."""
    return f"{SHORT_LIVED} -XX:SharedArchiveFile={os.path.join(cache, ARCHIVE)} {_QUIET}"


def start(cache, spark_submit):
    """Build the archive in the background; returns the process (kill it to stop early)."""
    work = os.path.join(cache, "jvm-class-archive")
    os.makedirs(work, exist_ok=True)
    partial = os.path.join(work, ARCHIVE)
    # The rename is atomic: a JVM sees the whole archive or none (a half-written one
    # would be refused as corrupt, with a warning on stdout).
    script = (f'"$1" --driver-java-options "-XX:ArchiveClassesAtExit={partial}" "$2" "$3" '
              f'>"$3/log" 2>&1 && mv "{partial}" "{os.path.join(cache, ARCHIVE)}"')
    env = {**os.environ, "JAVA_TOOL_OPTIONS": f"{SHORT_LIVED} {_QUIET}",
           "PYSPARK_PYTHON": sys.executable}
    return subprocess.Popen(["bash", "-c", script, "archive", spark_submit,
                             os.path.abspath(__file__), work], env=env,
                            stdin=subprocess.DEVNULL, start_new_session=True)


def main(folder):
    import numpy as np
    import pandas as pd
    from PIL import Image
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.classification import (DecisionTreeClassifier, LogisticRegression,
                                           RandomForestClassifier)
    from pyspark.ml.feature import StringIndexer, VectorAssembler
    from pyspark.sql import SparkSession, functions as F

    images = os.path.join(folder, "images")
    os.makedirs(images, exist_ok=True)
    for i in range(4):
        Image.fromarray(np.full((8, 8), i * 60, np.uint8)).save(os.path.join(images, f"{i}.png"))
    spark = (SparkSession.builder.master("local[2]").appName("jvm-class-archive")
             .config("spark.ui.enabled", "false").getOrCreate())

    def sizes(batches):
        for batch in batches:
            yield pd.DataFrame({"path": batch["path"], "n": batch["content"].map(len)})

    files = spark.read.format("binaryFile").load(images)
    files = files.mapInPandas(sizes, "path string, n long").withColumn(
        "image_id", F.sha2(F.col("path"), 256))
    files.write.mode("overwrite").parquet(os.path.join(folder, "files.parquet"))
    rows = spark.range(40).select(
        (F.col("id") % 2).cast("string").alias("label"),
        (F.col("id") * 0.1).alias("x"), F.sin("id").alias("y"))
    stages = [StringIndexer(inputCol="label", outputCol="target"),
              VectorAssembler(inputCols=["x", "y"], outputCol="features")]
    for classifier in (LogisticRegression(maxIter=5), RandomForestClassifier(numTrees=3),
                       DecisionTreeClassifier()):
        model = Pipeline(stages=stages + [classifier.setLabelCol("target")]).fit(rows)
        path = os.path.join(folder, type(classifier).__name__)
        model.write().overwrite().save(path)
        PipelineModel.load(path).transform(
            spark.read.parquet(os.path.join(folder, "files.parquet")).join(
                rows, F.length("path") > 0).limit(4)).collect()
    spark.stop()


if __name__ == "__main__":
    main(sys.argv[1])
