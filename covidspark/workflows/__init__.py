"""Workflows: train, compare, featurize, predict and evaluate, as library calls.

Each takes a config object and returns a result object (the run's metrics,
paths and counts). The ``covidspark`` command, ``jobs/*.py`` and the notebooks
are thin callers of these functions::

    from covidspark.workflows import TrainConfig, train

    result = train(TrainConfig(data=["/dbfs/xrays"], task="binary", classifier="lr",
                               weights="random", out="/dbfs/runs/lr"))
    print(result.summary())
"""
from covidspark.workflows.comparison import CompareResult, compare
from covidspark.workflows.config import (CompareConfig, EvaluateConfig, FeaturizeConfig,
                                         FinetuneConfig, PredictConfig, TrainConfig)
from covidspark.workflows.featurization import FeaturizeResult, featurize
from covidspark.workflows.finetuning import finetune
from covidspark.workflows.model_evaluation import EvaluateResult, evaluate_model
from covidspark.workflows.prediction import PredictResult, predict
from covidspark.workflows.training import TrainResult, train

#: ``covidspark.workflows.evaluate`` is the evaluate workflow (``covidspark.evaluate``
#: itself scores a predictions DataFrame, as in 0.1).
evaluate = evaluate_model

__all__ = ["CompareConfig", "CompareResult", "EvaluateConfig", "EvaluateResult",
           "FeaturizeConfig", "FeaturizeResult", "FinetuneConfig", "PredictConfig",
           "PredictResult", "TrainConfig", "TrainResult", "compare", "evaluate", "evaluate_model", "featurize",
           "finetune", "predict", "train"]
