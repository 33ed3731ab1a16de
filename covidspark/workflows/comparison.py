"""The compare workflow: backbones x classifiers x tasks on one split and one feature store."""
import dataclasses
import itertools
import logging
import os
import time

from covidspark.runtime import lineage
from covidspark.runtime.connect import set_job_description
from covidspark.workflows import steps

logger = logging.getLogger("covidspark")


@dataclasses.dataclass
class CompareResult:
    """What :func:`compare` made.

    Attributes
    ----------
    comparison : dict
        Everything in ``comparison.json``: per task, one entry per (model,
        classifier) with its metrics, threshold and baseline verdict.
    markdown_path, json_path : str
    """

    comparison: dict
    markdown_path: str
    json_path: str
    config: object = None

    def runs(self, task):
        """The runs of one task (a list of dicts: model, classifier, metrics, verdict, report)."""
        return self.comparison["tasks"][task]["runs"]

    def model_dir(self, task, model, classifier):
        """Where the ``PipelineModel`` of one run was saved."""
        return os.path.join(self.config.out, task, f"{model}-{classifier}", "model")

    def to_pandas(self):
        """One row per (task, model, classifier): the studies' numbers, the 95 % interval of
        accuracy, the baseline's accuracy and whether the model beats it."""
        import pandas as pd

        from covidspark.evaluation.reports import headline

        rows = []
        for task, entry in self.comparison["tasks"].items():
            baseline = entry.get("baseline")
            for run in entry["runs"]:
                metrics = run["metrics"]
                low, high = (metrics.get("confidence_intervals") or {}).get(
                    "accuracy", (None, None))
                rows.append({"task": task, "model": run["model"],
                             "classifier": run["classifier"], **headline(metrics),
                             "accuracy_low": low, "accuracy_high": high,
                             "baseline_accuracy": baseline and baseline["metrics"]["accuracy"],
                             "beats_baseline": None if baseline is None
                             else not run["verdict_warns"]})
        return pd.DataFrame(rows)

    def summary(self):
        """The text ``covidspark compare`` prints: notes, the comparison tables, the path."""
        from covidspark.data.rejects import summary_lines
        from covidspark.evaluation.reports import comparison_markdown

        rejected = summary_lines(self.comparison["rejected"],
                                 f"{steps.shown(self.json_path)}, under rejected")
        return (steps.format_notes(self.comparison["warnings"])
                + ("\n".join([*rejected, "", ""]) if rejected else "")
                + comparison_markdown(self.comparison)
                + f"comparison: {steps.shown(self.markdown_path)}")


@lineage.frees_what_it_keeps
def compare(config):
    """Fit and evaluate every (backbone, classifier, task) on one split; write the comparison.

    Each backbone featurizes every image once; every classifier of every task is
    fitted on those stored features. The binary and 3-class tasks share one
    split of the 3-class images (the binary task uses its normal and COVID rows),
    and each task has its 32x32 pixel baseline.

    Parameters
    ----------
    config : covidspark.workflows.CompareConfig

    Returns
    -------
    CompareResult
    """
    from dataclasses import replace

    from pyspark.ml import PipelineModel

    from covidspark.evaluation.reports import comparison_markdown, write_json, write_report
    from covidspark.evaluation.seen_images import remember_training_images
    from covidspark.ml import experiment
    from covidspark.ml.pipelines import task_labels
    from covidspark.runtime.filesystem import join
    from covidspark.runtime.session import get_spark

    config.validate()
    options = config.fit_options()
    tasks = [t for t in ("binary", "3class") if t in config.tasks]
    notes = []
    spark = get_spark("covidspark-compare", master=config.master, remote=config.remote)
    files, out = steps.output_location(spark, config.out)
    started = time.time()
    # One split of the widest task's images; the binary task uses its normal and COVID rows.
    widest = "3class" if "3class" in tasks else "binary"
    images, facts, with_content = steps.prepare_images(spark, config, widest, notes,
                                                       config.duplicates)
    split, split_info = steps.split_for(images, config, options)
    rows = split.count()
    pixels = steps.baseline_pixels(spark, split) if config.baseline else None
    # The pixels serve the baselines alone: freed once they are fitted.
    with lineage.held(pixels):
        baselines = {task: experiment.baseline(pixels, task, options) for task in tasks} \
            if config.baseline else {}
    comparison = {"data": facts["data"]["description"], "split": split_info["method"],
                  "weights": None, "warnings": notes, "rejected": facts["rejected"],
                  "duplicates": facts["duplicates"], "models": config.models,
                  "classifiers": config.classifiers,
                  "tasks": {task: {"runs": [], "baseline": baselines.get(task)} for task in tasks},
                  "featurized": {}}
    scored = {task: [] for task in tasks}  # each run's metrics with its test rows
    for model_name in config.models:
        featurizer, resolved = steps.make_featurizer(config, notes, model=model_name)
        comparison["weights"] = resolved.description
        features, _, seconds = steps.featurize_once(spark, with_content(split), featurizer,
                                                    config.features, total=rows)
        comparison["featurized"][model_name] = {"seconds": round(seconds, 1),
                                                "images": featurizer.imagesFeaturized(),
                                                "ran_on": featurizer.ranOn()}
        with lineage.held(features):
            for task, classifier in itertools.product(tasks, config.classifiers):
                name = f"{model_name} + {classifier}"
                set_job_description(spark, f"{task}: fit {name}")
                logger.info("%s task: fitting %s", task, name)
                head, result = experiment.fit_and_evaluate(
                    features, task, classifier,
                    options if task == "binary" else replace(options, threshold=None))
                if task in baselines:
                    experiment.with_verdict(name, result, baselines[task])
                run_dir = join(out, task, f"{model_name}-{classifier}")
                PipelineModel(stages=[featurizer, *head.stages]).write().overwrite().save(
                    join(run_dir, "model"))
                remember_training_images(split, join(run_dir, "model"), task_labels(task))
                run = {"task": task, "classifier": classifier, "model": model_name,
                       "weights": steps.weights_facts(config.weights, resolved),
                       **facts, "split": split_info, **result, "warnings": notes}
                write_report(run, run_dir, files)
                entry = comparison["tasks"][task]
                entry["counts"] = result["counts"]
                scored[task].append(result["metrics"])
                summary = {k: v for k, v in result["metrics"].items() if k != "curves"}
                entry["runs"].append({
                    "model": model_name, "classifier": classifier, "metrics": summary,
                    "threshold": result["threshold"] and result["threshold"]["threshold"],
                    "verdict": result.get("baseline", {}).get("verdict"),
                    "difference": result.get("baseline", {}).get("difference"),
                    "verdict_warns": result.get("baseline", {}).get("warns", False),
                    "report": os.path.join(task, f"{model_name}-{classifier}", "report.md")})
    for task, entry in comparison["tasks"].items():
        best, differences = experiment.differences_to_best(scored[task])
        entry["best"] = None if best is None else \
            f"{entry['runs'][best]['model']} + {entry['runs'][best]['classifier']}"
        for run, difference in zip(entry["runs"], differences):
            run["best_minus_this"] = difference
    comparison["timing_s"] = round(time.time() - started, 1)
    comparison["environment"] = steps.environment(spark)
    json_path = write_json(comparison, join(out, "comparison.json"), files)
    markdown_path = files.write_text(join(out, "comparison.md"), comparison_markdown(comparison))
    return CompareResult(comparison=comparison, markdown_path=markdown_path, json_path=json_path,
                         config=config)
