# Databricks notebook source
# MAGIC %md
# MAGIC # covidspark: compare backbones and classifiers, honestly
# MAGIC
# MAGIC One patient- and duplicate-grouped split; each backbone featurizes every image
# MAGIC once; LR, RF and DT are fitted for the binary (COVID vs no findings) and 3-class
# MAGIC tasks on the same features and reported with 95 % bootstrap intervals beside a
# MAGIC logistic regression on 32x32 pixels, the shortcut baseline. The binary runs use a
# MAGIC COVID threshold chosen on validation data. All logic lives in the `covidspark`
# MAGIC library; `jobs/compare.py` runs the same as a job.
# MAGIC
# MAGIC *A research tool, not a diagnostic device.*

# COMMAND ----------

# MAGIC %pip install covidspark[openvino]

# COMMAND ----------

dbutils.widgets.text("data", "", "Image folder <data>/<label>/*.png (empty: synthetic)")
dbutils.widgets.text("patients", "", "Optional patients.csv (path,patient_id)")
dbutils.widgets.text("models", "ResNet50", "Backbones, comma-separated (e.g. ResNet50,InceptionV3)")
dbutils.widgets.text("weights", "imagenet", "Weights: imagenet, random or a file path")
dbutils.widgets.text("threshold", "0.1", "Binary COVID threshold: a number, f1, youden, recall:0.95")

# COMMAND ----------

import os
import tempfile

from pyspark import StorageLevel

from covidspark.data import datasets
from covidspark.ml import experiment, pipelines
from covidspark.ml.baseline import PixelFeaturizer
from covidspark.data.duplicates import resolve_duplicates
from covidspark.ml.featurizer import DeepImageFeaturizer
from covidspark.data.reading import read_images
from covidspark.evaluation.reports import headline

data = dbutils.widgets.get("data")
if not data:
    data = datasets.synthetic(os.path.join(tempfile.gettempdir(), "covidspark-synthetic"),
                              n_per_class=20)
    print("Using SYNTHETIC images (not medical data):", data)
images = read_images(spark, data, patients=dbutils.widgets.get("patients") or None)
images, summary = pipelines.prepare_task(images, "3class")
images, duplicates = resolve_duplicates(images, "group")
print(summary, f"{len(duplicates['groups'])} duplicate group(s)")

options = experiment.TrainOptions(seed=0, threshold=dbutils.widgets.get("threshold"),
                                  bootstrap=500)
validation = 0.15 if options.needs_validation else 0.0
split, split_info = experiment.split_images(images, test_fraction=0.2,
                                            validation_fraction=validation, seed=0)
print(split_info["method"])
display(split.groupBy("label", "split").count())

# COMMAND ----------

# MAGIC %md ## The shortcut baseline: logistic regression on 32x32 pixels

# COMMAND ----------

pixels = PixelFeaturizer().transform(split).drop("content").persist(StorageLevel.MEMORY_AND_DISK)
baselines = {task: experiment.baseline(pixels, task, options) for task in pipelines.TASKS}
for task, result in baselines.items():
    print(task, {k: round(v, 3) for k, v in headline(result["metrics"]).items() if v is not None})

# COMMAND ----------

# MAGIC %md ## Featurize once per backbone; fit every classifier for both tasks

# COMMAND ----------

rows = []
for model_name in dbutils.widgets.get("models").split(","):
    featurizer = DeepImageFeaturizer(inputCol="content", outputCol="features",
                                     modelName=model_name.strip(),
                                     weights=dbutils.widgets.get("weights"))
    print(model_name, "weights:", featurizer.resolvedWeights().description)
    features = featurizer.transform(split).drop("content").persist(StorageLevel.MEMORY_AND_DISK)
    features.count()
    for task in pipelines.TASKS:
        task_options = options if task == "binary" else experiment.TrainOptions(seed=0,
                                                                                bootstrap=500)
        for classifier in pipelines.CLASSIFIERS:
            _, result = experiment.fit_and_evaluate(features, task, classifier, task_options)
            experiment.with_verdict(f"{model_name} + {classifier}", result, baselines[task])
            ci = result["metrics"]["confidence_intervals"]
            rows.append((task, model_name, classifier,
                         *[round(v, 3) if v is not None else None
                           for v in headline(result["metrics"]).values()],
                         round(ci["accuracy"][0], 3), round(ci["accuracy"][1], 3),
                         round(baselines[task]["metrics"]["accuracy"], 3),
                         not result["baseline"]["warns"]))
    print(f"{model_name}: {featurizer.imagesFeaturized()} images featurized")
    features.unpersist()

comparison = spark.createDataFrame(rows, "task string, model string, classifier string, "
                                         "covid_precision double, covid_recall double, "
                                         "covid_f1 double, accuracy double, roc_auc double, "
                                         "pr_auc double, accuracy_low double, "
                                         "accuracy_high double, baseline_accuracy double, "
                                         "beats_baseline boolean")
display(comparison)
