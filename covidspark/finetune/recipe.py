"""A fine-tuning recipe: the studies' transfer-learning methods as one validated object.

Two phases, as the Keras studies ran them: phase 1 trains a new head on the
frozen backbone (lr 1e-3), phase 2 unfreezes the backbone (all of it, or its
last ``unfreeze`` layers) at a small learning rate (1e-5). Adam throughout.
Augmentation follows the studies: rotation up to 15 degrees, small shifts and
zoom, brightness and contrast; never a horizontal flip (a chest X-ray is not
left-right symmetric: the heart is on the left). The minority class is
balanced by re-sampling (each class drawn equally often) or by class weights
in the loss. Early stopping watches the validation loss (the validation split
is grouped by patient and duplicate group, like the train jobs').
"""
import dataclasses
from typing import Optional, Union

from covidspark.errors import InputError

BALANCING = ("resample", "weights", "none")


@dataclasses.dataclass
class Recipe:
    """How a backbone is fine-tuned.

    Attributes
    ----------
    head_epochs, head_lr : int, float
        Phase 1: the backbone frozen, a new softmax head trained.
    finetune_epochs, finetune_lr : int, float
        Phase 2: the backbone unfrozen (0 epochs skips it).
    unfreeze : "all" or int
        Phase 2 trains the whole backbone, or only its last ``unfreeze`` layers.
    batch_size : int
        Images per step on each process.
    rotation, shift, zoom, brightness, contrast : float
        Augmentation ranges (degrees; fractions of the side; fractions).
        All zero: no augmentation.
    hflip : bool
        Off by default, and on purpose.
    balance : {"resample", "weights", "none"}
    patience : int, optional
        Stop after this many epochs without a better validation loss; the
        weights of the best epoch are kept. None: never stop early.
    seed : int
        Seeds the head's initialisation, the sampling and the augmentation.
    loader_workers : int
        DataLoader processes per rank that decode and augment (0: in the rank).
    """

    head_epochs: int = 3
    head_lr: float = 1e-3
    finetune_epochs: int = 3
    finetune_lr: float = 1e-5
    unfreeze: Union[str, int] = "all"
    batch_size: int = 32
    rotation: float = 15.0
    shift: float = 0.05
    zoom: float = 0.1
    brightness: float = 0.1
    contrast: float = 0.1
    hflip: bool = False
    balance: str = "resample"
    patience: Optional[int] = None
    seed: int = 0
    loader_workers: int = 2

    @property
    def epochs(self):
        """Both phases."""
        return self.head_epochs + self.finetune_epochs

    def phase(self, epoch):
        """``("head", lr)`` or ``("finetune", lr)`` for 0-based ``epoch``."""
        if epoch < self.head_epochs:
            return "head", self.head_lr
        return "finetune", self.finetune_lr

    def validate(self):
        """Raise :class:`~covidspark.errors.InputError` naming the first bad setting."""
        checks = [
            ("head_epochs", self.head_epochs >= 0), ("finetune_epochs", self.finetune_epochs >= 0),
            ("epochs", self.epochs > 0), ("head_lr", self.head_lr > 0),
            ("finetune_lr", self.finetune_lr > 0), ("batch_size", self.batch_size >= 1),
            ("rotation", 0 <= self.rotation <= 180), ("shift", 0 <= self.shift < 0.5),
            ("zoom", 0 <= self.zoom < 0.5), ("brightness", 0 <= self.brightness < 1),
            ("contrast", 0 <= self.contrast < 1), ("loader_workers", self.loader_workers >= 0),
            ("patience", self.patience is None or self.patience >= 1),
            ("unfreeze", self.unfreeze == "all"
             or (isinstance(self.unfreeze, int) and self.unfreeze > 0)),
        ]
        for name, ok in checks:
            if not ok:
                raise InputError(f"Fine-tuning setting {name}={getattr(self, name)!r} is out "
                                 f"of range")
        if self.balance not in BALANCING:
            raise InputError(f"Unknown balance {self.balance!r}: use one of "
                             f"{', '.join(BALANCING)}")
        return self

    @property
    def augments(self):
        """Whether any augmentation is on."""
        return any((self.rotation, self.shift, self.zoom, self.brightness, self.contrast,
                    self.hflip))

    def to_dict(self):
        """JSON-ready."""
        return dataclasses.asdict(self)

    @classmethod
    def from_settings(cls, settings):
        """The recipe of a mapping with the recipe's field names (a config's, params'), validated.

        Other keys are ignored and missing fields keep their defaults;
        ``unfreeze`` may be a digit string (a flag) and ``patience`` 0 (never
        stop early).
        """
        values = {f.name: settings[f.name] for f in dataclasses.fields(cls) if f.name in settings}
        if str(values.get("unfreeze", "")).isdigit():
            values["unfreeze"] = int(values["unfreeze"])
        if "patience" in values:
            values["patience"] = values["patience"] or None
        return cls(**values).validate()


# (flag, type, default, help) of the recipe; FinetuneConfig has the same names.
_DEFAULT = Recipe()
_FLAGS = [
    ("--head-epochs", int, _DEFAULT.head_epochs,
     "phase 1: epochs with the backbone frozen, a new head trained"),
    ("--head-lr", float, _DEFAULT.head_lr, "phase 1 learning rate (Adam)"),
    ("--finetune-epochs", int, _DEFAULT.finetune_epochs,
     "phase 2: epochs with the backbone unfrozen (0: skip)"),
    ("--finetune-lr", float, _DEFAULT.finetune_lr, "phase 2 learning rate"),
    ("--unfreeze", str, _DEFAULT.unfreeze, "phase 2 trains 'all' backbone layers or the last N"),
    ("--rotation", float, _DEFAULT.rotation, "augmentation: max rotation in degrees"),
    ("--shift", float, _DEFAULT.shift, "augmentation: max shift, fraction of the side"),
    ("--zoom", float, _DEFAULT.zoom, "augmentation: max zoom in or out, fraction"),
    ("--brightness", float, _DEFAULT.brightness,
     "augmentation: max brightness change, fraction"),
    ("--contrast", float, _DEFAULT.contrast, "augmentation: max contrast change, fraction"),
    ("--patience", int, _DEFAULT.patience or 0, "early stopping after N epochs without a "
                                                "better validation loss (0: never); the best "
                                                "epoch's weights are kept"),
    ("--loader-workers", int, _DEFAULT.loader_workers,
     "DataLoader processes per training process (decode, augment)"),
    ("--num-processes", int, 1, "training processes"),
]


def add_recipe_arguments(parser):
    """The ``covidspark finetune`` flags of the recipe and of where training runs."""
    for flag, kind, default, text in _FLAGS:
        parser.add_argument(flag, type=kind, default=default, help=text)
    parser.add_argument("--balance", choices=BALANCING, default=_DEFAULT.balance,
                        help="class balance: resample (each class drawn equally often), "
                             "weights (in the loss), none")
    parser.add_argument("--cluster", dest="local_mode", action="store_false",
                        help="train as Spark tasks on the executors (default: on the driver)")
    parser.add_argument("--gpu", dest="use_gpu", action="store_true",
                        help="one GPU per training process (NCCL)")
