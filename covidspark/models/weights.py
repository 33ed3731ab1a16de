"""Weight resolution: once, on the driver, into a file Spark ships to the executors.

Executors never reach the network.

- ``"imagenet"`` downloads through Keras' own URL and verifies Keras' hash.
- a path (``/dbfs/...``, ``/Volumes/...``, a local ``.h5`` or ``.weights.h5``)
  is used as it is.
- ``"random"`` builds the network with seeded random weights once and saves them,
  so every worker loads bit-identical weights. For offline tests and demos only:
  every report that uses them says so.

Nothing here imports TensorFlow or Keras at module level.
"""
import dataclasses
import hashlib
import logging
import os
import tempfile

from covidspark.errors import InputError, InputNotFoundError, UserError
from covidspark.models.registry import build_backbone, get_backbone
from covidspark.runtime.cache import default_cache_dir
from covidspark.runtime.logs import quiet_native_stderr

logger = logging.getLogger(__name__)


class WeightsUnavailableError(UserError, RuntimeError):
    """Raised when ImageNet weights cannot be downloaded or verified."""


@dataclasses.dataclass(frozen=True)
class ResolvedWeights:
    """A weights file on the driver, ready to be shipped to executors.

    Attributes
    ----------
    path : str
        Local path (or a URI all executors can read) of the weights file.
    weights_id : str
        Stable identity of the weights, part of the featurizer's signature.
    description : str
        One line for reports, e.g. ``"random (seed 0) - NOT pretrained"``.
    pretrained : bool
        False for ``"random"`` weights.
    """

    path: str
    weights_id: str
    description: str
    pretrained: bool


def resolve_weights(model_name, weights="imagenet", seed=0, cache_dir=None):
    """Resolve ``weights`` for ``model_name`` into a file on the driver.

    Parameters
    ----------
    model_name : str
        A key of :data:`BACKBONES`.
    weights : str
        ``"imagenet"``, ``"random"``, or a path to a Keras weights file
        (``.h5`` in Keras' ImageNet layout, or ``.weights.h5`` saved by Keras 3).
    seed : int
        Seed for ``"random"`` weights.
    cache_dir : str, optional
        Where downloaded or generated files go. Defaults to Keras' own cache
        (``~/.keras/models``) for ImageNet files and :func:`default_cache_dir`
        for random ones.

    Returns
    -------
    ResolvedWeights

    Raises
    ------
    WeightsUnavailableError
        If ImageNet weights cannot be downloaded (no network) or fail the hash check.
    FileNotFoundError
        If a local weights path does not exist.
    """
    spec = get_backbone(model_name)
    if weights is None or weights == "":
        raise InputError(
            f"weights must be 'imagenet', 'random' or a file path. Received: weights={weights!r}"
        )
    if weights == "imagenet":
        return _resolve_imagenet(spec, cache_dir)
    if weights == "random":
        return _resolve_random(spec, int(seed), cache_dir)
    return _resolve_local_file(weights)


def _resolve_imagenet(spec, cache_dir):
    with quiet_native_stderr():
        from keras.utils import get_file

    try:
        path = get_file(
            spec.weights_file,
            spec.weights_url,
            cache_subdir="models",
            file_hash=spec.weights_hash,
            cache_dir=cache_dir,
        )
    except Exception as exc:  # Keras raises a bare Exception on URL failures.
        keras_models = os.path.join(cache_dir or "~/.keras", "models")
        raise WeightsUnavailableError(
            f"Could not download the ImageNet weights of {spec.name} "
            f"({spec.weights_file}) from {spec.weights_url}: {exc}\n"
            f"Fetch the file on a machine with network access "
            f"(curl -L -o {spec.weights_file} {spec.weights_url}; md5 {spec.weights_hash}), "
            f"then either pass weights='/path/to/{spec.weights_file}' "
            f"(--weights /path/to/{spec.weights_file}) or copy it into {keras_models}/. "
            f"For an offline test or demo, weights='random' uses seeded random weights "
            f"(not pretrained)."
        ) from exc
    return ResolvedWeights(
        path=path,
        weights_id=f"imagenet:{spec.weights_hash}",
        description=f"imagenet ({spec.weights_file})",
        pretrained=True,
    )


def _resolve_random(spec, seed, cache_dir):
    with quiet_native_stderr():
        import keras

    root = os.path.join(cache_dir or default_cache_dir(), "weights")
    os.makedirs(root, exist_ok=True)
    # Keras' initialisers may change between versions; the version is part of the name.
    name = f"{spec.name.lower()}-random-seed{seed}-keras{keras.__version__}.weights.h5"
    path = os.path.join(root, name)
    if not os.path.exists(path):
        logger.info("Generating seeded random weights for %s (seed %d) at %s", spec.name, seed, path)
        model = build_backbone(spec, weights_path=None, seed=seed)
        # Write to a temporary name and rename, so that a concurrent reader never
        # sees a half-written file.
        fd, tmp = tempfile.mkstemp(dir=root, suffix=".weights.h5")
        os.close(fd)
        try:
            model.save_weights(tmp, overwrite=True)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return ResolvedWeights(
        path=path,
        weights_id=f"random:seed={seed}:keras={keras.__version__}",
        description=f"random (seed {seed}) - NOT pretrained ImageNet weights",
        pretrained=False,
    )


def _resolve_local_file(weights):
    if "://" in weights or weights.startswith("dbfs:"):
        # Remote files are shipped by Spark (addFile understands Hadoop URIs).
        return ResolvedWeights(weights, f"uri:{weights}", f"file {weights}", True)
    path = os.path.abspath(os.path.expanduser(weights))
    if not os.path.isfile(path):
        raise InputNotFoundError(
            f"Weights file not found: {path}. Pass 'imagenet', 'random' or the path of a "
            f"Keras weights file. Received: weights={weights!r}"
        )
    return ResolvedWeights(
        path=path,
        weights_id=f"file:{file_sha256(path)}",
        description=f"file {path}",
        pretrained=True,
    )


def file_sha256(path, chunk_size=1 << 20):
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()
