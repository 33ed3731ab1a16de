# Databricks notebook source
# MAGIC %md
# MAGIC # covidspark: chest X-ray classification on Spark
# MAGIC
# MAGIC Reads chest X-rays from a class-folder tree (or generates the synthetic set),
# MAGIC featurizes them once with a pretrained Keras backbone, then trains logistic
# MAGIC regression, random forest and decision tree for the chosen task and prints
# MAGIC per-class precision, recall and F1. All logic lives in the `covidspark` library.
# MAGIC
# MAGIC *A research tool, not a diagnostic device.*

# COMMAND ----------

# MAGIC %pip install covidspark

# COMMAND ----------

dbutils.widgets.text("data", "", "Image folder <data>/<label>/*.png (empty: synthetic)")
dbutils.widgets.dropdown("task", "binary", ["binary", "3class"], "Task")
dbutils.widgets.dropdown("model", "ResNet50", ["ResNet50", "InceptionV3"], "Backbone")
dbutils.widgets.text("weights", "imagenet", "Weights: imagenet, random or a file path")

# COMMAND ----------

import os
import tempfile

from pyspark import StorageLevel

from covidspark import evaluation
from covidspark.data import datasets, splits
from covidspark.ml import pipelines
from covidspark.ml.featurizer import DeepImageFeaturizer
from covidspark.data.reading import read_images

data = dbutils.widgets.get("data")
task = dbutils.widgets.get("task")
if not data:
    data = datasets.synthetic(os.path.join(tempfile.gettempdir(), "covidspark-synthetic"),
                              n_per_class=20)
    print("Using SYNTHETIC images (not medical data):", data)
images, summary = pipelines.prepare_task(read_images(spark, data), task)
print(summary)

# COMMAND ----------

# MAGIC %md ## Featurize once

# COMMAND ----------

featurizer = DeepImageFeaturizer(inputCol="content", outputCol="features",
                                 modelName=dbutils.widgets.get("model"),
                                 weights=dbutils.widgets.get("weights"))
print("weights:", featurizer.resolvedWeights().description)
features = (featurizer.transform(splits.stratified_split(images, 0.2, seed=0))
            .drop("content").persist(StorageLevel.MEMORY_AND_DISK))
train = features.filter("split = 'train'")
test = features.filter("split = 'test'")
display(features.groupBy("label", "split").count())

# COMMAND ----------

# MAGIC %md ## Train and evaluate LR, RF and DT on the same features

# COMMAND ----------

results = {}
for classifier in pipelines.CLASSIFIERS:
    head = pipelines.build_head(task, classifier, seed=0).fit(train)
    results[classifier] = evaluation.evaluate(head.transform(test), pipelines.task_labels(task))
    print(f"--- {classifier} ---")
    print(evaluation.format_table(results[classifier]))
