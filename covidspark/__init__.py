"""covidspark: chest X-ray classification at cluster scale.

Spark ingestion of chest X-rays, a ``DeepImageFeaturizer`` that runs pretrained
Keras backbones on the executors, and MLlib classifiers with honest evaluation.

Importing this package is cheap: it never imports TensorFlow or Keras (those are
imported inside functions that run on the executors, or when weights are resolved
on the driver), and pyspark-dependent names are loaded on first use.
"""
import importlib

from covidspark._version import __version__

# Public name -> module that defines it. Loaded lazily (PEP 562) so that
# ``import covidspark`` stays fast and works before Spark is configured.
_PUBLIC = {
    "read_images": "covidspark.images",
    "IngestError": "covidspark.images",
    "IngestResult": "covidspark.images",
    "decode_image": "covidspark.decoding",
    "FeatureStore": "covidspark.features",
    "resolve_duplicates": "covidspark.duplicates",
    "grouped_split": "covidspark.splits",
    "describe": "covidspark.datasets",
    "merge": "covidspark.datasets",
    "read_dataset": "covidspark.datasets",
    "DeepImageFeaturizer": "covidspark.featurizer",
    "BACKBONES": "covidspark.models",
    "resolve_weights": "covidspark.models",
    "synthetic": "covidspark.datasets",
    "stratified_split": "covidspark.splits",
    "build_pipeline": "covidspark.pipelines",
    "prepare_task": "covidspark.pipelines",
    "evaluate": "covidspark.evaluation",
    "PixelFeaturizer": "covidspark.baseline",
    "TrainOptions": "covidspark.experiment",
    "split_images": "covidspark.experiment",
    "fit_and_evaluate": "covidspark.experiment",
    "choose_threshold": "covidspark.thresholds",
    "apply_threshold": "covidspark.thresholds",
    "cross_validate": "covidspark.selection",
    "write_report": "covidspark.reports",
    "get_spark": "covidspark.session",
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
