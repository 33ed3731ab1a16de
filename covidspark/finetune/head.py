"""The fine-tuned softmax head as an MLlib logistic regression, so the model is a PipelineModel.

A Dense layer with softmax, ``p = softmax(W^T f + b)``, *is* a multinomial
logistic regression on the pooled features ``f``; with two classes it equals
the binomial one with ``w = W_1 - W_0`` and ``b = b_1 - b_0``. So the fitted
fine-tuning model is the same ``PipelineModel`` the train jobs save —
``DeepImageFeaturizer`` (the fine-tuned backbone's weights file) + label
indexer + ``LogisticRegressionModel`` + label decoder — and everything that
reads those works unchanged: ``PipelineModel.load``, ``predict``, thresholds,
Grad-CAM heat maps, the Spark-free ``Predictor`` and the REST service, on
every engine.

MLlib has no public constructor for a model with given coefficients, so the
head is fitted once on a few placeholder rows (for Spark's own metadata, in the
running Spark's format), saved, and its ``data`` table is replaced by the
trained coefficients before it is loaded.
"""
import numpy as np

from covidspark.runtime.filesystem import Files, join


def lr_coefficients(kernel, bias):
    """MLlib's ``(coefficient matrix, intercepts, multinomial)`` for a softmax layer.

    Parameters
    ----------
    kernel : numpy.ndarray
        ``(features, classes)``, as Keras' Dense stores it.
    bias : numpy.ndarray
        ``(classes,)``.
    """
    kernel, bias = np.asarray(kernel, np.float64), np.asarray(bias, np.float64)
    if kernel.shape[1] == 2:
        return (kernel[:, 1] - kernel[:, 0])[None, :], np.array([bias[1] - bias[0]]), False
    return kernel.T, bias, True


def softmax_head_as_pipeline(spark, kernel, bias, task, location):
    """Save (at ``location``) and return the task's head with the given softmax weights.

    Returns
    -------
    pyspark.ml.PipelineModel
        Label indexer, ``LogisticRegressionModel`` predicting exactly
        ``softmax(kernel^T f + bias)``, label decoder.
    """
    from pyspark.ml import PipelineModel
    from pyspark.ml.linalg import DenseMatrix, DenseVector, Vectors, VectorUDT
    from pyspark.sql.types import StringType, StructField, StructType

    from covidspark.ml.pipelines import build_head, task_labels

    labels = list(task_labels(task))
    dim = int(np.asarray(kernel).shape[0])
    placeholder = spark.createDataFrame(
        [(label, Vectors.sparse(dim, [i % dim], [1.0])) for i, label in enumerate(labels)] * 2,
        StructType([StructField("label", StringType()), StructField("features", VectorUDT())]))
    head = build_head(task, "lr")
    head.getStages()[1].setMaxIter(1)
    head.fit(placeholder).write().overwrite().save(location)

    files = Files(spark)
    stages = join(files.qualify(location), "stages")
    lr_dir = next(d for d in files.list_dirs(stages) if "LogisticRegression" in d)
    data_dir = join(lr_dir, "data")
    schema = spark.read.parquet(data_dir).schema
    matrix, intercepts, multinomial = lr_coefficients(kernel, bias)
    row = (len(labels), dim, DenseVector(intercepts),
           # Row major, as MLlib itself stores them (it requires that of a binomial model).
           DenseMatrix(matrix.shape[0], matrix.shape[1], matrix.flatten().tolist(), True),
           multinomial)
    spark.createDataFrame([row], schema).coalesce(1).write.mode("overwrite").parquet(data_dir)
    return PipelineModel.load(location)
