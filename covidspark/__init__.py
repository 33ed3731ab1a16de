"""covidspark: chest X-ray classification at cluster scale.

Spark ingestion of chest X-rays, a ``DeepImageFeaturizer`` that runs pretrained
Keras backbones on the executors, and MLlib classifiers with honest evaluation.

The package is grouped by stage (see README "Layout"): ``runtime`` (session,
progress) → ``data`` → ``models`` → ``evaluation`` → ``ml`` → ``serving`` →
``workflows`` → ``cli``; imports point along that list, never back.

Importing this package is cheap: it never imports TensorFlow or Keras (those are
imported inside functions that run on the executors, or when weights are resolved
on the driver), and pyspark-dependent names are loaded on first use.
"""
import importlib

from covidspark import _compat
from covidspark._version import __version__

# Old flat module paths (covidspark.featurizer, ...) keep working for one release.
_compat.install()

# Public name -> module that defines it. Loaded lazily (PEP 562) so that
# ``import covidspark`` stays fast and works before Spark is configured.
_PUBLIC = {
    # data
    "read_images": "covidspark.data.reading",
    "IngestError": "covidspark.data.rejects",
    "IngestResult": "covidspark.data.rejects",
    "decode_image": "covidspark.data.decoding",
    "resolve_duplicates": "covidspark.data.duplicates",
    "grouped_split": "covidspark.data.splits",
    "stratified_split": "covidspark.data.splits",
    "split_images": "covidspark.data.splits",
    "describe": "covidspark.data.datasets",
    "merge": "covidspark.data.datasets",
    "read_dataset": "covidspark.data.datasets",
    "synthetic": "covidspark.data.synthetic",
    # models
    "BACKBONES": "covidspark.models.registry",
    "resolve_weights": "covidspark.models.weights",
    # ml
    "DeepImageFeaturizer": "covidspark.ml.featurizer",
    "PixelFeaturizer": "covidspark.ml.baseline",
    "FeatureStore": "covidspark.ml.feature_store",
    "build_pipeline": "covidspark.ml.pipelines",
    "prepare_task": "covidspark.ml.pipelines",
    "TrainOptions": "covidspark.ml.experiment",
    "fit_and_evaluate": "covidspark.ml.experiment",
    "choose_threshold": "covidspark.ml.thresholds",
    "apply_threshold": "covidspark.ml.thresholds",
    "cross_validate": "covidspark.ml.selection",
    # evaluation
    "evaluate": "covidspark.evaluation.scoring",
    "write_report": "covidspark.evaluation.reports",
    # workflows
    "train": "covidspark.workflows.training",
    "compare": "covidspark.workflows.comparison",
    "featurize": "covidspark.workflows.featurization",
    "predict": "covidspark.workflows.prediction",
    "evaluate_model": "covidspark.workflows.model_evaluation",
    "TrainConfig": "covidspark.workflows.config",
    "CompareConfig": "covidspark.workflows.config",
    "FeaturizeConfig": "covidspark.workflows.config",
    "PredictConfig": "covidspark.workflows.config",
    "EvaluateConfig": "covidspark.workflows.config",
    # runtime
    "get_spark": "covidspark.runtime.session",
    # errors
    "UserError": "covidspark.errors",
    "InputError": "covidspark.errors",
}

__all__ = ["__version__", *sorted(_PUBLIC)]


def __getattr__(name):
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'covidspark' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
