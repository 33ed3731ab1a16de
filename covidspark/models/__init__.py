"""Models: the backbone registry, weight resolution, and the engines that run a backbone (Keras, OpenVINO)."""
from covidspark.models.registry import (BACKBONES, Backbone, build_backbone, get_backbone,
                                        numpy_preprocess, preprocess_function)
from covidspark.models.weights import (ResolvedWeights, WeightsUnavailableError, file_sha256,
                                       resolve_weights)
from covidspark.runtime.cache import default_cache_dir

__all__ = ["BACKBONES", "Backbone", "ResolvedWeights", "WeightsUnavailableError",
           "build_backbone", "default_cache_dir", "file_sha256", "get_backbone",
           "numpy_preprocess", "preprocess_function", "resolve_weights"]
