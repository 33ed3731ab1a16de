# Databricks notebook source
# MAGIC %md
# MAGIC # covidspark: compare backbones and classifiers, honestly
# MAGIC
# MAGIC One patient- and duplicate-grouped split; each backbone featurizes every image
# MAGIC once; LR, RF and DT are fitted for the binary (COVID vs no findings) and 3-class
# MAGIC tasks on the same features and reported with 95 % bootstrap intervals beside a
# MAGIC logistic regression on 32x32 pixels, the shortcut baseline. The binary runs use a
# MAGIC COVID threshold chosen on validation data. The notebook is one call of
# MAGIC `covidspark.workflows.compare`; `jobs/compare.py` runs the same as a job.
# MAGIC
# MAGIC *A research tool, not a diagnostic device.*

# COMMAND ----------

dbutils.widgets.text("wheel", "", "covidspark wheel to install: the bundle's (see README) or a /Volumes/... .whl; empty: already installed")
# Written as a requirements file so that an empty widget installs nothing (a bundle job
# attaches the wheel as a task library); %pip then installs on the driver and executors.
open("/tmp/covidspark-notebook-requirements.txt", "w").write(
    (dbutils.widgets.get("wheel") + "[openvino]" if dbutils.widgets.get("wheel") else "") + "\n")

# COMMAND ----------

# MAGIC %pip install -r /tmp/covidspark-notebook-requirements.txt

# COMMAND ----------

dbutils.library.restartPython()

# COMMAND ----------

dbutils.widgets.text("data", "", "Image folder <data>/<label>/*.png (empty: synthetic)")
dbutils.widgets.text("synthetic_dir", "", "Where the synthetic set is written when data is empty: a /Volumes/... or dbfs:/... folder executors read (empty: local mode only)")
dbutils.widgets.text("patients", "", "Optional patients.csv (path,patient_id)")
dbutils.widgets.text("models", "ResNet50", "Backbones, comma-separated (e.g. ResNet50,InceptionV3)")
dbutils.widgets.text("weights", "imagenet", "Weights: imagenet, random or a file path")
dbutils.widgets.text("threshold", "0.1", "Binary COVID threshold: a number, f1, youden, recall:0.95")
dbutils.widgets.text("out", "/tmp/covidspark/evaluate_and_compare", "Output folder")

# COMMAND ----------

from covidspark.workflows import CompareConfig, compare

result = compare(CompareConfig(
    data=dbutils.widgets.get("data") or None,
    synthetic_dir=dbutils.widgets.get("synthetic_dir") or None,
    patients=dbutils.widgets.get("patients") or None,
    models=dbutils.widgets.get("models"),
    weights=dbutils.widgets.get("weights"),
    threshold=dbutils.widgets.get("threshold"),
    validation_fraction=0.15,
    bootstrap=500,
    out=dbutils.widgets.get("out"),
))
print(result.summary())

# COMMAND ----------

# MAGIC %md ## Every backbone x classifier x task, with intervals and the baseline verdict

# COMMAND ----------

display(result.to_pandas())
