"""Weight resolution: once, on the driver, into a file Spark ships to the executors.

Executors never reach the network.

- ``"imagenet"`` downloads through Keras' own URL and verifies Keras' hash.
- a path (``/dbfs/...``, ``/Volumes/...``, a local ``.h5`` or ``.weights.h5``)
  is used as it is; a URI (``s3://``, ``hdfs://``, ``dbfs:/``) is copied once to
  the driver's cache through the session's filesystem.
- ``"random"`` builds the network with seeded random weights once and saves them,
  so every worker loads bit-identical weights. For offline tests and demos only:
  every report that uses them says so.

Every resolved file is identified by its content (sha256): the identity a
saved featurizer records, that keys the feature store and the OpenVINO cache,
and that a later load checks (:func:`check_weights`).

Nothing here imports TensorFlow or Keras at module level.
"""
import dataclasses
import hashlib
import logging
import os
import tempfile

from covidspark.errors import InputError, InputNotFoundError, UserError
from covidspark.models.registry import build_backbone, get_backbone
from covidspark.runtime.cache import default_cache_dir, file_sha256
from covidspark.runtime.logs import quiet_native_stderr

logger = logging.getLogger(__name__)


class WeightsUnavailableError(UserError, RuntimeError):
    """Raised when ImageNet weights cannot be downloaded or verified."""


class WeightsMismatchError(InputError):
    """The weights file found now is not the one a saved model was made with."""


@dataclasses.dataclass(frozen=True)
class ResolvedWeights:
    """A weights file on the driver, ready to be shipped to executors.

    Attributes
    ----------
    path : str
        Local path (or a URI all executors can read) of the weights file.
    sha256 : str
        Hex sha256 of the weights (:func:`weights_sha256`: over the tensors of
        an HDF5 file, so a re-saved copy of the same weights matches).
    description : str
        One line for reports, e.g. ``"random (seed 0) - NOT pretrained"``.
    pretrained : bool
        False for ``"random"`` weights.
    """

    path: str
    sha256: str
    description: str
    pretrained: bool

    @property
    def weights_id(self):
        """The weights' identity by content: keys caches and the feature store."""
        return f"sha256:{self.sha256}"


def check_weights(resolved, expected_sha256, what="the saved model"):
    """Refuse weights whose content is not the file ``what`` was made with.

    Parameters
    ----------
    resolved : ResolvedWeights
    expected_sha256 : str or None
        The hash ``what`` recorded; None or empty (saved before hashes were
        recorded): nothing to check.

    Raises
    ------
    WeightsMismatchError
        Naming both hashes and the file.
    """
    if expected_sha256 and expected_sha256 != resolved.sha256:
        raise WeightsMismatchError(
            f"The weights at {resolved.path} ({resolved.description}) have sha256 "
            f"{resolved.sha256}, but {what} was made with weights of sha256 "
            f"{expected_sha256}. Point weights at the original file (or retrain with this one)")


def resolve_weights(model_name, weights="imagenet", seed=0, cache_dir=None, files=None):
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
        for random ones and copies of remote files.
    files : covidspark.runtime.filesystem.Files, optional
        The session's filesystem, to read weights given as a URI.

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
    from covidspark.runtime.filesystem import has_scheme, local_path

    if has_scheme(weights) and local_path(weights) is None:
        return _resolve_remote_file(weights, files, cache_dir)
    return _resolve_local_file(local_path(weights) or weights)


def _resolve_imagenet(spec, cache_dir):
    from covidspark.models.registry import has_pretrained_weights

    if not has_pretrained_weights(spec):
        raise InputError(f"{spec.name} has no ImageNet weights: pass weights='random' (seeded, "
                         f"not pretrained) or a weights file, e.g. one a fine-tuning run "
                         f"exported")
    # A verified file already in Keras' cache is used without importing Keras, so that
    # resolving weights never fixes this process's Keras backend (see keras_backend).
    home = cache_dir or os.environ.get("KERAS_HOME") or "~/.keras"  # as keras.utils.get_file
    cached = os.path.join(os.path.expanduser(home), "models", spec.weights_file)
    if os.path.isfile(cached) and _md5(cached) == spec.weights_hash:
        return _imagenet(spec, cached)
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
    return _imagenet(spec, path)


def _imagenet(spec, path):
    return ResolvedWeights(path=path, sha256=weights_sha256(path),
                           description=f"imagenet ({spec.weights_file})", pretrained=True)


def _md5(path):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _resolve_random(spec, seed, cache_dir):
    from importlib.metadata import version

    root = os.path.join(cache_dir or default_cache_dir(), "weights")
    os.makedirs(root, exist_ok=True)
    # Keras' initialisers may change between versions; the version is part of the name.
    # (Read from the package metadata: an existing file is used without importing Keras,
    # which would fix this process's Keras backend.)
    name = f"{spec.name.lower()}-random-seed{seed}-keras{version('keras')}.weights.h5"
    if spec.keras_module.startswith("covidspark."):  # our own networks carry their version
        import importlib

        revision = importlib.import_module(spec.keras_module).ARCHITECTURE_REVISION
        name = name.replace("-random-", f"-r{revision}-random-")
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
        sha256=weights_sha256(path),
        description=f"random (seed {seed}) - NOT pretrained ImageNet weights",
        pretrained=False,
    )


def _resolve_remote_file(uri, files, cache_dir):
    """Copy a weights file at a URI into the driver's cache (once per process).

    The copy is what is hashed and shipped to the executors, so its identity is
    checked like a local file's, and Spark Connect (which ships local files only)
    works the same.
    """
    if files is None:
        raise InputError(f"Weights at {uri} are read through a Spark session's filesystem; "
                         f"none was given here. Copy the file to a local path and pass that")
    qualified = files.qualify(uri)
    if qualified in _REMOTE_COPIES and os.path.isfile(_REMOTE_COPIES[qualified]):
        path = _REMOTE_COPIES[qualified]
    else:
        if not files.exists(qualified):
            raise InputNotFoundError(f"Weights file not found: {qualified}. Received: "
                                     f"weights={uri!r}")
        data = files.read_bytes(qualified)
        root = os.path.join(cache_dir or default_cache_dir(), "weights", "remote")
        os.makedirs(root, exist_ok=True)
        digest = hashlib.sha256(data).hexdigest()
        path = os.path.join(root, f"{digest[:16]}-{os.path.basename(qualified.rstrip('/'))}")
        if not os.path.exists(path):
            fd, tmp = tempfile.mkstemp(dir=root)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        _REMOTE_COPIES[qualified] = path
    return _file_weights(path, qualified)


# URI -> local copy, for this process: a job resolves its weights several times.
_REMOTE_COPIES = {}


def _resolve_local_file(weights):
    path = os.path.abspath(os.path.expanduser(weights))
    if not os.path.isfile(path):
        raise InputNotFoundError(
            f"Weights file not found: {path}. Pass 'imagenet', 'random' or the path of a "
            f"Keras weights file. Received: weights={weights!r}"
        )
    return _file_weights(path, path)


def _file_weights(path, name):
    """A weights file, pretrained unless it says it was fine-tuned from weights that were not."""
    started = fine_tuned_from(path)
    description = f"file {name}" + (f", fine-tuned from {started['description']}"
                                    if started else "")
    return ResolvedWeights(path=path, sha256=weights_sha256(path), description=description,
                           pretrained=bool(started["pretrained"]) if started else True)


#: The HDF5 attribute of a fine-tuned backbone's weights file that names its starting weights.
FINE_TUNED_FROM_ATTR = "covidspark_fine_tuned_from"


def mark_fine_tuned(path, started_from):
    """Record in the Keras ``.weights.h5`` file ``path`` what it was fine-tuned from.

    ``started_from``: the starting weights' ``description`` and ``pretrained``. A
    backbone fine-tuned from random weights is then reported as not pretrained
    wherever the file goes (``covidspark serve``, ``train --weights``). An HDF5
    attribute, not a tensor: the file's identity (:func:`weights_sha256`) stays.
    """
    import json

    import h5py

    with h5py.File(path, "a") as f:
        f.attrs[FINE_TUNED_FROM_ATTR] = json.dumps(
            {"description": started_from["description"],
             "pretrained": bool(started_from["pretrained"])})


def fine_tuned_from(path):
    """What :func:`mark_fine_tuned` recorded in the weights file ``path``, or None.

    Remembered while the file's size and mtime stay, as :func:`weights_sha256` is.
    """
    key = _file_key(path)
    if key not in _FINE_TUNED_FROM:
        _FINE_TUNED_FROM[key] = _read_fine_tuned_from(path)
    return _FINE_TUNED_FROM[key]


def _read_fine_tuned_from(path):
    import json

    import h5py

    if not h5py.is_hdf5(path):
        return None
    with h5py.File(path, "r") as f:
        said = f.attrs.get(FINE_TUNED_FROM_ATTR)
    return json.loads(said) if said is not None else None


def _file_key(path):
    """A file's identity while it is not rewritten: what the caches below key on."""
    info = os.stat(path)
    return os.path.abspath(path), info.st_size, info.st_mtime_ns


def weights_sha256(path):
    """The identity of a weights file: sha256 over its tensors, or over its bytes.

    For HDF5 (every Keras weights file): every dataset's path, dtype, shape and
    bytes, in name order. HDF5 stores creation times, so two saves of the same
    weights differ in bytes; this identity does not, and any changed tensor
    changes it. Other files: :func:`file_sha256`. Remembered while the file's
    size and mtime stay (a job resolves its weights several times).
    """
    key = _file_key(path)
    if key not in _SHA256:
        _SHA256[key] = _hdf5_tensors_sha256(path) or file_sha256(path)
    return _SHA256[key]


def _hdf5_tensors_sha256(path):
    import h5py
    import numpy as np

    if not h5py.is_hdf5(path):
        return None
    digest = hashlib.sha256()
    with h5py.File(path, "r") as f:
        names = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset)
                     else None)
        for name in sorted(names):
            data = np.ascontiguousarray(f[name][()])
            digest.update(f"{name}|{data.dtype.str}|{data.shape}\n".encode())
            digest.update(data.tobytes())
    return digest.hexdigest()


# (path, size, mtime) -> identity: hashing a 100 MB file takes ~0.3 s.
_SHA256 = {}
_FINE_TUNED_FROM = {}  # (path, size, mtime) -> the mark: resolved several times a job
