"""Model selection and class weighting for the classifier heads.

Cross-validation always runs on stored features (a persisted or Parquet
DataFrame), with the ``fold`` column of :func:`covidspark.data.splits.grouped_split`
as Spark's ``foldCol``: a patient or a duplicate group is never on both sides
of a fold, which a random ``TrainValidationSplit`` or ``numFolds`` split
cannot promise (and so is not offered).
"""
import logging

logger = logging.getLogger(__name__)

#: The grids ``--tune cv`` searches, per classifier (MLlib parameter names).
PARAM_GRIDS = {
    "lr": {"regParam": [0.001, 0.01, 0.1], "elasticNetParam": [0.0, 0.5]},
    "rf": {"numTrees": [50, 100], "maxDepth": [5, 10]},
    "dt": {"maxDepth": [4, 8, 12], "minInstancesPerNode": [1, 5]},
}

CLASS_WEIGHT_COL = "class_weight"


def balanced_class_weights(df, label_col="label"):
    """``{label: n / (k * n_label)}`` (``class_weight="balanced"``): each class carries the same total weight."""
    counts = {r[label_col]: r["count"] for r in df.groupBy(label_col).count().collect()}
    n, k = sum(counts.values()), len(counts)
    return {label: n / (k * c) for label, c in sorted(counts.items())}


def with_class_weights(df, weights, label_col="label", weight_col=CLASS_WEIGHT_COL):
    """``df`` with ``weight_col`` = the weight of each row's label."""
    from pyspark.sql import functions as F

    expression = None
    for label, weight in weights.items():
        expression = (F.when(F.col(label_col) == label, F.lit(float(weight))) if expression is None
                      else expression.when(F.col(label_col) == label, F.lit(float(weight))))
    return df.withColumn(weight_col, expression.otherwise(F.lit(1.0)))


def selection_metric(task):
    """What cross-validation maximises: ROC-AUC (binary) or weighted F1 (3-class)."""
    return "areaUnderROC" if task == "binary" else "f1"


def _evaluator(task, label_col):
    from pyspark.ml.evaluation import BinaryClassificationEvaluator, MulticlassClassificationEvaluator

    if task == "binary":
        return BinaryClassificationEvaluator(labelCol=label_col, rawPredictionCol="probability",
                                             metricName="areaUnderROC")
    return MulticlassClassificationEvaluator(labelCol=label_col, metricName="f1")


def cross_validate(head, train, task, classifier, k_folds, fold_col="fold", parallelism=2,
                   grid=None):
    """Pick the head's classifier parameters by k-fold CV over ``fold_col``; refit on all of train.

    Parameters
    ----------
    head : pyspark.ml.Pipeline
        Indexer, classifier, decoder (:func:`covidspark.ml.pipelines.build_head`).
    train : pyspark.sql.DataFrame
        Stored features of the training rows, with integer ``fold_col`` in [0, k).
    task, classifier : str
    k_folds : int
    grid : dict, optional
        ``{param name: [values]}`` (default :data:`PARAM_GRIDS`).

    Returns
    -------
    (pyspark.ml.PipelineModel, dict)
        The best head refitted on all training rows, and ``{method, folds,
        metric, results: [{params, score}], best, description}``.
    """
    from pyspark.ml.tuning import CrossValidator, ParamGridBuilder

    if fold_col not in train.columns:
        raise ValueError(f"Cross-validation needs the {fold_col!r} column of grouped_split "
                         f"(k_folds); columns: {train.columns}")
    classifier_stage = head.getStages()[1]
    grid = grid or PARAM_GRIDS[classifier]
    builder = ParamGridBuilder()
    for name, values in grid.items():
        builder = builder.addGrid(classifier_stage.getParam(name), values)
    param_maps = builder.build()
    label_col = classifier_stage.getLabelCol()
    cv = CrossValidator(estimator=head, estimatorParamMaps=param_maps,
                        evaluator=_evaluator(task, label_col), numFolds=k_folds, foldCol=fold_col,
                        parallelism=parallelism, seed=0)
    model = cv.fit(train)
    results = [{"params": {p.name: v for p, v in pm.items()}, "score": float(score)}
               for pm, score in zip(param_maps, model.avgMetrics)]
    best = max(results, key=lambda r: r["score"])
    metric = selection_metric(task)
    info = {"method": "cv", "folds": k_folds, "metric": metric, "results": results,
            "best": best["params"],
            "description": (f"{k_folds}-fold cross-validation over the grouped folds "
                            f"(patients and duplicates never straddle a fold), {len(results)} "
                            f"settings, maximising {metric}")}
    logger.info("Cross-validation of %s: best %s (%s %.4f)", classifier, best["params"], metric,
                best["score"])
    return model.bestModel, info
