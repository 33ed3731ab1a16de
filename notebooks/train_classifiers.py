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

# MAGIC %pip install covidspark

# COMMAND ----------

dbutils.widgets.text("data", "", "Image folder <data>/<label>/*.png (empty: synthetic)")
dbutils.widgets.dropdown("task", "binary", ["binary", "3class"], "Task")
dbutils.widgets.dropdown("model", "ResNet50", ["ResNet50", "InceptionV3"], "Backbone")
dbutils.widgets.text("weights", "imagenet", "Weights: imagenet, random or a file path")
dbutils.widgets.text("out", "/tmp/covidspark/train_classifiers", "Output folder (reports, models)")

# COMMAND ----------

from covidspark.workflows import CompareConfig, compare

result = compare(CompareConfig(
    data=dbutils.widgets.get("data") or None,
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
