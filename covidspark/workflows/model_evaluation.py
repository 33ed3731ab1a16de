"""The evaluate workflow: a saved model scored on labelled images, reported like a train run."""
import dataclasses
import logging
import os

from covidspark.runtime import lineage
from covidspark.runtime.connect import set_job_description
from covidspark.workflows import steps

logger = logging.getLogger("covidspark")


@dataclasses.dataclass
class EvaluateResult:
    """What :func:`evaluate_model` wrote.

    Attributes
    ----------
    run : dict
        Everything in ``metrics.json``.
    metrics_path, report_path : str
    """

    run: dict
    metrics_path: str
    report_path: str

    @property
    def metrics(self):
        """The metrics on the evaluated images (``run["metrics"]``)."""
        return self.run["metrics"]

    def summary(self):
        """The text ``covidspark evaluate`` prints."""
        from covidspark.data.rejects import summary_lines
        from covidspark.evaluation.reports import format_table

        rejected = summary_lines(self.run["rejected"],
                                 f"{steps.shown(self.metrics_path)}, under rejected")
        # The notes: random weights, copies of training images, classes the set lacks
        # (write_report adds that one).
        blocks = [steps.format_notes(self.run["warnings"]).rstrip("\n"), "\n".join(rejected),
                  format_table(self.metrics),
                  f"metrics: {steps.shown(self.metrics_path)}\n"
                  f"report:  {steps.shown(self.report_path)}"]
        return "\n\n".join(block for block in blocks if block)


@lineage.frees_what_it_keeps
def evaluate_model(config):
    """Predict labelled images with a saved model; write ``metrics.json``, ``report.md``, figures.

    The task follows from the saved label indexer; images of other classes are
    excluded and counted, as in training. Use it to test a model trained on one
    collection on another.

    Parameters
    ----------
    config : covidspark.workflows.EvaluateConfig

    Returns
    -------
    EvaluateResult
    """
    from pyspark import StorageLevel

    from covidspark.evaluation.reports import write_report
    from covidspark.evaluation.scoring import evaluate
    from covidspark.evaluation.seen_images import listed
    from covidspark.ml.pipelines import TASKS
    from covidspark.runtime.session import get_spark

    config.validate()
    spark = get_spark("covidspark-evaluate", master=config.master, remote=config.remote)
    files, out = steps.output_location(spark, config.out)
    model, indexer = steps.load_model(spark, config.model_dir)
    labels = list(indexer.labels)
    task = next(t for t, task_labels in TASKS.items() if list(task_labels) == labels)
    notes = []
    images, facts, with_content = steps.prepare_images(spark, config, task, notes,
                                                       duplicates="ignore", every_class=False)
    images, seen = _without_seen(spark, images, config, notes)
    images = with_content(images)
    set_job_description(spark, 
        f"evaluate {os.path.basename(config.model_dir.rstrip('/'))}")
    # Scored once for evaluate's several passes; freed as soon as they are done (or
    # when the workflow ends, if evaluate raises).
    scored = lineage.persist(model.transform(images), StorageLevel.MEMORY_AND_DISK)
    with lineage.held(scored) as predictions:
        metrics = evaluate(predictions, labels, bootstrap=config.bootstrap, seed=config.seed)
    featurizer = model.stages[0]
    run = {"task": task, "labels": labels, "classifier": type(model.stages[2]).__name__,
           "model": featurizer.getModelName(),
           "weights": steps.weights_facts(featurizer.getWeights(), featurizer.resolvedWeights()),
           **facts, "split": {"method": f"all images, model from {config.model_dir}"},
           "counts": {"train": 0, "test": metrics["n"], "total": metrics["n"]},
           "metrics": metrics, "seen_in_training": listed(seen),
           "environment": steps.environment(spark), "warnings": notes}
    metrics_path, report_path = write_report(run, out, files)
    return EvaluateResult(run=run, metrics_path=metrics_path, report_path=report_path)


def _without_seen(spark, images, config, notes):
    """``images`` less the copies of the model's training images if ``--seen drop``; what was found.

    The caution about copies joins ``notes``, the run's warnings (report.md's top).
    """
    from pyspark.sql import functions as F

    from covidspark.errors import InputError
    from covidspark.evaluation.seen_images import caution, seen_in_training

    set_job_description(spark, "look for the model's training images")
    seen = seen_in_training(spark, images, config.model_dir)
    if not seen["checked"]:
        if config.seen == "drop":
            raise InputError(f"--seen drop: {seen['reason']}")
        logger.info("Copies of the model's training images not looked for: %s", seen["reason"])
        return images, seen
    said = caution(seen, config.seen)
    if said:
        logger.warning(said)
        notes.append(said)
    if config.seen == "drop" and seen["copies"]:
        if len(seen["copies"]) == seen["evaluated"]:
            raise InputError(f"--seen drop: every one of the {seen['evaluated']} images is a copy "
                             f"of the model's training or validation images; nothing is left "
                             f"to evaluate")
        copies = spark.createDataFrame([(c["path"],) for c in seen["copies"]], "path string")
        images = images.join(F.broadcast(copies), on="path", how="left_anti")
    return images, {**seen, "policy": config.seen, "caution": said}
