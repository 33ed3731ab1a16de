"""The train workflow: read, split, featurize once, fit, evaluate beside the baseline, save."""
import dataclasses
import logging

from covidspark.runtime import lineage
from covidspark.runtime.connect import is_connect, set_job_description
from covidspark.workflows import steps

logger = logging.getLogger("covidspark")


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` made.

    Attributes
    ----------
    run : dict
        Everything written to ``metrics.json`` (task, data, split, counts, metrics,
        threshold, baseline, timing, environment, notes).
    model_dir, metrics_path, report_path : str
    """

    run: dict
    model_dir: str
    metrics_path: str
    report_path: str

    @classmethod
    def write(cls, run, out, files):
        """Write ``metrics.json``, ``report.md`` and the figures of ``run``; return the result."""
        from covidspark.evaluation.reports import write_report

        metrics_path, report_path = write_report(run, out, files)
        return cls(run=run, model_dir=run["model_dir"], metrics_path=metrics_path,
                   report_path=report_path)

    @property
    def metrics(self):
        """The test metrics (``run["metrics"]``)."""
        return self.run["metrics"]

    @property
    def counts(self):
        """Images in train, validation and test (``run["counts"]``)."""
        return self.run["counts"]

    def summary(self):
        """The text ``covidspark train`` prints: notes, the per-class table, paths."""
        from covidspark.data.rejects import summary_lines
        from covidspark.evaluation.reports import format_table

        run = self.run
        counts = run["counts"]
        lines = [steps.format_notes(run["warnings"]).rstrip("\n"),
                 f"{run['task']} task, {run['model']} ({run['weights']['description']}) + "
                 f"{run['classifier']}; train {counts['train']} / validation "
                 f"{counts['validation']} / test {counts['test']} images",
                 *summary_lines(run["rejected"],
                                f"{steps.shown(self.metrics_path)}, under rejected"),
                 format_table(run["metrics"])]
        chosen = run.get("threshold")
        if chosen:
            lines.append(f"\nCOVID threshold {chosen['threshold']:.4g} ({chosen['strategy']}), "
                         f"saved in the model"
                         + (f"; caution: {chosen['warning']}" if chosen["warning"] else ""))
        if run.get("baseline"):
            lines.append("\n" + run["baseline"]["verdict"].replace("**", ""))
        lines.append(f"\nmodel:   {steps.shown(self.model_dir)}\n"
                     f"metrics: {steps.shown(self.metrics_path)}\n"
                     f"report:  {steps.shown(self.report_path)}")
        return "\n".join(line for line in lines if line)


@lineage.frees_what_it_keeps
def train(config):
    """Train one classifier on deep features of chest X-rays and report it.

    Reads the images (every one decode-checked on the executors), keeps the
    task's classes, resolves exact and near duplicates, splits stratified by label
    and grouped by patient and duplicate group, featurizes every image once,
    fits the classifier (class-weighted, cross-validated, with a COVID threshold
    chosen on validation data, as configured), evaluates on the test split beside
    the 32x32 pixel baseline, and saves the ``PipelineModel`` (featurizer + label
    indexer + classifier + label decoder), ``metrics.json``, ``report.md`` and
    figures under ``config.out``.

    Parameters
    ----------
    config : covidspark.workflows.TrainConfig

    Returns
    -------
    TrainResult

    Raises
    ------
    covidspark.errors.InputError
        A bad setting, file or row (the message names it).
    """
    from concurrent.futures import ThreadPoolExecutor

    from pyspark.ml import PipelineModel

    from covidspark.evaluation.seen_images import remember_training_images
    from covidspark.ml import experiment
    from covidspark.ml.pipelines import task_labels
    from covidspark.runtime.filesystem import join
    from covidspark.runtime.progress import Stopwatch
    from covidspark.runtime.session import get_spark

    config.validate()
    options = config.fit_options()
    notes = []
    spark = get_spark(f"covidspark-train-{config.classifier}", master=config.master,
                      remote=config.remote)
    # Before any work: a run that cannot write its report fails now, not after the fit.
    files, out = steps.output_location(spark, config.out)
    watch = Stopwatch()
    with watch.step("read, check and deduplicate"):
        images, facts, with_content = steps.prepare_images(spark, config, config.task, notes,
                                                           config.duplicates)
    featurizer, resolved = steps.make_featurizer(config, notes)
    with watch.step("split"):
        split, split_info = steps.split_for(images, config, options)
    # Featurize once; the fit, cross-validation folds and evaluation read the stored features.
    with watch.step("featurize"):
        features, store_stats, _ = steps.featurize_once(spark, with_content(split),
                                                        featurizer, config.features,
                                                        total=split.count())
    set_job_description(spark, f"fit {config.classifier}")
    # The baseline's LR runs beside the classifier: logistic regression is
    # latency-bound (a small Spark job per iteration, the driver optimising in
    # between), so two fits side by side share the cores. Measured on 624 images:
    # ~12 s of baseline, run after the fit, was most of it waiting.
    # Spark Connect keeps the active session per thread, and pyspark.ml looks it up
    # there: under Connect the baseline runs after the fit, in this thread.
    side_by_side = config.baseline and not is_connect(spark)
    with watch.step("fit and evaluate"), lineage.held(features), \
            ThreadPoolExecutor(max_workers=1) as pool:
        pending = (pool.submit(steps.pixel_baseline, spark, split, config.task, options)
                   if side_by_side else None)
        head, result = experiment.fit_and_evaluate(features, config.task, config.classifier,
                                                   options)
        if config.baseline:
            baseline = (pending.result() if pending is not None
                        else steps.pixel_baseline(spark, split, config.task, options))
            experiment.with_verdict(f"{config.model} + {config.classifier}", result, baseline)

    model_dir = join(out, "model")
    with watch.step("save the model"):
        PipelineModel(stages=[featurizer, *head.stages]).write().overwrite().save(model_dir)
        remember_training_images(split, model_dir)
    run = {
        "task": config.task,
        "labels": list(task_labels(config.task)),
        "classifier": config.classifier,
        "model": config.model,
        "weights": steps.weights_facts(config.weights, resolved),
        **facts,
        "split": split_info,
        **result,
        "images_featurized": featurizer.imagesFeaturized(),
        # "engine precision device @ host" -> images: is it using the GPU?
        "ran_on": featurizer.ranOn(),
        # Seconds the driver waited in each step; "total" is up to the report.
        "timing_s": watch.seconds(),
        "feature_store": store_stats and {k: store_stats[k] for k in
                                          ("location", "computed", "reused")},
        "environment": steps.environment(spark),
        "warnings": notes,
        "model_dir": model_dir,
    }
    return TrainResult.write(run, out, files)
