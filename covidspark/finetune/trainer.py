"""``ImageClassifierTrainer``: fine-tune a registry backbone across the cluster, as an Estimator.

``fit(images)`` writes the image table once (:mod:`~covidspark.finetune.shards`),
runs :func:`~covidspark.finetune.loop.train_process` under Spark's
``TorchDistributor`` (a barrier stage with one ``torchrun`` per task; gloo on
CPU, NCCL on GPU) and returns a ``PipelineModel`` — the fine-tuned backbone in
a ``DeepImageFeaturizer`` and its softmax head as MLlib's logistic regression
(:mod:`~covidspark.finetune.head`) — that predicts ``predicted_label`` and
``probability`` from raw images and saves and loads like any pyspark.ml model.

Everything the run writes lands in ``outputLocation``: the image table, a
checkpoint per epoch (a killed fit resumes from the last one when ``fit`` is
called again with the same output location), the backbone's Keras weights
file (``backbone.weights.h5``, which ``DeepImageFeaturizer(weights=...)`` loads
on every engine), ``history.json`` and the model.
"""
import io
import json
import logging

from pyspark.ml import Estimator
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasLabelCol, HasSeed

from covidspark.finetune.recipe import Recipe

logger = logging.getLogger("covidspark")

_FLOAT, _INT, _STR, _BOOL = (TypeConverters.toFloat, TypeConverters.toInt,
                             TypeConverters.toString, TypeConverters.toBoolean)


#: Recipe field -> the trainer param that holds it.
RECIPE_PARAMS = {"head_epochs": "headEpochs", "head_lr": "headLr",
                 "finetune_epochs": "finetuneEpochs", "finetune_lr": "finetuneLr",
                 "unfreeze": "unfreeze", "batch_size": "batchSize", "rotation": "rotation",
                 "shift": "shift", "zoom": "zoom", "brightness": "brightness",
                 "contrast": "contrast", "hflip": "hflip", "balance": "balance",
                 "patience": "patience", "seed": "seed", "loader_workers": "loaderWorkers"}


def recipe_params(recipe):
    """The trainer params of a :class:`~covidspark.finetune.recipe.Recipe` (keyword arguments)."""
    params = {param: getattr(recipe, field) for field, param in RECIPE_PARAMS.items()}
    params["unfreeze"] = str(recipe.unfreeze)
    params["patience"] = recipe.patience or 0  # the param's "never stop early"
    return params


def _param(name, doc, converter):
    return Param(Params._dummy(), name, doc, typeConverter=converter)


class ImageClassifierTrainer(Estimator, HasInputCol, HasLabelCol, HasSeed):
    """Fine-tune a backbone and a new head on labelled images (Keras on PyTorch, distributed).

    Parameters
    ----------
    inputCol : str
        Encoded image bytes (``content`` of :func:`covidspark.read_images`).
    labelCol : str
        ``covid`` / ``normal`` (/ ``pneumonia``) labels.
    splitCol : str
        ``"train"`` rows are trained on, ``"validation"`` rows drive early
        stopping and the learning curves; other rows (``"test"``) are never read.
    task : {"binary", "3class"}
    modelName : str
        A registry backbone (``SmallCNN`` for CPU tests).
    weights : str
        Starting weights: ``"imagenet"``, ``"random"`` (seeded, not
        pretrained) or a weights file / URI.
    outputLocation : str
        Where the table, checkpoints, weights and the model go (any URI the
        cluster writes; executors must be able to read it when not in local mode).
    numProcesses, localMode, useGpu
        ``TorchDistributor``'s: training processes, on the driver (local mode)
        or as Spark tasks, with one GPU each.
    precision : {"float32", "bfloat16"}
        Autocast precision of the forward pass (bfloat16 for GPUs of compute
        capability 8.0 and above).
    headEpochs, headLr, finetuneEpochs, finetuneLr, unfreeze, batchSize, rotation, shift,
    zoom, brightness, contrast, hflip, balance, patience, loaderWorkers
        The :class:`~covidspark.finetune.recipe.Recipe`.
    engine : str
        The returned featurizer's inference engine (``keras``, ``openvino``,
        ``torch``, ``auto``).

    Examples
    --------
    >>> trainer = ImageClassifierTrainer(modelName="ResNet50", weights="imagenet",   # doctest: +SKIP
    ...     outputLocation="s3://bucket/runs/ft", numProcesses=4, localMode=False, useGpu=True)
    >>> model = trainer.fit(split_images)                                            # doctest: +SKIP
    >>> model.transform(test_images).select("predicted_label", "probability")        # doctest: +SKIP
    """

    splitCol = _param("splitCol", "train / validation split column", _STR)
    task = _param("task", "binary or 3class", _STR)
    modelName = _param("modelName", "backbone network from the registry", _STR)
    weights = _param("weights", "starting weights: imagenet, random or a file", _STR)
    outputLocation = _param("outputLocation", "where the run's files and model go", _STR)
    numProcesses = _param("numProcesses", "training processes", _INT)
    localMode = _param("localMode", "train on the driver (True) or on executors", _BOOL)
    useGpu = _param("useGpu", "one GPU per training process", _BOOL)
    precision = _param("precision", "float32 or bfloat16 (autocast)", _STR)
    engine = _param("engine", "inference engine of the returned featurizer", _STR)
    headEpochs = _param("headEpochs", "phase 1 epochs (frozen backbone)", _INT)
    headLr = _param("headLr", "phase 1 learning rate", _FLOAT)
    finetuneEpochs = _param("finetuneEpochs", "phase 2 epochs (backbone unfrozen)", _INT)
    finetuneLr = _param("finetuneLr", "phase 2 learning rate", _FLOAT)
    unfreeze = _param("unfreeze", "phase 2 trains 'all' layers or the last N", _STR)
    batchSize = _param("batchSize", "images per step per process", _INT)
    rotation = _param("rotation", "augmentation: max rotation in degrees", _FLOAT)
    shift = _param("shift", "augmentation: max shift, fraction of the side", _FLOAT)
    zoom = _param("zoom", "augmentation: max zoom in or out, fraction", _FLOAT)
    brightness = _param("brightness", "augmentation: max brightness change, fraction", _FLOAT)
    contrast = _param("contrast", "augmentation: max contrast change, fraction", _FLOAT)
    hflip = _param("hflip", "augmentation: horizontal flips (off: X-rays are not "
                   "left-right symmetric)", _BOOL)
    balance = _param("balance", "class balance: resample, weights or none", _STR)
    patience = _param("patience", "early stopping patience in epochs (0: never)", _INT)
    loaderWorkers = _param("loaderWorkers", "DataLoader workers per process", _INT)

    def __init__(self, **kwargs):
        super().__init__()
        self._setDefault(inputCol="content", labelCol="label", splitCol="split", task="binary",
                         modelName="ResNet50", weights="imagenet", numProcesses=1,
                         localMode=True, useGpu=False, precision="float32", engine="keras",
                         **recipe_params(Recipe()))
        self._set(**kwargs)
        self._last_result = None

    def recipe(self):
        """The :class:`~covidspark.finetune.recipe.Recipe` these params describe, validated."""
        settings = {field: self.getOrDefault(param) for field, param in RECIPE_PARAMS.items()}
        return Recipe.from_settings(settings)

    def lastFitSummary(self):  # noqa: N802 - pyspark's spelling
        """What the last ``fit`` trained: history per epoch, best epoch, ranks, files."""
        return self._last_result

    def _fit(self, dataset):
        from pyspark.ml.torch.distributor import TorchDistributor

        from covidspark.errors import InputError
        from covidspark.finetune.loop import train_process
        from covidspark.finetune.shards import write_shards
        from covidspark.ml.pipelines import task_labels
        from covidspark.models.registry import get_backbone
        from covidspark.runtime.filesystem import Files, join

        recipe = self.recipe()
        spark = dataset.sparkSession
        files = Files(spark)
        if not self.isSet("outputLocation"):
            raise InputError("ImageClassifierTrainer needs outputLocation: where the image "
                             "table, checkpoints and the model are written")
        out = files.qualify(self.getOrDefault("outputLocation"))
        files.check_writable(out, what="outputLocation")
        for col in (self.getInputCol(), self.getLabelCol(), self.getOrDefault("splitCol"),
                    "image_id"):
            if col not in dataset.columns:
                raise InputError(f"ImageClassifierTrainer: column {col!r} not in "
                                 f"{dataset.columns} (read_images gives image_id and content; "
                                 f"split_images the split)")
        spec = get_backbone(self.getOrDefault("modelName"))
        task = self.getOrDefault("task")
        labels = list(task_labels(task))
        world = self.getOrDefault("numProcesses")
        if self.getOrDefault("precision") not in ("float32", "bfloat16"):
            raise InputError(f"precision must be float32 or bfloat16, not "
                             f"{self.getOrDefault('precision')!r}")

        start = self._starting_weights(spark, spec, files, out)
        table = join(out, "images")
        manifest = write_shards(dataset, labels, table, world, seed=recipe.seed,
                                content_col=self.getInputCol(), label_col=self.getLabelCol(),
                                split_col=self.getOrDefault("splitCol"))
        logger.info("fine-tuning %s (%s) on %s: %s processes, %s", spec.name,
                    start["description"], manifest["counts"], world,
                    "local mode" if self.getOrDefault("localMode") else "on executors")
        config = {"model_name": spec.name, "weights": start["uri"], "labels": labels,
                  "started_from": {k: start[k] for k in ("description", "pretrained")},
                  "table": table, "out": out, "recipe": recipe.to_dict(),
                  "use_gpu": self.getOrDefault("useGpu"),
                  "precision": self.getOrDefault("precision"),
                  "threads": _threads(spark, self.getOrDefault("localMode"), world)}
        distributor = TorchDistributor(num_processes=world,
                                       local_mode=self.getOrDefault("localMode"),
                                       use_gpu=self.getOrDefault("useGpu"))
        result = distributor.run(train_process, config)
        result.update({"weights": start, "counts": manifest["counts"], "recipe": recipe.to_dict(),
                       "model_name": spec.name, "task": task, "model_dir": join(out, "model")})
        files.write_text(join(out, "history.json"), json.dumps(result, indent=2))
        self._last_result = result
        return self._model(spark, result, result["model_dir"])

    def _starting_weights(self, spark, spec, files, out):
        """Resolve the starting weights on the driver; put them where every rank can read."""
        from covidspark.models.weights import resolve_weights
        from covidspark.runtime.filesystem import join

        weights = self.getOrDefault("weights")
        resolved = resolve_weights(spec.name, weights, seed=self.getOrDefault("seed"),
                                   files=files)
        uri = join(out, "start.weights.h5" if resolved.path.endswith(".weights.h5")
                   else "start.h5")
        with open(resolved.path, "rb") as f:
            files.write_bytes(uri, f.read())
        return {"setting": weights, "sha256": resolved.sha256,
                "description": resolved.description, "pretrained": resolved.pretrained,
                "uri": uri}

    def _model(self, spark, result, model_dir):
        import numpy as np
        from pyspark.ml import PipelineModel

        from covidspark.finetune.head import softmax_head_as_pipeline
        from covidspark.ml.featurizer import DeepImageFeaturizer
        from covidspark.runtime.filesystem import Files, join

        files = Files(spark)
        with np.load(io.BytesIO(files.read_bytes(result["head"]))) as head:
            kernel, bias = head["kernel"], head["bias"]
        # The head is saved where the model goes, read back (MLlib loads coefficients
        # eagerly), then replaced by the whole model.
        head = softmax_head_as_pipeline(spark, kernel, bias, self.getOrDefault("task"), model_dir)
        featurizer = DeepImageFeaturizer(
            inputCol=self.getInputCol(), outputCol="features",
            modelName=self.getOrDefault("modelName"), weights=result["backbone"],
            engine=self.getOrDefault("engine"))
        model = PipelineModel(stages=[featurizer, *head.stages])
        model.write().overwrite().save(model_dir)
        return PipelineModel.load(model_dir)


def _threads(spark, local_mode, world):
    """CPU threads per training process: the driver's cores shared in local mode."""
    import os

    if local_mode:
        return max(1, (os.cpu_count() or 1) // world)
    return int(spark.conf.get("spark.task.cpus", "1") or 1)
