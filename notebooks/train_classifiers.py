# Databricks notebook source
# MAGIC %md
# MAGIC # covidspark: chest X-ray classification on Spark
# MAGIC
# MAGIC Reads chest X-rays from a class-folder tree (or the embedded synthetic set),
# MAGIC featurizes every image once with a Keras backbone, trains logistic regression,
# MAGIC random forest and decision tree for the chosen task on the same features and a
# MAGIC patient- and duplicate-grouped split, and reports per-class precision, recall and
# MAGIC F1 beside a 32x32-pixel baseline. The notebook is one call of
# MAGIC `covidspark.workflows.compare`; `jobs/compare.py` runs the same as a job.
# MAGIC
# MAGIC *A research tool, not a diagnostic device.*

# COMMAND ----------

dbutils.widgets.text("wheel", "", "covidspark wheel to install: the bundle's (see README) or a /Volumes/... .whl; empty: already installed")
# Written as a requirements file so that an empty widget installs nothing (a bundle job
# attaches the wheel as a task library); %pip then installs on the driver and executors.
open("/tmp/covidspark-notebook-requirements.txt", "w").write(dbutils.widgets.get("wheel") + "\n")

# COMMAND ----------

# MAGIC %pip install -r /tmp/covidspark-notebook-requirements.txt

# COMMAND ----------

dbutils.library.restartPython()

# COMMAND ----------

dbutils.widgets.text("data", "", "Image folder <data>/<label>/*.png (empty: synthetic)")
dbutils.widgets.text("synthetic_dir", "", "Where the synthetic set is written when data is empty: a /Volumes/... or dbfs:/... folder executors read (empty: local mode only)")
dbutils.widgets.dropdown("task", "binary", ["binary", "3class"], "Task")
dbutils.widgets.dropdown("model", "ResNet50", ["ResNet50", "InceptionV3"], "Backbone")
dbutils.widgets.text("weights", "imagenet", "Weights: imagenet, random or a file path")
dbutils.widgets.text("out", "/tmp/covidspark/train_classifiers", "Output folder (reports, models)")

# COMMAND ----------

from covidspark.workflows import CompareConfig, compare

result = compare(CompareConfig(
    data=dbutils.widgets.get("data") or None,
    synthetic_dir=dbutils.widgets.get("synthetic_dir") or None,
    tasks=[dbutils.widgets.get("task")],
    models=[dbutils.widgets.get("model")],
    weights=dbutils.widgets.get("weights"),
    bootstrap=200,
    out=dbutils.widgets.get("out"),
))
print(result.summary())

# COMMAND ----------

# MAGIC %md ## LR, RF and DT on the same features, beside the pixel baseline

# COMMAND ----------

display(result.to_pandas())
