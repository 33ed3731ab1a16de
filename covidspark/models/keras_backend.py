"""One Keras backend per process: TensorFlow for the ``keras`` engine, PyTorch for ``torch``.

Keras 3 reads its backend (``KERAS_BACKEND``) once, when it is first imported,
and cannot switch afterwards. A reused Python worker therefore holds one
backend for its life: the first engine it builds decides, and a later task
asking for the other is refused with a message that says what to do, rather
than silently running the wrong framework.
"""
import os
import sys

from covidspark.errors import UserError

#: The Keras backend each engine runs on.
ENGINE_BACKENDS = {"keras": "tensorflow", "torch": "torch"}


class KerasBackendConflictError(UserError):
    """This process already runs Keras on another backend."""


def loaded_keras_backend():
    """The backend of the Keras this process imported, or None if Keras is not imported."""
    if "keras" not in sys.modules:
        return None
    import keras

    return keras.backend.backend()


def require_keras_backend(backend, engine=None):
    """Make sure Keras runs on ``backend`` here: choose it, or check the one already chosen.

    Parameters
    ----------
    backend : {"tensorflow", "torch"}
    engine : str, optional
        The engine asking, for the message.

    Raises
    ------
    KerasBackendConflictError
        Keras is already imported on another backend in this process.
    """
    loaded = loaded_keras_backend()
    if loaded is None:
        os.environ["KERAS_BACKEND"] = backend
        return
    if loaded != backend:
        wanted = f"engine={engine!r} needs" if engine else "this needs"
        raise KerasBackendConflictError(
            f"Python process {os.getpid()} already runs Keras on the {loaded!r} backend and "
            f"{wanted} the {backend!r} backend; Keras cannot switch backends in a running "
            f"process. Use one engine per Spark application (featurize with the other "
            f"engine in a separate job), or set spark.python.worker.reuse=false so that each "
            f"task gets a fresh worker")


def seed_keras(seed):
    """``keras.utils.set_random_seed(seed)``, without importing TensorFlow for another backend.

    Keras seeds TensorFlow whenever it is installed, for ``tf.data`` pipelines
    this package never uses on the PyTorch backend; the import costs each
    fine-tuning rank several seconds of CPU and hundreds of MB. Keras'
    initialisers draw their default seeds from Python's ``random``, so seeding
    Python, NumPy and PyTorch gives the same weights as Keras' own call; and,
    as Keras' call does, the global ``SeedGenerator`` (what ``keras.random``
    draws from without a seed: dropout) is dropped, to be rebuilt from the seed.
    """
    import keras

    if keras.backend.backend() == "tensorflow" or "tensorflow" in sys.modules:
        keras.utils.set_random_seed(seed)
        return
    import random

    import numpy as np
    # Keras' own names for that state (keras/src/utils/rng_utils.py); these modules
    # import TensorFlow lazily, only when used.
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils import rng_utils

    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)
    if keras.backend.backend() == "torch":
        import torch

        torch.manual_seed(seed)
