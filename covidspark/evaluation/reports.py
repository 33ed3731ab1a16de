"""What a run writes: ``metrics.json`` (versioned), ``report.md``, PNG figures; text tables.

The tables follow the original studies: per model, COVID-19 precision, recall
and F1 and overall accuracy (with 95 % bootstrap intervals here), then
per-class tables and confusion matrices as counts and normalised by row and
by column. The schema of ``metrics.json`` is documented in the README.
"""
import json

#: 2: confidence intervals, PR-AUC, one-vs-rest AUCs, normalised confusion
#: matrices, curves, threshold, class weights, tuning, baseline, plots.
METRICS_SCHEMA_VERSION = 3

POSITIVE = "covid"


def _fmt(value, digits=3):
    return "n/a" if value is None else f"{value:.{digits}f}"


def _interval(metrics, name):
    ci = metrics.get("confidence_intervals", {}).get(name)
    return f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


def headline(metrics, positive=POSITIVE):
    """The studies' numbers: COVID precision, recall, F1, accuracy, ROC-AUC, PR-AUC."""
    covid = metrics["per_class"][positive]
    return {"covid_precision": covid["precision"], "covid_recall": covid["recall"],
            "covid_f1": covid["f1"], "accuracy": metrics["accuracy"],
            "roc_auc": metrics.get("roc_auc"), "pr_auc": metrics.get("pr_auc")}


def headline_cells(metrics, positive=POSITIVE):
    """Markdown cells of :func:`headline`, each with its interval where there is one."""
    covid = metrics["per_class"][positive]
    return [
        f"{covid['precision']:.3f}{_interval(metrics, positive + '_precision')}",
        f"{covid['recall']:.3f}{_interval(metrics, positive + '_recall')}",
        f"{covid['f1']:.3f}{_interval(metrics, positive + '_f1')}",
        f"{metrics['accuracy']:.3f}{_interval(metrics, 'accuracy')}",
        _fmt(metrics.get("roc_auc")),
        _fmt(metrics.get("pr_auc")),
    ]


HEADLINE_HEADER = ["COVID precision", "COVID recall", "COVID F1", "accuracy", "ROC-AUC", "PR-AUC"]


# What makes test images one bootstrap group, by the column that says it.
_GROUPED_BY = {"patient_id": "a patient's images", "dup_group": "near-duplicates",
               "image_id": "identical files"}


def resampled(ci, n):
    """What a run's bootstrap drew, for the reports: the test images, or groups of them."""
    if ci.get("resampled") != "groups":
        return f"the {n} test images"
    kinds = [_GROUPED_BY.get(c, c) for c in ci.get("grouped_by") or _GROUPED_BY]
    listed = kinds[0] if len(kinds) == 1 else ", ".join(kinds[:-1]) + " and " + kinds[-1]
    return f"{ci['units']} groups of the {n} test images ({listed} are one group)"


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def format_table(metrics):
    """The per-class table the original studies print, as plain text (the jobs' stdout)."""
    labels = metrics["confusion_matrix"]["labels"]
    width = max(12, *(len(label) + 2 for label in labels))
    lines = [f"{'class':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for label in labels:
        m = metrics["per_class"][label]
        lines.append(f"{label:<{width}}{m['precision']:>10.3f}{m['recall']:>10.3f}"
                     f"{m['f1']:>10.3f}{m['support']:>10d}")
    for name in ("macro_avg", "weighted_avg"):
        m = metrics[name]
        lines.append(f"{name.replace('_', ' '):<{width}}{m['precision']:>10.3f}"
                     f"{m['recall']:>10.3f}{m['f1']:>10.3f}{metrics['n']:>10d}")
    lines.append(f"{'accuracy':<{width}}{'':>20}{metrics['accuracy']:>10.3f}{metrics['n']:>10d}"
                 f"{_interval(metrics, 'accuracy')}")
    for name in ("roc_auc", "pr_auc"):
        if metrics.get(name) is not None:
            lines.append(f"{name.replace('_', ' '):<{width}}{'':>20}{metrics[name]:>10.3f}")
    ci = metrics.get("confidence_intervals") or {}
    if POSITIVE in labels and ci:
        lines.append(f"{int(ci['confidence'] * 100)} % bootstrap intervals ({ci['n_resamples']} "
                     f"resamples): covid precision{_interval(metrics, 'covid_precision')}, "
                     f"recall{_interval(metrics, 'covid_recall')}, f1{_interval(metrics, 'covid_f1')}")
        if ci.get("resampled") == "groups":
            lines.append(f"  each resample draws {resampled(ci, metrics['n'])}")
    matrix = metrics["confusion_matrix"]["counts"]
    lines.append("")
    lines.append("confusion matrix (rows: true, columns: predicted)")
    lines.append(" " * width + "".join(f"{label:>12}" for label in labels))
    for label, row in zip(labels, matrix):
        lines.append(f"{label:<{width}}" + "".join(f"{v:>12d}" for v in row))
    return "\n".join(lines)


def _confusion_markdown(metrics):
    labels = metrics["confusion_matrix"]["labels"]
    parts = []
    for key, caption, cell in (("counts", "counts", "{:d}"),
                               ("row_normalised", "normalised by row (each row sums to 1: recall "
                                                  "on the diagonal)", "{:.3f}"),
                               ("column_normalised", "normalised by column (each column sums to 1: "
                                                     "precision on the diagonal)", "{:.3f}")):
        matrix = metrics["confusion_matrix"].get(key)
        if matrix is None:
            continue
        rows = [[f"**{label}**", *(cell.format(v) for v in row)] for label, row in zip(labels, matrix)]
        parts.append(f"Confusion matrix, {caption} (rows: true, columns: predicted):\n\n"
                     + markdown_table(["true \\ predicted", *labels], rows))
    return "\n\n".join(parts)


def _per_class_markdown(metrics):
    labels = metrics["confusion_matrix"]["labels"]
    auc = metrics.get("per_class_auc", {})
    rows = []
    for label in labels:
        m = metrics["per_class"][label]
        rows.append([label, f"{m['precision']:.3f}", f"{m['recall']:.3f}",
                     f"{m['specificity']:.3f}", f"{m['f1']:.3f}", m["support"],
                     _fmt(auc.get(label, {}).get("roc_auc")), _fmt(auc.get(label, {}).get("pr_auc"))])
    for name in ("macro_avg", "weighted_avg"):
        m = metrics[name]
        rows.append([name.replace("_", " "), f"{m['precision']:.3f}", f"{m['recall']:.3f}", "",
                     f"{m['f1']:.3f}", metrics["n"], "", ""])
    return markdown_table(["class", "precision", "recall (sensitivity)", "specificity", "F1",
                           "support", "ROC-AUC (one-vs-rest)", "PR-AUC (one-vs-rest)"], rows)


def _threshold_markdown(threshold):
    rows = [[f"{r['threshold']:.4g}" + (" (chosen)" if r["threshold"] == threshold["threshold"]
                                         else ""),
             f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['specificity']:.3f}",
             f"{r['f1']:.3f}", r["predicted_positive"]] for r in threshold["test_table"]]
    v = threshold.get("validation") or {}
    chosen = (f"COVID threshold **{threshold['threshold']:.4g}** ({threshold['strategy']}"
              + (f"; on {v['n']} validation images: precision {v['precision']:.3f}, "
                 f"recall {v['recall']:.3f}" if v.get("n") else "") + ").")
    if threshold.get("warning"):
        chosen += f" **Caution: {threshold['warning']}.**"
    return (chosen + " The model predicts COVID when its COVID probability is above the "
            "threshold; the saved model uses it. Precision-recall trade-off on the test set:\n\n"
            + markdown_table(["threshold", "precision", "recall", "specificity", "F1",
                              "predicted COVID"], rows))


def markdown_report(run, plots=()):
    """``report.md`` of one run (see :func:`write_report`)."""
    metrics = run["metrics"]
    labels = metrics["confusion_matrix"]["labels"]
    out = [f"# covidspark report: {run['task']} task, {run['model']} + {run['classifier']}\n"]
    out += [f"> **{w}**\n" for w in run.get("warnings", [])]
    counts = run["counts"]
    facts = [f"- data: {run['data']['description']}",
             f"- weights: {run['weights']['description']}",
             f"- train / validation / test images: {counts['train']} / "
             f"{counts.get('validation', 0)} / {counts['test']}"]
    if run.get("split", {}).get("method"):
        facts.append(f"- split: {run['split']['method']}")
    if run.get("class_weight"):
        facts.append(f"- class weights: {run['class_weight']['description']}")
    if run.get("tuning"):
        facts.append(f"- model selection: {run['tuning']['description']}")
    out.append("\n".join(facts) + "\n")
    if POSITIVE in labels:
        rows = [[f"{run['model']} + {run['classifier']}", *headline_cells(metrics)]]
        if run.get("baseline"):
            rows.append([run["baseline"]["name"], *headline_cells(run["baseline"]["metrics"])])
        ci = metrics.get("confidence_intervals") or {}
        note = (f"Brackets: {int(ci['confidence'] * 100)} % bootstrap intervals "
                f"({ci['n_resamples']} resamples, seed {ci['seed']}) over "
                f"{resampled(ci, metrics['n'])}." if ci else "")
        auc_note = ("ROC-AUC and PR-AUC: COVID vs rest." if len(labels) == 2 else
                    "ROC-AUC and PR-AUC: macro mean of one-vs-rest.")
        out.append("## Results\n\n" + markdown_table(["model", *HEADLINE_HEADER], rows)
                   + f"\n\n{note} {auc_note}\n")
    if run.get("baseline"):
        out.append(run["baseline"]["verdict"] + "\n")
    if run.get("finetuning"):
        out.append("## Fine-tuning\n\n" + _finetuning_markdown(run["finetuning"]) + "\n")
    out.append("## Per class\n\n" + _per_class_markdown(metrics) + "\n")
    out.append("## Confusion matrices\n\n" + _confusion_markdown(metrics) + "\n")
    if run.get("threshold"):
        out.append("## Decision threshold\n\n" + _threshold_markdown(run["threshold"]) + "\n")
    if run.get("tuning"):
        t = run["tuning"]
        rows = [[json.dumps(r["params"]), f"{r['score']:.4f}"] for r in t["results"]]
        out.append(f"## Model selection\n\n{t['description']}; best: `{json.dumps(t['best'])}`."
                   f"\n\n" + markdown_table(["parameters", f"mean {t['metric']} over folds"], rows)
                   + "\n")
    if plots:
        out.append("## Figures\n\n" + "\n".join(f"![{p}]({p})" for p in plots) + "\n")
    if run.get("rejected"):
        out.append(f"## Rejected files\n\n{len(run['rejected'])} file(s) were not used:\n\n"
                   + "\n".join(f"- `{r['path']}`: {r['reason']}" for r in run["rejected"][:50])
                   + "\n")
    return "\n".join(out)


def _finetuning_markdown(finetuning):
    """The recipe in one line and the per-epoch history as a table."""
    r = finetuning["recipe"]
    rows = [[h["epoch"], h["phase"], f"{h['lr']:g}", f"{h['train_loss']:.4f}",
             f"{h['train_accuracy']:.3f}", "-" if h["val_loss"] is None else f"{h['val_loss']:.4f}",
             "-" if h["val_accuracy"] is None else f"{h['val_accuracy']:.3f}",
             f"{h['images_per_s']:.1f}"] for h in finetuning["history"]]
    return (f"{finetuning['processes']} process(es) on {finetuning['device']}; phase 1 "
            f"{r['head_epochs']} epoch(s) at lr {r['head_lr']:g} (backbone frozen), phase 2 "
            f"{r['finetune_epochs']} at {r['finetune_lr']:g} (unfrozen: {r['unfreeze']}); "
            f"batch {r['batch_size']} per process; balance {r['balance']}; augmentation: "
            f"rotation ±{r['rotation']:g}°, shift {r['shift']:g}, zoom {r['zoom']:g}, brightness "
            f"{r['brightness']:g}, contrast {r['contrast']:g}, horizontal flip "
            f"{'on' if r['hflip'] else 'off'}. Kept: epoch {finetuning['best_epoch']} (lowest "
            f"validation loss){'; stopped early' if finetuning['stopped_early'] else ''}.\n\n"
            + markdown_table(["epoch", "phase", "lr", "train loss", "train acc", "val loss",
                              "val acc", "images/s"], rows))


def write_json(document, path, files=None):
    """``document`` as indented JSON at ``path`` (a path or URI), stamped with the schema version."""
    from covidspark.runtime.filesystem import Files

    text = json.dumps({"schema_version": METRICS_SCHEMA_VERSION, **document}, indent=2)
    (files or Files()).write_text(path, text)
    return path


def absent_classes_caution(metrics):
    """What a test set without some of the model's classes cannot measure; None if it has all.

    An external COVID-only collection, say: its classes' recall (sensitivity) and
    the accuracy are measured; the absent classes' rows (0.000 by scikit-learn's
    ``zero_division=0``), the macro averages and the AUCs that need them are not.
    """
    per_class = metrics["per_class"]
    absent = [label for label, row in per_class.items() if row["support"] == 0]
    present = [label for label in per_class if label not in absent]
    if not absent or not present:
        return None
    alone = (f"; with {present[0]} alone, its precision (1.000 where it is predicted at all), "
             f"specificity and AUCs measure nothing, and no ROC curve is drawn"
             if len(present) == 1 else "")
    return (f"Caution: the test images include none labelled {', '.join(absent)}. Measured: "
            f"recall (sensitivity) of {', '.join(present)}, and accuracy. Not measured: "
            f"the rows of {', '.join(absent)} (0.000 by scikit-learn's zero_division=0, "
            f"or n/a), the macro averages, and the AUCs that need them{alone}.")


def write_report(run, out_dir, files=None):
    """Write ``metrics.json``, ``report.md`` and the PNG figures of a run.

    Parameters
    ----------
    run : dict
        ``{"metrics": evaluate(...), ...}`` plus the run's description (task,
        classifier, model, weights, data, counts, optional threshold,
        class_weight, tuning, baseline).
    out_dir : str
        A folder: a local path or any URI ``files`` can write (created).
    files : covidspark.runtime.filesystem.Files, optional
        The filesystem layer of the run's session (default: local files only).

    Returns
    -------
    (str, str)
        Paths (URIs) of metrics.json and report.md.
    """
    from covidspark.evaluation.plots import write_plots
    from covidspark.runtime.filesystem import Files, join

    files = files or Files()
    files.makedirs(out_dir)
    said = absent_classes_caution(run["metrics"])
    if said and said not in run.get("warnings", []):
        # report.md, metrics.json and the printed summary say it. A new list: compare's
        # runs share one list of notes, and another task's test split may hold every class.
        run["warnings"] = [*run.get("warnings", []), said]
    plots = write_plots(run["metrics"], out_dir, f"{run['model']} + {run['classifier']}, "
                                                 f"{run['task']}", files=files)
    curves = (run.get("finetuning") or {}).get("learning_curves")
    plots = plots + ([curves] if curves else [])
    metrics_path = write_json({**run, "plots": plots}, join(out_dir, "metrics.json"), files)
    report_path = files.write_text(join(out_dir, "report.md"), markdown_report(run, plots))
    return metrics_path, report_path


def _difference_cell(difference):
    """``+0.031 [-0.007, +0.069]``: a paired accuracy difference with its interval."""
    if not difference:
        return "n/a"
    low, high = difference["interval"]
    return f"{difference['difference']:+.3f} [{low:+.3f}, {high:+.3f}]"


def _best_cell(run, best):
    """The best run's accuracy minus ``run``'s (``best`` for the best run itself)."""
    if f"{run['model']} + {run['classifier']}" == best:
        return "best"
    return _difference_cell(run.get("best_minus_this"))


def comparison_markdown(comparison):
    """The comparison report of :func:`covidspark.ml.experiment.compare`: one table per task."""
    out = ["# covidspark comparison\n"]
    out += [f"> **{w}**\n" for w in comparison.get("warnings", [])]
    out.append(f"- data: {comparison['data']}\n- weights: {comparison['weights']}\n"
               f"- split: {comparison['split']}\n")
    for task, runs in comparison["tasks"].items():
        paired = runs.get("baseline") and any(r.get("difference") for r in runs["runs"])
        # Only with intervals: without them "best" is the larger of two numbers shown.
        ranked = runs.get("best") and any(r.get("best_minus_this") for r in runs["runs"])
        rows = [[f"{r['model']} + {r['classifier']}", *headline_cells(r["metrics"]),
                 *([_difference_cell(r.get("difference"))] if paired else []),
                 *([_best_cell(r, runs["best"])] if ranked else [])]
                for r in runs["runs"]]
        if runs.get("baseline"):
            rows.append([runs["baseline"]["name"], *headline_cells(runs["baseline"]["metrics"]),
                         *([""] if paired else []), *([""] if ranked else [])])
        header = ["model", *HEADLINE_HEADER, *(["accuracy vs baseline (paired)"] if paired else []),
                  *(["best's accuracy minus this (paired)"] if ranked else [])]
        out.append(f"## {task} ({runs['counts']['train']} train / {runs['counts']['test']} test "
                   f"images)\n\n" + markdown_table(header, rows) + "\n")
        # Every run of a task has the same test rows, so the first run's intervals say it.
        ci = next((r["metrics"]["confidence_intervals"] for r in runs["runs"]
                   if r["metrics"].get("confidence_intervals")), None)
        if ci:
            out.append(f"Brackets: {int(ci['confidence'] * 100)} % bootstrap intervals over "
                       f"{resampled(ci, runs['counts']['test'])}.\n")
        if ranked:
            out.append(f"Best: {runs['best']}, the most accurate on these test images. In "
                       f"its column, an interval that holds 0 means these images cannot tell "
                       f"the two apart; one above 0, that the best is ahead on them (picked "
                       f"on the same images, its lead is an optimistic estimate).\n")
        out += [r["verdict"] + "\n" for r in runs["runs"] if r.get("verdict_warns")]
    out.append("Per-run reports, figures and models are in the task folders.\n")
    return "\n".join(out)
