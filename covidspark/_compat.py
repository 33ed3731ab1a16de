"""The module paths of covidspark 0.1 (one flat package), kept for one release.

covidspark 0.2 groups its modules into subpackages by stage. Code and notebooks
that import an old path (``from covidspark.featurizer import
DeepImageFeaturizer``) keep working: the old name is a module holding every name
of its new home(s), and importing it emits a ``DeprecationWarning`` that names the
new path. Saved ``PipelineModel``s record their Python stages' class paths
(``covidspark.featurizer.DeepImageFeaturizer`` for a model saved by 0.1), so this
is also what lets a model saved before the move load after it.

``covidspark.models`` and ``covidspark.evaluation`` were modules and are now
packages; their ``__init__`` exports the old public names.
"""
import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings

REMOVED_IN = "0.3"

# Old module -> its new home(s); a name is looked up in the first that has it.
MOVED_MODULES = {
    "covidspark.session": ("covidspark.runtime.session",),
    "covidspark.progress": ("covidspark.runtime.progress",),
    "covidspark.images": ("covidspark.data.reading", "covidspark.data.decoding"),
    "covidspark.decoding": ("covidspark.data.decoding",),
    "covidspark.dicom": ("covidspark.data.dicom",),
    "covidspark.datasets": ("covidspark.data.datasets", "covidspark.data.synthetic"),
    "covidspark.duplicates": ("covidspark.data.duplicates",),
    "covidspark.hashing": ("covidspark.data.hashing",),
    "covidspark.splits": ("covidspark.data.splits",),
    "covidspark.engines": ("covidspark.models.engines",),
    "covidspark.metrics": ("covidspark.evaluation.metrics",),
    "covidspark.reports": ("covidspark.evaluation.reports",),
    "covidspark.plots": ("covidspark.evaluation.plots",),
    "covidspark.featurizer": ("covidspark.ml.featurizer",),
    "covidspark.baseline": ("covidspark.ml.baseline",),
    "covidspark.features": ("covidspark.ml.feature_store",),
    "covidspark.pipelines": ("covidspark.ml.pipelines",),
    "covidspark.selection": ("covidspark.ml.selection",),
    "covidspark.thresholds": ("covidspark.ml.thresholds",),
    "covidspark.experiment": ("covidspark.ml.experiment", "covidspark.data.splits"),
    "covidspark.local_model": ("covidspark.serving.local_model",),
    "covidspark.predictor": ("covidspark.serving.predictor",),
    "covidspark.explain": ("covidspark.serving.explain",),
    "covidspark.service": ("covidspark.serving.service",),
}


class _MovedModuleLoader(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old covidspark module path and fills it from the new modules."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED_MODULES:
            return importlib.machinery.ModuleSpec(fullname, self)
        return None

    def create_module(self, spec):
        return None  # a plain module object

    def exec_module(self, module):
        targets = MOVED_MODULES[module.__name__]
        warnings.warn(
            f"{module.__name__} moved to {' and '.join(targets)} in covidspark 0.2; the old "
            f"path will be removed in {REMOVED_IN}. Import from the new path, or from "
            f"'covidspark' itself for the public names.",
            # 2: the importing line; warnings skips the import machinery's frames itself.
            DeprecationWarning, stacklevel=2)
        for target in reversed(targets):
            new = importlib.import_module(target)
            module.__dict__.update({k: v for k, v in vars(new).items()
                                    if not (k.startswith("__") and k.endswith("__"))})
        module.__doc__ = f"Deprecated alias of {', '.join(targets)}."


def install():
    """Put the finder on ``sys.meta_path`` once (called by ``import covidspark``)."""
    if not any(isinstance(f, _MovedModuleLoader) for f in sys.meta_path):
        sys.meta_path.append(_MovedModuleLoader())
