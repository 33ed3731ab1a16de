"""The workflows' configs: one dataclass per workflow, one field per command-line flag.

A field's name is its flag's (``batch_size`` is ``--batch-size``), so a YAML
``--config`` file, the command line and Python callers say the same thing.
:meth:`validate` turns a bad value into an :class:`~covidspark.errors.InputError`
that names the flag.
"""
import dataclasses
import json
from typing import List, Optional

from covidspark.data.datasets import OZTURK_LABEL_MAP
from covidspark.data.duplicates import POLICIES
from covidspark.errors import InputError
from covidspark.finetune.recipe import Recipe
from covidspark.ml.experiment import CLASS_WEIGHTS
from covidspark.ml.pipelines import CLASSIFIERS, TASKS
from covidspark.models.engines import ENGINES, PRECISIONS

#: ``--duplicates``: the policies of :func:`~covidspark.data.duplicates.resolve_duplicates`,
#: and ``ignore`` (no search).
DUPLICATE_POLICIES = (*POLICIES, "ignore")

#: Label maps known by name (``--label-map ozturk``).
NAMED_LABEL_MAPS = {"ozturk": OZTURK_LABEL_MAP}


def flag(field_name):
    """``batch_size`` -> ``--batch-size``: how a config field is spelled on the command line."""
    return "--" + field_name.replace("_", "-")


def parse_label_map(value):
    """A label map given as a dict, a JSON object or a known name; None stays None."""
    if value is None or isinstance(value, dict):
        return value
    if value in NAMED_LABEL_MAPS:
        return dict(NAMED_LABEL_MAPS[value])
    try:
        mapping = json.loads(value)
    except (TypeError, json.JSONDecodeError):
        raise InputError(f"--label-map takes a JSON object or one of {list(NAMED_LABEL_MAPS)}; "
                         f"got {value!r}") from None
    if not isinstance(mapping, dict):
        raise InputError(f"--label-map must be a JSON object {{folder: label}}; got {value!r}")
    return mapping


def _one_of(name, value, allowed):
    if value not in allowed:
        raise InputError(f"{flag(name)} {value!r}: choose from {', '.join(allowed)}")


def _list(value):
    if value is None or isinstance(value, (list, tuple)):
        return None if value is None else list(value)
    return [v.strip() for v in str(value).split(",") if v.strip()]


@dataclasses.dataclass
class InputConfig:
    """Which images: class folders (``data``), a manifest, or the embedded synthetic set.

    Attributes
    ----------
    data : list of str, optional
        Class-folder trees ``DIR/<label>/*``; each one's folder name becomes its ``source``.
    manifest : str, optional
        CSV ``path,label[,patient_id,source]`` instead of ``data``.
    label_map : dict or str, optional
        Folder name -> label, as a dict, JSON, or ``"ozturk"``.
    patients : str, optional
        CSV ``path,patient_id``: a patient's images stay on one side of the split.
    lenient : bool
        Skip bad files and list them instead of failing.
    seed : int
        Seed of the split, random weights, RF/DT and the bootstrap.
    synthetic_per_class : int
        Images per class of the embedded set when neither ``data`` nor ``manifest`` is given.
    synthetic_dir : str, optional
        Where that set is written: a folder every executor can read (``/Volumes/...``,
        ``dbfs:/...``, ``s3://...``, ``hdfs://...``). Default: the driver's cache
        folder, which only local mode can use; on a cluster it is required.
    master : str, optional
        Spark master when no session is active (default: spark-submit's, or ``local[*]``).
    remote : str, optional
        Spark Connect URL ``sc://host:port`` instead of a master (default: ``SPARK_REMOTE``).
    """

    data: Optional[List[str]] = None
    manifest: Optional[str] = None
    label_map: Optional[dict] = None
    patients: Optional[str] = None
    lenient: bool = False
    seed: int = 0
    synthetic_per_class: int = 40
    synthetic_dir: Optional[str] = None
    master: Optional[str] = None
    remote: Optional[str] = None

    def __post_init__(self):
        if isinstance(self.data, str):
            self.data = [self.data]
        self.label_map = parse_label_map(self.label_map)

    @property
    def synthetic(self):
        """True when the embedded synthetic set is read (no data, no manifest)."""
        return not self.data and self.manifest is None

    def validate(self):
        """Raise :class:`~covidspark.errors.InputError` naming the first bad flag."""
        if self.data and self.manifest is not None:
            raise InputError("Give --data or --manifest, not both")
        if self.synthetic_per_class < 1:
            raise InputError(f"--synthetic-per-class must be >= 1; got {self.synthetic_per_class}")
        return self


@dataclasses.dataclass
class FeaturizerConfig(InputConfig):
    """Input plus the :class:`~covidspark.ml.featurizer.DeepImageFeaturizer` settings.

    Attributes
    ----------
    model : str
        Backbone name from :data:`covidspark.models.registry.BACKBONES`.
    weights : str
        ``"imagenet"``, a weights file, or ``"random"`` (seeded, not pretrained).
    batch_size : int
    precision : {"float32", "bfloat16", "auto"}
    engine : {"keras", "openvino", "auto"}
    """

    model: str = "ResNet50"
    weights: str = "imagenet"
    batch_size: int = 32
    precision: str = "float32"
    engine: str = "keras"

    def validate(self):
        from covidspark.models.registry import BACKBONES

        super().validate()
        _one_of("model", self.model, list(BACKBONES))
        _one_of("precision", self.precision, PRECISIONS)
        _one_of("engine", self.engine, ENGINES)
        if self.batch_size < 1:
            raise InputError(f"--batch-size must be >= 1; got {self.batch_size}")
        return self


@dataclasses.dataclass
class FeaturizeConfig(FeaturizerConfig):
    """The featurize workflow: fill a feature store.

    Attributes
    ----------
    features : str
        Feature store folder (required).
    chunk_size : int, optional
        Images per committed chunk (default 2000).
    """

    features: Optional[str] = None
    chunk_size: Optional[int] = None

    def validate(self):
        super().validate()
        if not self.features:
            raise InputError("--features (the feature store folder) is required")
        return self


@dataclasses.dataclass
class _ExperimentFields:
    """Split, fit and report settings shared by train and compare."""

    duplicates: str = "group"
    test_fraction: float = 0.2
    validation_fraction: float = 0.1
    threshold: Optional[str] = None
    class_weight: Optional[str] = None
    tune: Optional[str] = None
    folds: int = 3
    bootstrap: int = 1000
    baseline: bool = True
    train_source: Optional[str] = None
    test_source: Optional[str] = None
    features: Optional[str] = None

    def _validate_experiment(self, task):
        _one_of("duplicates", self.duplicates, DUPLICATE_POLICIES)
        if self.class_weight == "none":
            self.class_weight = None
        if self.class_weight is not None:
            _one_of("class_weight", self.class_weight, CLASS_WEIGHTS)
        if self.tune == "none":
            self.tune = None
        if not 0 < self.test_fraction < 1:
            raise InputError(f"--test-fraction must be in (0, 1); got {self.test_fraction}")
        if not 0 <= self.validation_fraction < 1:
            raise InputError(f"--validation-fraction must be in [0, 1); got "
                             f"{self.validation_fraction}")
        if self.bootstrap < 0:
            raise InputError(f"--bootstrap must be >= 0; got {self.bootstrap}")
        self.fit_options().validate(task)

    def fit_options(self):
        """The :class:`~covidspark.ml.experiment.TrainOptions` these settings mean."""
        from covidspark.ml.experiment import TrainOptions

        return TrainOptions(seed=self.seed, class_weight=self.class_weight, tune=self.tune,
                            k_folds=self.folds, threshold=self.threshold,
                            bootstrap=self.bootstrap)


@dataclasses.dataclass
class TrainConfig(_ExperimentFields, FeaturizerConfig):
    """The train workflow: one classifier on deep features, evaluated and saved.

    Attributes
    ----------
    task : {"binary", "3class"}
    classifier : {"lr", "rf", "dt"}
    out : str
        Output folder: ``model/``, ``metrics.json``, ``report.md``, figures.

    Every :class:`FeaturizerConfig` field, and ``duplicates``, ``test_fraction``,
    ``validation_fraction``, ``threshold`` (``recall:0.95``, ``f1``, ``youden``,
    a number), ``class_weight`` (``"balanced"`` or None), ``tune`` (``"cv"`` or
    None), ``folds``, ``bootstrap``, ``baseline``, ``train_source``,
    ``test_source``, ``features`` (a feature store to reuse).
    """

    task: str = "binary"
    classifier: str = "lr"
    out: str = "runs/latest"

    def validate(self):
        FeaturizerConfig.validate(self)
        _one_of("task", self.task, list(TASKS))
        _one_of("classifier", self.classifier, CLASSIFIERS)
        self._validate_experiment(self.task)
        return self


@dataclasses.dataclass
class CompareConfig(_ExperimentFields, FeaturizerConfig):
    """The compare workflow: backbones x classifiers x tasks on one split.

    Attributes
    ----------
    models, classifiers, tasks : list of str
        The grid (lists, or comma-separated strings).
    out : str
        Output folder: ``comparison.md``/``.json`` and ``<task>/<model>-<classifier>/``.
    """

    models: List[str] = dataclasses.field(default_factory=lambda: ["ResNet50", "InceptionV3"])
    classifiers: List[str] = dataclasses.field(default_factory=lambda: list(CLASSIFIERS))
    tasks: List[str] = dataclasses.field(default_factory=lambda: list(TASKS))
    out: str = "runs/compare"

    def __post_init__(self):
        super().__post_init__()
        self.models, self.classifiers, self.tasks = map(
            _list, (self.models, self.classifiers, self.tasks))

    def validate(self):
        from covidspark.models.registry import BACKBONES

        FeaturizerConfig.validate(self)
        for name, values, allowed in (("models", self.models, list(BACKBONES)),
                                      ("classifiers", self.classifiers, CLASSIFIERS),
                                      ("tasks", self.tasks, list(TASKS))):
            if not values:
                raise InputError(f"{flag(name)} is empty: choose from {', '.join(allowed)}")
            for value in values:
                _one_of(name, value, allowed)
        # --threshold applies to the binary runs only.
        self._validate_experiment("binary")
        return self


@dataclasses.dataclass
class PredictConfig(InputConfig):
    """The predict workflow: a saved model's predictions, one row per image.

    Attributes
    ----------
    model_dir : str
        A model folder saved by train or compare (``<run>/model``).
    images : str, optional
        Folder or glob of images in any layout, or one image file (no labels); else ``data`` /
        ``manifest``.
    out : str
        Parquet folder, or a file ending in ``.csv``.
    heatmaps : str, optional
        Folder for one overlay PNG per image (Grad-CAM for LR, occlusion for RF/DT).
    """

    model_dir: Optional[str] = None
    images: Optional[str] = None
    out: Optional[str] = None
    heatmaps: Optional[str] = None

    def validate(self):
        super().validate()
        if not self.model_dir:
            raise InputError("--model-dir (the saved model folder, <run>/model) is required")
        if not self.out:
            raise InputError("--out (a Parquet folder or a .csv file) is required")
        if self.images and (self.data or self.manifest):
            raise InputError("Give --images (any layout, no labels) or --data/--manifest, "
                             "not both")
        return self


@dataclasses.dataclass
class EvaluateConfig(InputConfig):
    """The evaluate workflow: a saved model scored on labelled images.

    Attributes
    ----------
    model_dir : str
        A model folder saved by train or compare.
    bootstrap : int
        Bootstrap resamples of the 95 % intervals (0: none).
    out : str
        Report folder.
    seen : str
        ``"report"``: count and name the images that are copies of the model's
        own training or validation images (same sha256, or perceptual hash
        within 2 bits), with a caution; ``"drop"``: evaluate without them.
    """

    model_dir: Optional[str] = None
    bootstrap: int = 1000
    out: Optional[str] = None
    seen: str = "report"

    def validate(self):
        super().validate()
        if not self.model_dir:
            raise InputError("--model-dir (the saved model folder, <run>/model) is required")
        if self.seen not in ("report", "drop"):
            raise InputError(f"--seen must be report or drop. Received: {self.seen!r}")
        if not self.out:
            raise InputError("--out (the report folder) is required")
        return self


@dataclasses.dataclass
class FinetuneConfig(TrainConfig):
    """The finetune workflow: train the network itself, evaluated and saved like ``train``.

    Every :class:`TrainConfig` field (``classifier`` and ``features`` are not
    used; ``batch_size`` is the training batch per process), and the
    :class:`~covidspark.finetune.recipe.Recipe` (``head_epochs``, ``head_lr``,
    ``finetune_epochs``, ``finetune_lr``, ``unfreeze``, ``rotation``, ``shift``,
    ``zoom``, ``brightness``, ``contrast``, ``balance``, ``patience``,
    ``loader_workers``) and where it runs: ``num_processes``, ``local_mode``
    (False: as Spark tasks on the executors), ``use_gpu``.
    """

    head_epochs: int = Recipe.head_epochs
    head_lr: float = Recipe.head_lr
    finetune_epochs: int = Recipe.finetune_epochs
    finetune_lr: float = Recipe.finetune_lr
    unfreeze: str = Recipe.unfreeze
    rotation: float = Recipe.rotation
    shift: float = Recipe.shift
    zoom: float = Recipe.zoom
    brightness: float = Recipe.brightness
    contrast: float = Recipe.contrast
    balance: str = Recipe.balance
    patience: int = 0
    loader_workers: int = Recipe.loader_workers
    num_processes: int = 1
    local_mode: bool = True
    use_gpu: bool = False
    out: str = "runs/finetune"

    def recipe(self):
        """The :class:`~covidspark.finetune.recipe.Recipe` of these settings, validated."""
        return Recipe.from_settings(vars(self))

    def validate(self):
        super().validate()
        self.recipe()
        if self.num_processes < 1:
            raise InputError(f"--num-processes must be >= 1; got {self.num_processes}")
        if self.precision not in ("float32", "bfloat16"):
            raise InputError(f"--precision for fine-tuning is float32 or bfloat16; got "
                             f"{self.precision!r}")
        if self.class_weight or self.tune or self.features:
            raise InputError("--class-weight, --tune and --features apply to train; "
                             "fine-tuning balances with --balance")
        return self
