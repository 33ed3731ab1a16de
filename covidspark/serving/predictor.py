"""One image in, one prediction out: a saved pipeline without a SparkSession.

:class:`Predictor` loads a model folder once (:mod:`covidspark.serving.local_model`),
builds the backbone with the engine the featurizer would use, and then for each
image decodes it exactly as the featurizer does, computes its features and
applies the classifier in numpy. Its results equal the Spark pipeline's on the
same image (tested for LR, RF and DT). The service, ``covidspark predict
--heatmaps`` and notebooks use it.
"""
import threading
import time

import numpy as np

from covidspark.data import decoding
from covidspark.serving.local_model import load_pipeline


class Predictor:
    """A saved covidspark pipeline, ready to predict single images.

    Parameters
    ----------
    model_dir : str
        A model folder saved by ``train`` / ``compare`` (``<run>/model``).
    max_pixels : int
        Images with more pixels are refused before decoding (decompression bombs).
    engine : str, optional
        Overrides the saved featurizer's ``engine`` ("keras", "openvino", "auto").
    weights_file : str, optional
        A local copy of the backbone weights to use instead of resolving the
        saved setting (Spark ships the driver's file to the executors this way);
        its sha256 must equal the one the model recorded.

    Notes
    -----
    Safe to call from several threads: inference is serialised by a lock (the
    backbone already uses every core for one image).
    """

    def __init__(self, model_dir, max_pixels=decoding.DEFAULT_MAX_PIXELS, engine=None,
                 weights_file=None):
        from covidspark.models.registry import get_backbone
        from covidspark.models.weights import check_weights, resolve_weights

        self.pipeline = load_pipeline(model_dir)
        params = self.pipeline.featurizer
        self.spec = get_backbone(params["modelName"])
        self.weights = resolve_weights(self.spec.name,
                                       weights_file or params.get("weights", "imagenet"),
                                       int(params.get("seed", 0)))
        check_weights(self.weights, params.get("weightsSha256"), f"the model in {model_dir}")
        self.max_pixels = max_pixels
        self.options = {"scale_hint": params.get("scaleHint", "SCALE_AREA_AVERAGING"),
                        "crop": float(params.get("centerCrop", 1.0)),
                        "clahe": bool(params.get("clahe", False))}
        self._engine_setting = engine or params.get("engine", "keras")
        self._precision = params.get("precision", "float32")
        self._runner = None
        self._keras = None
        self.lock = threading.Lock()

    # ------------------------------------------------------------------ model

    @property
    def labels(self):
        """Class labels in index order."""
        return self.pipeline.labels

    @property
    def model_id(self):
        """The saved pipeline's uid."""
        return self.pipeline.model_id

    def describe(self):
        """Facts about the loaded model, for ``/health`` and reports."""
        return {"model_id": self.model_id, "backbone": self.spec.name,
                "classifier": self.pipeline.head.kind, "labels": list(self.labels),
                "threshold": self.pipeline.covid_threshold,
                "weights": self.weights.description, "pretrained": self.weights.pretrained,
                "engine": self.runner.engine}

    @property
    def runner(self):
        """The backbone runner (built on first use): Keras or OpenVINO, as the featurizer's."""
        if self._runner is None:
            from covidspark.models.engines import build_runner

            engine = self._engine_setting
            if engine == "keras":
                # Grad-CAM needs the Keras model: one backbone serves both.
                self._runner = self.keras_runner
            else:
                self._runner = build_runner(self.spec, self.weights.path,
                                            self.weights.weights_id, self._precision, engine)
                if (self._runner.engine, self._runner.precision) == ("keras", "float32"):
                    self._keras = self._runner
        return self._runner

    @property
    def keras_runner(self):
        """The Keras runner (Grad-CAM needs gradients, which only Keras gives)."""
        if self._keras is None:
            from covidspark.models.engines import KerasBackboneRunner, configure_tensorflow

            configure_tensorflow()
            self._keras = KerasBackboneRunner(self.spec, self.weights.path, "float32")
        return self._keras

    def warm_up(self):
        """Build the backbone and run it once (tracing), so that the first request is fast."""
        size = self.spec.input_size
        self.features(np.zeros((size, size, 3), dtype=np.float32))

    # ------------------------------------------------------------------ images

    def open(self, data, name="<upload>"):
        """Decode encoded bytes (raises :class:`covidspark.data.decoding.ImageDecodeError`)."""
        return decoding.open_image(data, name, self.max_pixels)

    def pixels(self, image):
        """An opened image as the network's input, exactly as the featurizer prepares it."""
        return decoding.prepare(image, self.spec.input_size, **self.options)

    def features(self, pixels):
        """Backbone features of a ``(n, size, size, 3)`` batch (or one image)."""
        batch = pixels[None] if pixels.ndim == 3 else pixels
        with self.lock:
            return self.runner(batch)

    def classify(self, features):
        """A prediction dict for one feature vector."""
        probability, index = self.pipeline.head.predict(features)
        return {"label": self.labels[index],
                "probabilities": {label: float(p) for label, p in zip(self.labels, probability)},
                "threshold": self.pipeline.covid_threshold,
                "model_id": self.model_id}

    def predict(self, data, name="<upload>"):
        """Predict one encoded image.

        Parameters
        ----------
        data : bytes
            PNG, JPEG or DICOM bytes.
        name : str
            Names the image in error messages.

        Returns
        -------
        dict
            ``label``, ``probabilities`` (label -> p), ``threshold`` (the binary
            COVID threshold, None for 3-class), ``model_id``, ``timing_ms``
            (decode, features, classify).

        Raises
        ------
        covidspark.data.decoding.ImageDecodeError
            If the bytes are not a decodable image, or too large.
        """
        start = time.perf_counter()
        pixels = self.pixels(self.open(data, name))
        decoded = time.perf_counter()
        features = self.features(pixels)[0]
        featurized = time.perf_counter()
        result = self.classify(features)
        done = time.perf_counter()
        result["timing_ms"] = {"decode": round(1000 * (decoded - start), 2),
                               "features": round(1000 * (featurized - decoded), 2),
                               "classify": round(1000 * (done - featurized), 2)}
        return result

    def predict_path(self, path):
        """:meth:`predict` on a local file."""
        with open(path, "rb") as f:
            return self.predict(f.read(), name=path)


def probabilities_array(result, labels):
    """A prediction dict's probabilities in index order, as numpy."""
    return np.array([result["probabilities"][label] for label in labels])
