"""PNG figures of a run: confusion matrices (counts, by row, by column), ROC and PR curves.

matplotlib is imported here only, with the non-interactive Agg backend, so
reports can be written on headless drivers (Databricks, EMR, CI).
"""

CONFUSION_VIEWS = (
    ("counts", "confusion_counts.png", "counts"),
    ("row_normalised", "confusion_by_row.png", "normalised by row (recall)"),
    ("column_normalised", "confusion_by_column.png", "normalised by column (precision)"),
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def confusion_figure(matrix, labels, title, path, integer=False):
    """One confusion matrix as a heat map with the values written in the cells."""
    import numpy as np

    plt = _pyplot()
    values = np.asarray(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(1.4 * len(labels) + 2.2, 1.2 * len(labels) + 1.8), dpi=100)
    scale = values.max() if values.size and values.max() > 0 else 1.0
    ax.imshow(values, cmap="Blues", vmin=0, vmax=scale)
    for i in range(len(labels)):
        for j in range(len(labels)):
            text = f"{int(values[i, j])}" if integer else f"{values[i, j]:.2f}"
            ax.text(j, i, text, ha="center", va="center",
                    color="white" if values[i, j] > 0.6 * scale else "black")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def curve_figure(curves, kind, title, path):
    """ROC (``kind="roc"``) or precision-recall (``"pr"``) curves, one line per class."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 4.2), dpi=100)
    for label, curve in curves.items():
        if kind == "roc":
            ax.plot(curve["roc"]["fpr"], curve["roc"]["tpr"], label=label)
        else:
            ax.step(curve["pr"]["recall"], curve["pr"]["precision"], where="post", label=label)
    if kind == "roc":
        ax.plot([0, 1], [0, 1], ls=":", color="grey", label="chance")
        ax.set_xlabel("false positive rate (1 - specificity)")
        ax.set_ylabel("true positive rate (sensitivity)")
    else:
        ax.set_xlabel("recall (sensitivity)")
        ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower right" if kind == "roc" else "lower left", fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def write_plots(metrics, out_dir, title="", files=None):
    """Write the run's PNGs into ``out_dir`` (a path or URI); returns their file names.

    Returns an empty list (and the report says so) when matplotlib is missing.
    """
    from covidspark.runtime.filesystem import Files, join

    try:
        _pyplot()
    except ImportError:
        return []
    files = files or Files()
    labels = metrics["confusion_matrix"]["labels"]
    written = []
    for key, name, caption in CONFUSION_VIEWS:
        with files.open_write(join(out_dir, name)) as stream:
            confusion_figure(metrics["confusion_matrix"][key], labels,
                             f"{title}\n{caption}".strip(), stream, integer=key == "counts")
        written.append(name)
    if metrics.get("curves"):
        for kind, name, caption in (("roc", "roc.png", "ROC"), ("pr", "pr.png", "precision-recall")):
            with files.open_write(join(out_dir, name)) as stream:
                curve_figure(metrics["curves"], kind, f"{title}\n{caption}".strip(), stream)
            written.append(name)
    return written


LEARNING_CURVES_PNG = "learning_curves.png"


def write_learning_curves(history, out_dir, title="", files=None):
    """Loss and accuracy per epoch, train and validation, as ``learning_curves.png``.

    ``history``: the per-epoch records of a fine-tuning run (``epoch``,
    ``train_loss``, ``val_loss``, ``train_accuracy``, ``val_accuracy``, ``phase``).
    Returns the file name, or None when matplotlib is missing.
    """
    from covidspark.runtime.filesystem import Files, join

    try:
        plt = _pyplot()
    except ImportError:
        return None
    files = files or Files()
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.6), dpi=100)
    for ax, key in zip(axes, ("loss", "accuracy")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], marker="o", label="train")
        if any(h[f"val_{key}"] is not None for h in history):
            ax.plot(epochs, [h[f"val_{key}"] for h in history], marker="o", label="validation")
        head_end = sum(1 for h in history if h["phase"] == "head")
        if 0 < head_end < len(history):  # where the backbone was unfrozen
            ax.axvline(head_end + 0.5, ls=":", color="grey")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with files.open_write(join(out_dir, LEARNING_CURVES_PNG)) as stream:
        fig.savefig(stream, format="png")
    plt.close(fig)
    return LEARNING_CURVES_PNG
