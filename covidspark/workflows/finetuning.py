"""The finetune workflow: read, split, fine-tune the network across the cluster, evaluate, save."""
import logging
import time

from covidspark.runtime import lineage
from covidspark.workflows import steps
from covidspark.workflows.training import TrainResult

logger = logging.getLogger("covidspark")

FROM_RANDOM_NOTE = ("Fine-tuning STARTED FROM RANDOMLY INITIALISED (seeded) weights, not "
                    "pretrained ImageNet weights: the studies fine-tuned ImageNet networks.")


@lineage.frees_what_it_keeps
def finetune(config):
    """Fine-tune a backbone and a new head, evaluate it beside the pixel baseline, save it.

    The same reading, duplicate handling and grouped split as :func:`train`
    (with a validation split always: it drives early stopping and the learning
    curves); then :class:`~covidspark.finetune.trainer.ImageClassifierTrainer`
    under ``TorchDistributor``; then the same threshold choice, test metrics
    with bootstrap intervals, baseline verdict, figures and report, plus
    ``learning_curves.png`` and the per-epoch history in ``metrics.json``.

    Parameters
    ----------
    config : covidspark.workflows.FinetuneConfig

    Returns
    -------
    covidspark.workflows.TrainResult
    """
    from covidspark.evaluation.plots import write_learning_curves
    from covidspark.evaluation.seen_images import remember_training_images
    from covidspark.finetune.trainer import ImageClassifierTrainer, recipe_params
    from covidspark.ml import experiment, pipelines
    from covidspark.runtime.session import get_spark

    config.validate()
    options = config.fit_options()
    recipe = config.recipe()
    notes = []
    spark = get_spark("covidspark-finetune", master=config.master, remote=config.remote)
    files, out = steps.output_location(spark, config.out)
    started = time.time()
    images, facts, with_content = steps.prepare_images(spark, config, config.task, notes,
                                                       config.duplicates)
    split, split_info = steps.split_for(images, config, options, validation=True)
    data, task_info = pipelines.prepare_task(with_content(split), config.task)
    trainer = ImageClassifierTrainer(
        task=config.task, modelName=config.model, weights=config.weights,
        outputLocation=out, numProcesses=config.num_processes, localMode=config.local_mode,
        useGpu=config.use_gpu, precision=config.precision, engine=config.engine,
        **recipe_params(recipe))
    model = trainer.fit(data)
    fit = trainer.lastFitSummary()
    if not fit["weights"]["pretrained"]:
        notes.append(FROM_RANDOM_NOTE)
    for note in notes:
        logger.warning(note)
    train_s = time.time() - started
    result = experiment.evaluate_fitted(model, data, config.task, task_info, options)
    model_dir = fit["model_dir"]
    if result["threshold"] is not None:  # stored in the model: save it again
        model.write().overwrite().save(model_dir)
    remember_training_images(split, model_dir)
    if config.baseline:
        with lineage.held(steps.baseline_pixels(spark, split)) as pixels:
            experiment.with_verdict(f"{config.model} fine-tuned", result,
                                    experiment.baseline(pixels, config.task, options))
    curves = write_learning_curves(fit["history"], out, f"{config.model} fine-tuned, "
                                                        f"{config.task}", files)
    run = {
        "task": config.task,
        "labels": list(pipelines.task_labels(config.task)),
        "classifier": "fine-tuned",
        "model": config.model,
        "weights": {k: fit["weights"][k] for k in ("setting", "description", "pretrained")},
        **facts,
        "split": split_info,
        **result,
        "finetuning": {"recipe": fit["recipe"], "history": fit["history"],
                       "best_epoch": fit["best_epoch"], "stopped_early": fit["stopped_early"],
                       "processes": fit["world"], "device": fit["device"],
                       "backbone_weights": fit["backbone"], "learning_curves": curves},
        "timing_s": {"fit": round(train_s, 2), "total": round(time.time() - started, 2)},
        "environment": steps.environment(spark),
        "warnings": notes,
        "model_dir": model_dir,
    }
    return TrainResult.write(run, out, files)
