"""Classification metrics as plain numpy: confusion-derived rates, ROC and PR, bootstrap CIs.

Nothing here touches Spark: :mod:`covidspark.evaluation` counts the confusion
matrix in Spark and hands label/score arrays to these functions. Conventions
follow scikit-learn (checked against it in the tests): precision of a class
that is never predicted is 0.0 (``zero_division=0``), PR-AUC is *average
precision* (step-wise, no interpolation), ROC-AUC counts ties as one half.
"""
import numpy as np

#: Points kept per curve in metrics.json and the plots (AUCs use every point).
MAX_CURVE_POINTS = 500


def precision_recall_f1(tp, predicted, support):
    """Precision, recall and F1 from counts; 0.0 where a denominator is 0 (``zero_division=0``)."""
    precision = tp / predicted if predicted else 0.0
    recall = tp / support if support else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def metrics_from_confusion(matrix, labels):
    """Per-class precision, recall, F1, specificity and support; accuracy; macro and weighted means.

    Parameters
    ----------
    matrix : list of list of int
        ``matrix[true][predicted]`` counts.
    labels : sequence of str
        Class names in index order.

    Returns
    -------
    dict
        ``accuracy``, ``n``, ``per_class``, ``macro_avg``, ``weighted_avg`` and
        ``confusion_matrix`` (``counts``, ``row_normalised`` = recall view,
        ``column_normalised`` = precision view).
    """
    n = len(labels)
    counts = np.asarray(matrix, dtype=np.int64).reshape(n, n)
    total = int(counts.sum())
    per_class = {}
    for k, label in enumerate(labels):
        tp = int(counts[k, k])
        predicted = int(counts[:, k].sum())
        support = int(counts[k].sum())
        precision, recall, f1 = precision_recall_f1(tp, predicted, support)
        negatives = total - support
        specificity = (negatives - (predicted - tp)) / negatives if negatives else 0.0
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1,
                            "specificity": specificity, "support": support}
    accuracy = float(np.trace(counts)) / total if total else 0.0

    def average(weighted):
        weights = [per_class[label]["support"] if weighted else 1 for label in labels]
        denominator = sum(weights)
        return {m: (sum(w * per_class[label][m] for w, label in zip(weights, labels)) / denominator
                    if denominator else 0.0)
                for m in ("precision", "recall", "f1")}

    return {
        "accuracy": accuracy,
        "n": total,
        "per_class": per_class,
        "macro_avg": average(False),
        "weighted_avg": average(True),
        "confusion_matrix": {
            "labels": list(labels),
            "counts": counts.tolist(),
            "row_normalised": _normalise(counts, axis=1),
            "column_normalised": _normalise(counts, axis=0),
        },
    }


def _normalise(counts, axis):
    """Divide by row (axis=1) or column (axis=0) sums; an empty row or column stays 0."""
    sums = counts.sum(axis=axis, keepdims=True).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(sums > 0, counts / np.where(sums > 0, sums, 1), 0.0)
    return out.round(6).tolist()


def confusion_from_arrays(y_true, y_pred, n_classes):
    """``[true][predicted]`` counts of integer class arrays."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes)


# ------------------------------------------------------------------ curves

def sorted_counts(positive, score):
    """Cumulative true and false positives at each distinct score, highest score first."""
    positive = np.asarray(positive, dtype=bool)
    score = np.asarray(score, dtype=float)
    order = np.argsort(-score, kind="mergesort")
    score, positive = score[order], positive[order]
    # The last index of each run of equal scores: one curve point per distinct threshold.
    last = np.r_[np.flatnonzero(np.diff(score)), score.size - 1]
    tp = np.cumsum(positive)[last]
    fp = (last + 1) - tp
    return tp, fp, score[last]


def roc_curve(positive, score):
    """False and true positive rates and thresholds (predict positive when ``score >= t``).

    Starts at (0, 0) with threshold ``inf``. Returns ``(fpr, tpr, thresholds)``;
    rates are NaN-free only when both classes are present.
    """
    tp, fp, thresholds = sorted_counts(positive, score)
    n_pos, n_neg = tp[-1] if tp.size else 0, fp[-1] if fp.size else 0
    tpr = np.r_[0.0, tp / n_pos] if n_pos else np.r_[0.0, np.zeros_like(tp, dtype=float)]
    fpr = np.r_[0.0, fp / n_neg] if n_neg else np.r_[0.0, np.zeros_like(fp, dtype=float)]
    return fpr, tpr, np.r_[np.inf, thresholds]


def roc_auc(positive, score):
    """Area under the ROC curve (trapezoidal, ties count one half); None with one class only."""
    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        return None
    fpr, tpr, _ = roc_curve(positive, score)
    return float(np.trapezoid(tpr, fpr)) if hasattr(np, "trapezoid") else float(np.trapz(tpr, fpr))


def precision_recall_curve(positive, score):
    """Precision and recall at each distinct threshold, highest threshold first.

    Returns ``(precision, recall, thresholds)`` (predict positive when ``score >= t``).
    """
    tp, fp, thresholds = sorted_counts(positive, score)
    n_pos = tp[-1] if tp.size else 0
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / n_pos if n_pos else np.zeros_like(tp, dtype=float)
    return precision, recall, thresholds


def average_precision(positive, score):
    """PR-AUC as average precision: sum over thresholds of (R_n - R_n-1) * P_n; None without positives."""
    positive = np.asarray(positive, dtype=bool)
    if not positive.any():
        return None
    precision, recall, _ = precision_recall_curve(positive, score)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def thin(*arrays, max_points=MAX_CURVE_POINTS):
    """Keep at most ``max_points`` evenly spaced points (first and last always) of parallel arrays."""
    n = len(arrays[0])
    if n <= max_points:
        keep = np.arange(n)
    else:
        keep = np.unique(np.linspace(0, n - 1, max_points).round().astype(int))
    return [np.asarray(a, dtype=float)[keep].round(6).tolist() for a in arrays]


def score_metrics(y_true, probability, labels, positive_label="covid"):
    """ROC-AUC and PR-AUC (average precision), one-vs-rest per class, with curves.

    Parameters
    ----------
    y_true : array of int
        Class indices.
    probability : array, shape (n, n_classes)
    labels : sequence of str
    positive_label : str
        With two classes, the headline ``roc_auc`` / ``pr_auc`` are this class's.

    Returns
    -------
    dict
        ``roc_auc`` and ``pr_auc`` (binary: the positive class; 3-class: the
        macro mean over classes), ``per_class_auc`` ``{label: {roc_auc, pr_auc}}``
        and ``curves`` ``{label: {roc: {fpr, tpr}, pr: {recall, precision}}}`` (only for
        classes whose ROC-AUC is defined: some images of the class and some of others).
    """
    y_true = np.asarray(y_true)
    probability = np.asarray(probability, dtype=float)
    per_class, curves = {}, {}
    classes = [positive_label] if len(labels) == 2 else list(labels)
    for label in classes:
        k = list(labels).index(label)
        positive = y_true == k
        per_class[label] = {"roc_auc": roc_auc(positive, probability[:, k]),
                            "pr_auc": average_precision(positive, probability[:, k])}
        if per_class[label]["roc_auc"] is None:
            continue  # no positives or no negatives (an evaluation set without a class): no curve
        fpr, tpr, _ = roc_curve(positive, probability[:, k])
        precision, recall, _ = precision_recall_curve(positive, probability[:, k])
        fpr, tpr = thin(fpr, tpr)
        recall, precision = thin(recall, precision)
        curves[label] = {"roc": {"fpr": fpr, "tpr": tpr},
                         "pr": {"recall": recall, "precision": precision,
                                "prevalence": float(positive.mean()) if positive.size else 0.0}}

    def headline(name):
        values = [per_class[c][name] for c in classes]
        if any(v is None for v in values):
            return None
        return float(np.mean(values))

    return {"roc_auc": headline("roc_auc"), "pr_auc": headline("pr_auc"),
            "per_class_auc": per_class, "curves": curves}


# --------------------------------------------------------------- bootstrap

def bootstrap_intervals(y_true, y_pred, labels, probability=None, positive_label="covid",
                        n_resamples=1000, confidence=0.95, seed=0, groups=None):
    """Percentile bootstrap confidence intervals over test rows, or over groups of rows.

    Resamples ``n_resamples`` times with replacement (seeded) and takes the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of accuracy
    and of the positive class's precision, recall and F1 (and, for two classes
    with probabilities, ROC-AUC).

    With ``groups`` (one value per row: a patient, or the split's unit), whole
    groups are drawn (a cluster bootstrap): images of one patient are not
    independent draws, and resampling them one by one makes the intervals too
    narrow. Each resample draws as many groups as there are, so its row count
    varies. Groups are numbered in sorted order of their values, so the result
    does not depend on the rows' order; one group per row gives the same
    resamples as no ``groups``.

    Returns
    -------
    dict
        ``{metric: [low, high]}`` plus ``n_resamples``, ``confidence``, ``seed``,
        ``resampled`` (``"images"``, or ``"groups"`` when some group has two or
        more rows) and ``units`` (the number of images or groups drawn from);
        empty when there are no rows.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    n, k = y_true.size, len(labels)
    if n == 0 or n_resamples <= 0:
        return {}
    draw, drawn = _group_draws(n, groups)
    positive = list(labels).index(positive_label)
    rng = np.random.default_rng(seed)
    samples = {"accuracy": [], f"{positive_label}_precision": [], f"{positive_label}_recall": [],
               f"{positive_label}_f1": []}
    with_auc = probability is not None and k == 2
    if with_auc:
        samples[f"{positive_label}_roc_auc"] = []
        score = np.asarray(probability, dtype=float)[:, positive]
    for _ in range(n_resamples):
        idx = draw(rng)
        counts = confusion_from_arrays(y_true[idx], y_pred[idx], k)
        tp = counts[positive, positive]
        predicted, support = counts[:, positive].sum(), counts[positive].sum()
        precision, recall, f1 = precision_recall_f1(tp, predicted, support)
        samples["accuracy"].append(np.trace(counts) / idx.size)
        samples[f"{positive_label}_precision"].append(precision)
        samples[f"{positive_label}_recall"].append(recall)
        samples[f"{positive_label}_f1"].append(f1)
        if with_auc:
            auc = roc_auc(y_true[idx] == positive, score[idx])
            if auc is not None:
                samples[f"{positive_label}_roc_auc"].append(auc)
    tail = (1 - confidence) / 2
    intervals = {name: [float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))]
                 for name, values in samples.items() if values}
    return {**intervals, "n_resamples": int(n_resamples), "confidence": confidence, "seed": seed,
            **drawn}


def paired_difference(correct_a, correct_b, groups=None, n_resamples=1000, confidence=0.95,
                      seed=0):
    """Accuracy of A minus accuracy of B on the same rows, with a paired bootstrap interval.

    Each resample draws rows (or whole ``groups``) once and scores both models on
    them, so what the two get right or wrong together cancels: the interval is
    the difference's, not two intervals side by side. With the same rows in the
    same order, ``groups`` and ``seed``, the resamples are those of
    :func:`bootstrap_intervals`.

    Parameters
    ----------
    correct_a, correct_b : array-like of bool
        Whether each model got each row right, rows in the same order.
    groups : array-like, optional
        One value per row, as in :func:`bootstrap_intervals`.

    Returns
    -------
    dict
        ``difference``, ``interval`` [low, high], ``n_resamples``, ``confidence``,
        ``seed``, ``resampled``, ``units``; None without rows or resamples.
    """
    a = np.asarray(correct_a, dtype=float)
    b = np.asarray(correct_b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference: {a.size} and {b.size} rows")
    if a.size == 0 or n_resamples <= 0:
        return None
    each = a - b
    draw, drawn = _group_draws(each.size, groups)
    rng = np.random.default_rng(seed)
    resampled = [each[draw(rng)].mean() for _ in range(n_resamples)]
    tail = (1 - confidence) / 2
    return {"difference": float(each.mean()),
            "interval": [float(np.quantile(resampled, tail)),
                         float(np.quantile(resampled, 1 - tail))],
            "n_resamples": int(n_resamples), "confidence": confidence, "seed": seed, **drawn}


def _group_draws(n, groups):
    """``(draw, drawn)``: ``draw(rng)`` gives one resample's row indices (as many
    groups drawn as there are, their rows expanded); ``drawn`` says what was drawn
    (``resampled``: ``"images"``, or ``"groups"`` when a group has two or more
    rows; ``units``: how many).

    Rows are sorted by group once; a draw of groups ``g`` becomes the rows
    ``start[g] .. start[g] + size[g]`` of that order, without a Python loop.
    """
    if groups is None:
        codes = np.arange(n)
    else:
        if len(groups) != n:
            raise ValueError(f"groups: {len(groups)} values for {n} rows")
        values = np.asarray(groups)
        if values.dtype == object:  # mixed or None-bearing values: compare as text
            values = values.astype(str)
        codes = np.unique(values, return_inverse=True)[1].ravel()
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes)
    starts = np.cumsum(sizes) - sizes
    units = sizes.size

    def draw(rng):
        chosen = rng.integers(0, units, units)
        lengths = sizes[chosen]
        # Position within the resample minus where its group's run begins in it.
        shift = np.repeat(starts[chosen] - (np.cumsum(lengths) - lengths), lengths)
        return order[np.arange(lengths.sum()) + shift]

    return draw, {"resampled": "groups" if units < n else "images", "units": units}
