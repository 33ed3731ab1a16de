"""A saved covidspark ``PipelineModel``, read and evaluated without Spark.

Serving predicts one image at a time; starting a JVM per request (or holding a
SparkSession in a web server) would cost seconds and a gigabyte. A fitted
covidspark pipeline is small: a featurizer's params, a label indexer, and a
logistic regression's coefficients or a forest of trees. This module reads those
files as Spark wrote them (JSON metadata and Parquet, through pyarrow) and
computes exactly what Spark's ``transform`` computes:

- logistic regression: margins ``W x + b``; binary probability ``sigmoid``,
  prediction ``p_1 > threshold``; multinomial ``softmax``, prediction
  ``argmax(p_k / t_k)`` when ``thresholds`` are set, else the largest margin;
- decision tree: the leaf's class counts, normalised;
- random forest: the mean over trees of each leaf's normalised class counts
  (Spark does not weight the trees of a classifier), normalised again;
- trees predict ``argmax(p_k / t_k)`` when ``thresholds`` are set (how
  :func:`covidspark.ml.thresholds.apply_threshold` stores a COVID threshold), else
  the largest raw count.

Tests compare every classifier with Spark's own predictions on the same images.
Only files on this machine can be read: local paths, and on Databricks ``/dbfs``,
``/Volumes`` (and their ``dbfs:`` URIs, as ``train`` reports them) through its mounts.
"""
import dataclasses
import glob
import json
import os

import numpy as np
from covidspark.errors import InputError, InputNotFoundError
from covidspark.ml.thresholds import threshold_from_thresholds

FEATURIZER_CLASS = "covidspark.ml.featurizer.DeepImageFeaturizer"
# Models saved by covidspark 0.1 record the flat layout's class path.
_FEATURIZER_CLASSES = (FEATURIZER_CLASS, "covidspark.featurizer.DeepImageFeaturizer")
_LR = "org.apache.spark.ml.classification.LogisticRegressionModel"
_DT = "org.apache.spark.ml.classification.DecisionTreeClassificationModel"
_RF = "org.apache.spark.ml.classification.RandomForestClassificationModel"
_INDEXER = "org.apache.spark.ml.feature.StringIndexerModel"


class ModelFormatError(InputError):
    """A folder that is not a saved covidspark pipeline, or a stage this module cannot read."""


def read_metadata(stage_dir):
    """The JSON metadata Spark (or ``DefaultParamsWriter``) wrote for one stage."""
    files = sorted(glob.glob(os.path.join(stage_dir, "metadata", "part-*")))
    if not files:
        raise ModelFormatError(f"{stage_dir}: no metadata/part-* file (not a saved Spark stage)")
    with open(files[0], encoding="utf-8") as f:
        return json.loads(f.readline())


def param(metadata, name, default=None):
    """A param's value: set (``paramMap``), else default (``defaultParamMap``), else ``default``."""
    for section in ("paramMap", "defaultParamMap"):
        if name in metadata.get(section, {}):
            return metadata[section][name]
    return default


def _read_rows(stage_dir):
    import pyarrow.parquet as pq

    return pq.read_table(os.path.join(stage_dir, "data")).to_pylist()


def _vector(value):
    """Spark's VectorUDT struct (type 0 sparse, 1 dense) as a dense numpy array."""
    if value["type"] == 1:
        return np.asarray(value["values"], dtype=np.float64)
    dense = np.zeros(value["size"], dtype=np.float64)
    dense[np.asarray(value["indices"], dtype=int)] = value["values"]
    return dense


def _matrix(value):
    """Spark's MatrixUDT struct (type 0 sparse CSC, 1 dense) as a dense numpy array."""
    rows, cols = value["numRows"], value["numCols"]
    transposed = value["isTransposed"]
    if value["type"] == 1:
        values = np.asarray(value["values"], dtype=np.float64)
        # Dense values are column-major, or row-major when isTransposed.
        return values.reshape(rows, cols) if transposed else values.reshape(cols, rows).T
    # Sparse: CSC over (rows, cols), or CSR (CSC of the transpose) when isTransposed.
    major, minor = (rows, cols) if transposed else (cols, rows)
    dense = np.zeros((major, minor), dtype=np.float64)
    pointers, indices, values = value["colPtrs"], value["rowIndices"], value["values"]
    for j in range(major):
        for k in range(pointers[j], pointers[j + 1]):
            dense[j, indices[k]] = values[k]
    return dense if transposed else dense.T


def _argmax_over_thresholds(probability, thresholds):
    """Spark's ``probability2prediction`` with ``thresholds``: argmax of p_k / t_k."""
    t = np.asarray(thresholds, dtype=np.float64)
    with np.errstate(divide="ignore"):
        scaled = np.where(t == 0.0, np.where(probability > 0, np.inf, 0.0), probability / t)
    return int(np.argmax(scaled))


@dataclasses.dataclass
class LogisticRegressionHead:
    """A fitted ``LogisticRegressionModel``: coefficients ``(k, d)`` and intercepts ``(k,)``.

    Binary models have one row (the margin of class 1).
    """

    coefficients: np.ndarray
    intercepts: np.ndarray
    multinomial: bool
    num_classes: int
    threshold: float = 0.5
    thresholds: list = None
    kind: str = "lr"

    def margins(self, features):
        """Raw class scores: ``W x + b`` (one value, class 1's log-odds, for binary)."""
        return self.coefficients @ np.asarray(features, dtype=np.float64) + self.intercepts

    def predict(self, features):
        """``(probabilities, predicted index)`` for one feature vector, as Spark computes them."""
        margins = self.margins(features)
        if not self.multinomial:
            p1 = 1.0 / (1.0 + np.exp(-margins[0]))
            probability = np.array([1.0 - p1, p1])
            if self.thresholds is not None:
                return probability, _argmax_over_thresholds(probability, self.thresholds)
            # Spark compares the margin with logit(threshold); the same as p_1 > threshold.
            return probability, int(p1 > self.threshold)
        shifted = np.exp(margins - margins.max())
        probability = shifted / shifted.sum()
        if self.thresholds is not None:
            return probability, _argmax_over_thresholds(probability, self.thresholds)
        return probability, int(np.argmax(margins))

    @classmethod
    def load(cls, stage_dir, metadata):
        row = _read_rows(stage_dir)[0]
        coefficients = _matrix(row["coefficientMatrix"])
        intercepts = _vector(row["interceptVector"])
        return cls(coefficients=coefficients, intercepts=intercepts,
                   multinomial=bool(row["isMultinomial"]), num_classes=int(row["numClasses"]),
                   threshold=float(param(metadata, "threshold", 0.5)),
                   thresholds=param(metadata, "thresholds"))


class _Tree:
    """One decision tree as flat arrays; continuous splits go left when ``x <= threshold``."""

    def __init__(self, nodes):
        by_id = {n["id"]: n for n in nodes}
        size = max(by_id) + 1
        self.left = np.full(size, -1, dtype=np.int64)
        self.right = np.full(size, -1, dtype=np.int64)
        self.feature = np.zeros(size, dtype=np.int64)
        self.threshold = np.zeros(size, dtype=np.float64)
        self.stats = [None] * size
        for node_id, node in by_id.items():
            self.stats[node_id] = np.asarray(node["impurityStats"], dtype=np.float64)
            if node["leftChild"] < 0:
                continue
            split = node["split"]
            if split["numCategories"] != -1:
                raise ModelFormatError("categorical tree splits are not supported: covidspark "
                                       "features are continuous")
            self.left[node_id], self.right[node_id] = node["leftChild"], node["rightChild"]
            self.feature[node_id] = split["featureIndex"]
            self.threshold[node_id] = split["leftCategoriesOrThreshold"][0]

    def leaf_counts(self, features):
        node = 0
        while self.left[node] >= 0:
            goes_left = features[self.feature[node]] <= self.threshold[node]
            node = self.left[node] if goes_left else self.right[node]
        return self.stats[node]


@dataclasses.dataclass
class TreeHead:
    """A fitted ``DecisionTreeClassificationModel`` (one tree) or random forest."""

    trees: list
    num_classes: int
    forest: bool
    thresholds: list = None

    @property
    def kind(self):
        return "rf" if self.forest else "dt"

    def predict(self, features):
        """``(probabilities, predicted index)`` for one feature vector, as Spark computes them."""
        features = np.asarray(features, dtype=np.float64)
        raw = np.zeros(self.num_classes)
        for tree in self.trees:
            counts = tree.leaf_counts(features)
            if self.forest:
                total = counts.sum()
                if total != 0:
                    raw += counts / total
            else:
                raw += counts
        total = raw.sum()
        probability = raw / total if total > 0 else raw
        if self.thresholds is not None:
            return probability, _argmax_over_thresholds(probability, self.thresholds)
        return probability, int(np.argmax(raw))

    @classmethod
    def load(cls, stage_dir, metadata, forest):
        rows = _read_rows(stage_dir)
        if forest:
            by_tree = {}
            for row in rows:
                by_tree.setdefault(row["treeID"], []).append(row["nodeData"])
            trees = [_Tree(by_tree[i]) for i in sorted(by_tree)]
        else:
            trees = [_Tree(rows)]
        num_classes = int(metadata.get("numClasses") or len(trees[0].stats[0]))
        return cls(trees=trees, num_classes=num_classes, forest=forest,
                   thresholds=param(metadata, "thresholds"))


@dataclasses.dataclass
class LocalPipeline:
    """What serving needs from a saved pipeline.

    Attributes
    ----------
    path : str
    model_id : str
        The pipeline's uid (stable for one saved model).
    featurizer : dict
        The featurizer's params (``modelName``, ``weights``, ``seed``, ...).
    labels : list of str
        Class labels in index order.
    head : LogisticRegressionHead or TreeHead
    """

    path: str
    model_id: str
    featurizer: dict
    labels: list
    head: object

    @property
    def covid_threshold(self):
        """The binary COVID threshold the model predicts with (None for 3-class argmax)."""
        head = self.head
        if len(self.labels) != 2:
            return None
        if head.thresholds is not None:
            return threshold_from_thresholds(head.thresholds)
        return float(getattr(head, "threshold", 0.5))


def load_pipeline(path):
    """Read a ``PipelineModel`` saved by covidspark's train, compare or tune.

    Parameters
    ----------
    path : str
        The model folder (``<run>/model``): a local path or ``file:`` URI; on
        Databricks also ``/Volumes/...``, ``/dbfs/...`` or their ``dbfs:`` URIs.

    Returns
    -------
    LocalPipeline

    Raises
    ------
    FileNotFoundError
        If ``path`` holds no saved model.
    ModelFormatError
        If a stage is not one covidspark pipelines use.
    """
    from covidspark.runtime.filesystem import on_this_machine

    # train reports its model as Spark spells it: file:/..., or dbfs:/Volumes/... on Databricks.
    shown, path = path, on_this_machine(path)
    if path is None:
        raise ModelFormatError(f"{shown}: serving reads a model on this machine: a local path, "
                               f"or /Volumes/..., /dbfs/... (dbfs:/...) on Databricks")
    if not os.path.isdir(os.path.join(path, "metadata")):
        raise InputNotFoundError(f"No saved model at {shown} (expected <run>/model from train)")
    pipeline = read_metadata(path)
    uids = param(pipeline, "stageUids") or []
    stages = {}
    for index, uid in enumerate(uids):
        stage_dir = os.path.join(path, "stages", f"{index}_{uid}")
        metadata = read_metadata(stage_dir)
        name = FEATURIZER_CLASS if metadata["class"] in _FEATURIZER_CLASSES else metadata["class"]
        stages[name] = (stage_dir, metadata)
    if FEATURIZER_CLASS not in stages:
        raise ModelFormatError(f"{path}: no DeepImageFeaturizer stage (stages: {list(stages)})")
    featurizer = {**stages[FEATURIZER_CLASS][1].get("defaultParamMap", {}),
                  **stages[FEATURIZER_CLASS][1].get("paramMap", {})}
    if _INDEXER not in stages:
        raise ModelFormatError(f"{path}: no StringIndexerModel stage (the labels are unknown)")
    labels = list(_read_rows(stages[_INDEXER][0])[0]["labelsArray"][0])
    if _LR in stages:
        head = LogisticRegressionHead.load(*stages[_LR])
    elif _RF in stages:
        head = TreeHead.load(*stages[_RF], forest=True)
    elif _DT in stages:
        head = TreeHead.load(*stages[_DT], forest=False)
    else:
        raise ModelFormatError(f"{path}: no logistic regression, random forest or decision tree "
                               f"stage (stages: {list(stages)})")
    return LocalPipeline(path=path, model_id=pipeline["uid"], featurizer=featurizer,
                         labels=labels, head=head)
