"""``DeepImageFeaturizer``: pretrained Keras backbones as a Spark ML Transformer.

The API is that of Databricks' retired ``sparkdl.DeepImageFeaturizer``
(``inputCol``, ``outputCol``, ``modelName``, ``scaleHint``), plus ``weights``,
``seed`` and ``batchSize``. What differs underneath:

- Decoding, resizing, the model's own preprocessing and the forward pass run
  together on the executors, in batches (an iterator pandas UDF over Arrow):
  only encoded bytes travel from the JVM to Python, never decoded tensors.
- The Keras model is built once per Python worker and cached there
  (:mod:`covidspark.models.engines`, keyed by model, weights, precision and engine),
  which needs ``spark.python.worker.reuse=true`` (Spark's default). Inference
  is a compiled ``tf.function`` (or OpenVINO), not ``model.predict`` per batch.
- Weights are resolved once on the driver and shipped to the executors
  (``SparkContext.addFile``, or session artifacts under Spark Connect);
  executors never download anything.
- The stage is persistable (``DefaultParamsWritable``), alone or inside a
  ``PipelineModel``, and records the sha256 of the weights file it used
  (``weightsSha256``): loaded later or elsewhere, a different file at the same
  path is refused, naming both hashes.
"""
import logging

from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable

from covidspark.data import decoding
from covidspark.errors import InputError
from covidspark.ml.worker_featurize import (DECODE_AHEAD_CONF, DECODE_THREADS_CONF,
                                            decode_thread_count, featurize_udf)
from covidspark.models.engines import ENGINES, PRECISIONS
from covidspark.models.registry import get_backbone
from covidspark.models.weights import check_weights, resolve_weights
from covidspark.runtime.connect import ImageCounter, WhereItRan, ship_file

logger = logging.getLogger(__name__)

IMAGE_STRUCT_FIELDS = ("origin", "height", "width", "nChannels", "mode", "data")

# Bump when decoding or preprocessing changes what features are computed.
_PREPROCESSING_VERSION = "gray3-keras-preprocess-v1"


class DeepImageFeaturizer(Transformer, HasInputCol, HasOutputCol,
                          DefaultParamsReadable, DefaultParamsWritable):
    """Turn chest X-ray images into deep features with a pretrained Keras network.

    Each image is decoded on the executors (PNG/JPEG, 8 or 16 bit), converted to
    grayscale and replicated to three channels, resized to the network's input
    size, preprocessed with the network's own ``preprocess_input`` and passed
    through the network without its classification top; global average pooling
    gives one vector per image.

    Parameters
    ----------
    inputCol : str
        A binary column of encoded image files (``read_images``' ``content``), a
        string column of file paths (read by the workers), or Spark's image struct
        (``spark.read.format("image")``).
    outputCol : str
        Name of the ``Vector`` column to add (default ``"features"``).
    modelName : str
        A key of :data:`covidspark.models.BACKBONES`: ``"ResNet50"``,
        ``"InceptionV3"``, ``"DenseNet121"``, ``"VGG16"``, ``"VGG19"``, ``"Xception"``.
    scaleHint : str
        Resize filter, by sparkdl's names: ``"SCALE_AREA_AVERAGING"`` (default)
        or ``"SCALE_SMOOTH"`` (box filter); ``"SCALE_DEFAULT"``, ``"SCALE_FAST"``,
        ``"SCALE_REPLICATE"`` (nearest neighbour).
    weights : str
        ``"imagenet"`` (default; downloaded once on the driver with Keras' hash
        check), a path to a Keras weights file, or ``"random"`` (seeded random
        weights: offline tests and demos only, not pretrained).
    seed : int
        Seed of ``"random"`` weights (default 0).
    batchSize : int
        Images per forward pass (default 32); also caps Arrow batches.
    precision : str
        ``"float32"`` (default), ``"bfloat16"`` or ``"auto"`` (bfloat16 where the
        worker's CPU has AMX / AVX-512 BF16 or its GPU compute capability >= 8.0).
        Features are always float32 vectors.
    centerCrop : float
        Central fraction of width and height kept before resizing (default 1.0:
        the whole image), e.g. 0.9 to cut borders and burnt-in labels.
    clahe : bool
        CLAHE contrast equalisation (clip limit 2.0, 8x8 tiles, OpenCV:
        ``covidspark[clahe]``) before resizing, as one original study did.
    engine : str
        ``"keras"`` (default; Keras on TensorFlow), ``"openvino"`` (CPU workers;
        ``covidspark[openvino]``), ``"torch"`` (Keras 3 on PyTorch, CPU or CUDA;
        ``covidspark[torch]``) or ``"auto"`` (a GPU task: torch where installed,
        else keras; a CPU task: OpenVINO where installed, else keras). One Keras
        backend per Python worker: a worker that ran ``keras`` refuses ``torch``
        and the reverse.

    Attributes
    ----------
    weightsSha256 : Param
        Recorded, not chosen: the sha256 of the weights file, set at the first
        ``transform`` or ``save``. A stage that holds one refuses any other file
        (:class:`covidspark.models.weights.WeightsMismatchError`); changing
        ``modelName``, ``weights`` or ``seed`` clears it.

    Examples
    --------
    >>> from covidspark import DeepImageFeaturizer, read_images
    >>> df = read_images(spark, "/data/xrays")                     # doctest: +SKIP
    >>> featurizer = DeepImageFeaturizer(inputCol="content", outputCol="features",
    ...                                  modelName="ResNet50", weights="random")
    >>> features = featurizer.transform(df)                       # doctest: +SKIP
    >>> featurizer.save("/tmp/featurizer")                        # doctest: +SKIP
    >>> DeepImageFeaturizer.load("/tmp/featurizer").getModelName()  # doctest: +SKIP
    'ResNet50'
    """

    modelName = Param(Params._dummy(), "modelName",
                      "backbone network, one of covidspark.models.BACKBONES",
                      typeConverter=TypeConverters.toString)
    scaleHint = Param(Params._dummy(), "scaleHint",
                      "resize filter: " + ", ".join(decoding.SCALE_HINTS),
                      typeConverter=TypeConverters.toString)
    weights = Param(Params._dummy(), "weights",
                    "'imagenet', 'random' (seeded, not pretrained) or a weights file path",
                    typeConverter=TypeConverters.toString)
    seed = Param(Params._dummy(), "seed", "seed of 'random' weights",
                 typeConverter=TypeConverters.toInt)
    batchSize = Param(Params._dummy(), "batchSize", "images per forward pass",
                      typeConverter=TypeConverters.toInt)
    precision = Param(Params._dummy(), "precision",
                      "compute precision: float32, bfloat16 or auto (bf16 on bf16 hardware)",
                      typeConverter=TypeConverters.toString)
    centerCrop = Param(Params._dummy(), "centerCrop",
                       "central fraction of width and height kept before resizing (1.0: all)",
                       typeConverter=TypeConverters.toFloat)
    clahe = Param(Params._dummy(), "clahe",
                  "CLAHE contrast equalisation (clip 2.0, 8x8 tiles) before resizing",
                  typeConverter=TypeConverters.toBoolean)
    engine = Param(Params._dummy(), "engine",
                   "inference engine: keras (TensorFlow), openvino (CPU), torch (Keras on "
                   "PyTorch) or auto",
                   typeConverter=TypeConverters.toString)
    weightsSha256 = Param(Params._dummy(), "weightsSha256",
                          "sha256 of the weights file this stage was used or saved with "
                          "(recorded; a different file is refused)",
                          typeConverter=TypeConverters.toString)

    @keyword_only
    def __init__(self, *, inputCol=None, outputCol=None, modelName=None,
                 scaleHint="SCALE_AREA_AVERAGING", weights="imagenet", seed=0, batchSize=32,
                 precision="float32", engine="keras", centerCrop=1.0, clahe=False):
        super().__init__()
        self._setDefault(outputCol="features", scaleHint="SCALE_AREA_AVERAGING",
                         weights="imagenet", seed=0, batchSize=32, precision="float32",
                         engine="keras", centerCrop=1.0, clahe=False)
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, inputCol=None, outputCol=None, modelName=None,
                  scaleHint="SCALE_AREA_AVERAGING", weights="imagenet", seed=0, batchSize=32,
                  precision="float32", engine="keras", centerCrop=1.0, clahe=False):
        """Set the params; see the class docstring."""
        kwargs = self._input_kwargs
        if kwargs.get("centerCrop") is not None and not 0.0 < kwargs["centerCrop"] <= 1.0:
            raise InputError(f"centerCrop must be in (0, 1]. Received: {kwargs['centerCrop']}")
        if kwargs.get("precision") is not None and kwargs["precision"] not in PRECISIONS:
            raise InputError(f"Unknown precision {kwargs['precision']!r}. "
                             f"Supported: {', '.join(PRECISIONS)}.")
        if kwargs.get("engine") is not None and kwargs["engine"] not in ENGINES:
            raise InputError(f"Unknown engine {kwargs['engine']!r}. "
                             f"Supported: {', '.join(ENGINES)}.")
        if "modelName" in kwargs and kwargs["modelName"] is not None:
            get_backbone(kwargs["modelName"])  # fail early, listing supported names
        if "scaleHint" in kwargs:
            decoding.resample_filter(kwargs["scaleHint"])
        if kwargs.get("batchSize") is not None and kwargs["batchSize"] < 1:
            raise InputError(f"batchSize must be >= 1. Received: batchSize={kwargs['batchSize']}")
        self._forget_weights_hash(kwargs)
        return self._set(**kwargs)

    def _forget_weights_hash(self, changed):
        """Other weights chosen: the recorded hash belonged to the previous ones."""
        if {"modelName", "weights", "seed"} & set(changed):
            self.clear(self.weightsSha256)

    def setModelName(self, value):
        """Set ``modelName``."""
        get_backbone(value)
        self._forget_weights_hash(["modelName"])
        return self._set(modelName=value)

    def getModelName(self):
        """The backbone's name."""
        return self.getOrDefault(self.modelName)

    def setScaleHint(self, value):
        """Set ``scaleHint``."""
        decoding.resample_filter(value)
        return self._set(scaleHint=value)

    def getScaleHint(self):
        """The resize filter's sparkdl name."""
        return self.getOrDefault(self.scaleHint)

    def setWeights(self, value):
        """Set ``weights``: 'imagenet', 'random' or a file path."""
        self._forget_weights_hash(["weights"])
        return self._set(weights=value)

    def getWeights(self):
        """The weights setting."""
        return self.getOrDefault(self.weights)

    def setSeed(self, value):
        """Set ``seed``."""
        self._forget_weights_hash(["seed"])
        return self._set(seed=value)

    def getSeed(self):
        """The seed of random weights."""
        return self.getOrDefault(self.seed)

    def setBatchSize(self, value):
        """Set ``batchSize``."""
        return self._set(batchSize=value)

    def getBatchSize(self):
        """Images per forward pass."""
        return self.getOrDefault(self.batchSize)

    def getPrecision(self):
        """Compute precision setting (features are float32 whatever it is)."""
        return self.getOrDefault(self.precision)

    def getEngine(self):
        """Inference engine setting."""
        return self.getOrDefault(self.engine)

    def setInputCol(self, value):
        """Set ``inputCol``."""
        return self._set(inputCol=value)

    def setOutputCol(self, value):
        """Set ``outputCol``."""
        return self._set(outputCol=value)

    # ------------------------------------------------------------------ driver side

    def resolvedWeights(self):
        """Resolve the weights on the driver (download, verify or generate once).

        Returns
        -------
        covidspark.models.ResolvedWeights
        """
        from pyspark.sql import SparkSession

        from covidspark.runtime.filesystem import Files

        if not self.isDefined(self.modelName):
            raise InputError("DeepImageFeaturizer: modelName is not set. "
                             f"Supported: {', '.join(_backbone_names())}.")
        resolved = resolve_weights(self.getModelName(), self.getWeights(), self.getSeed(),
                                   files=Files(SparkSession.getActiveSession()))
        if self.isSet(self.weightsSha256):
            check_weights(resolved, self.getOrDefault(self.weightsSha256),
                          f"this DeepImageFeaturizer ({self.uid})")
        return resolved

    def write(self):
        """A writer that also records the weights' sha256 (:attr:`weightsSha256`)."""
        from covidspark.models.weights import WeightsUnavailableError

        try:
            self._record_weights_hash()
        except WeightsUnavailableError as error:
            # Saving a stage that never ran must not need the network; said, not hidden.
            logger.warning("Saving %s without the weights' sha256 (the file is not here "
                           "to hash): %s", self.uid, str(error).splitlines()[0])
        return super().write()

    def _record_weights_hash(self, resolved=None):
        if self.isSet(self.weightsSha256) or not self.isDefined(self.modelName):
            return
        self._set(weightsSha256=(resolved or self.resolvedWeights()).sha256)

    def imagesFeaturized(self):
        """Images this featurizer has run through its network so far, over all its transforms.

        Counted on the executors as actions run: a DataFrame featurized once and
        persisted counts each image once, however many models are then fitted
        on it. In a classic session (an accumulator) the count grows while tasks
        finish and a recomputed partition counts again; under Spark Connect (an
        observation) an action's images are counted once it has finished.
        """
        return sum(counter.value for counter in getattr(self, "_counters", []))

    def ranOn(self):
        """Where this featurizer's images ran, over all its transforms so far.

        Returns
        -------
        dict or None
            ``{"<engine> <precision> <device> @ <host>": images}``, e.g.
            ``{"torch bfloat16 cuda:0 (Spark gpu 0) @ node-3": 512}``; None under
            Spark Connect, which has no accumulators to tally it.
        """
        tallies = [where.value for where in getattr(self, "_where", [])]
        if any(t is None for t in tallies):
            return None
        merged = {}
        for tally in tallies:
            for key, count in tally.items():
                merged[key] = merged.get(key, 0) + count
        return merged

    def featureSignature(self):
        """What determines the features this stage computes (the feature store's key).

        Model, weights content (sha256) and preprocessing; not ``batchSize``,
        ``precision`` or ``engine``, which change results only by rounding.
        """
        resolved = self.resolvedWeights()
        return {
            "model": self.getModelName(),
            "weights_id": resolved.weights_id,
            "weights_sha256": resolved.sha256,
            "scaleHint": self.getScaleHint(),
            "centerCrop": self.getOrDefault(self.centerCrop),
            "clahe": self.getOrDefault(self.clahe),
            "preprocessing": _PREPROCESSING_VERSION,
        }

    def _transform(self, dataset):
        from pyspark.ml.functions import array_to_vector
        from pyspark.sql import functions as F

        spec = get_backbone(self.getModelName())
        input_col = self.getInputCol()
        if input_col not in dataset.columns:
            raise InputError(
                f"DeepImageFeaturizer: inputCol {input_col!r} not in the DataFrame; "
                f"columns: {dataset.columns}"
            )
        if self.getOutputCol() in dataset.columns:  # as pyspark.ml's own transformers refuse
            raise InputError(
                f"DeepImageFeaturizer: outputCol {self.getOutputCol()!r} already exists in the "
                f"DataFrame; set another outputCol or drop that column first")
        kind = _input_kind(dataset.schema[input_col].dataType, input_col)
        resolved = self.resolvedWeights()
        self._record_weights_hash(resolved)
        spark = dataset.sparkSession
        shipped = ship_file(spark, resolved.path)
        batch_size = self.getBatchSize()
        bound_arrow_batches(spark, batch_size)
        logger.info("DeepImageFeaturizer: %s, weights %s, batch %d",
                    spec.name, resolved.description, batch_size)

        if kind == "image":
            names = F.col(f"{input_col}.origin")
        elif kind == "path":
            names = F.col(input_col)
        elif "path" in dataset.columns:
            names = F.col("path").cast("string")
        else:
            names = F.lit(None).cast("string")
        options = {"scale_hint": self.getScaleHint(),
                   "crop": self.getOrDefault(self.centerCrop),
                   "clahe": self.getOrDefault(self.clahe)}
        # Counts every image a forward pass saw, on every executor, across this
        # instance's transforms: a recomputed partition shows up here.
        counter = ImageCounter(spark)
        self._counters = [*getattr(self, "_counters", []), counter]
        where = WhereItRan(spark)
        self._where = [*getattr(self, "_where", []), where]
        decode_threads = spark.conf.get(DECODE_THREADS_CONF, "auto")
        decode_thread_count(decode_threads, None, 1)  # a bad setting fails here, not on executors
        udf = featurize_udf(spec.name, shipped, resolved.weights_id, kind, options, batch_size,
                            self.getPrecision(), self.getEngine(), counter.accumulator,
                            spark.conf.get(DECODE_AHEAD_CONF, "auto"), where.accumulator,
                            decode_threads)
        return counter.observe(dataset.withColumn(
            self.getOutputCol(), array_to_vector(udf(F.col(input_col), names))
        ))


ARROW_RECORDS_CONF = "spark.sql.execution.arrow.maxRecordsPerBatch"
ARROW_BYTES_CONF = "spark.sql.execution.arrow.maxBytesPerBatch"


def bound_arrow_batches(spark, batch_size):
    """Bound the encoded images a Python worker holds; returns whether the session changed.

    The workers cut Spark's Arrow batches into the network's batches
    (:func:`~covidspark.ml.worker_featurize.model_batches`), so only the encoded
    bytes of one Arrow batch are at stake. From Spark 4.0 Spark bounds them
    itself (``maxBytesPerBatch``, SPARK-51316; 64 MB by default in 4.3) and
    the user's session is left as it is. Before, only a row count bounds them (10,000 by default:
    10,000 X-rays in one batch), and it is lowered to ``batch_size`` on the
    session, for good (the setting is read when a query runs, after
    ``transform`` returns); a smaller setting is kept.
    """
    try:  # a default given to get() would be returned instead of Spark's own
        spark.conf.get(ARROW_BYTES_CONF)
        return False
    except Exception:  # noqa: BLE001 - py4j's or Connect's "no such setting": Spark < 4.0
        pass
    records = int(spark.conf.get(ARROW_RECORDS_CONF, "10000"))
    if 0 < records <= batch_size:
        return False
    logger.info("DeepImageFeaturizer: %s lowered from %d to batchSize %d (this Spark has "
                "no %s)", ARROW_RECORDS_CONF, records, batch_size, ARROW_BYTES_CONF)
    spark.conf.set(ARROW_RECORDS_CONF, str(batch_size))
    return True


def _backbone_names():
    from covidspark.models.registry import BACKBONES

    return list(BACKBONES)


def _input_kind(data_type, name):
    from pyspark.sql.types import BinaryType, StringType, StructType

    if isinstance(data_type, BinaryType):
        return "bytes"
    if isinstance(data_type, StringType):
        return "path"
    if isinstance(data_type, StructType) and set(IMAGE_STRUCT_FIELDS) <= set(data_type.names):
        return "image"
    raise TypeError(
        f"DeepImageFeaturizer: inputCol {name!r} has type {data_type.simpleString()}; "
        f"expected binary (encoded image bytes), string (file paths) or Spark's image struct"
    )
