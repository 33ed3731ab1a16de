"""The ``covidspark`` command: argparse only; the work is in :mod:`covidspark.workflows`.

``--config`` YAML files are read by :mod:`covidspark.workflows.config_files`.

Commands
--------
``covidspark train --classifier lr|rf|dt ...``
    :func:`covidspark.workflows.train`: read, split, featurize once, fit, evaluate
    beside the 32x32 pixel baseline, save model, ``metrics.json``, ``report.md``.
``covidspark compare --models ResNet50,InceptionV3 --classifiers lr,rf,dt ...``
    :func:`covidspark.workflows.compare`: the grid on one split and one feature store.
``covidspark featurize --features STORE ...``
    :func:`covidspark.workflows.featurize`: fill a feature store (only missing images).
``covidspark predict --model-dir RUN/model ...`` / ``covidspark evaluate --model-dir ...``
    :func:`covidspark.workflows.predict` / :func:`covidspark.workflows.evaluate`.
``covidspark serve --model-dir RUN/model``
    The REST service and upload page (:mod:`covidspark.serving.service`).
``covidspark datasets download NAME --to DIR`` / ``datasets describe DIR`` / ``synthetic --to DIR``
``covidspark spark-env --write``: this environment's ``spark-submit`` uses its Python.

Exit status: 0 success; 2 bad input (:class:`covidspark.errors.UserError`: the
message names the file, row or flag); 1 anything else, with its traceback; 130 Ctrl-C.
"""
import argparse
import dataclasses
import logging
import os
import sys
import warnings

logger = logging.getLogger("covidspark")


# ----------------------------------------------------------------- flags


class _Parser(argparse.ArgumentParser):
    """Whole flags only (argparse read ``describe --data`` as ``--dataset``); subparsers too."""

    def __init__(self, *args, allow_abbrev=False, **kwargs):
        super().__init__(*args, allow_abbrev=allow_abbrev, **kwargs)


def _comma_list(text):
    return [v.strip() for v in text.split(",") if v.strip()]


_REMOTE_HELP = ("Spark Connect URL sc://HOST:PORT instead of a master, as spark-submit's --remote "
                "(default: SPARK_REMOTE)")


def _add_input_args(p, command, featurizer=True):
    """Flags of the commands that read images (and, with ``featurizer``, featurize them)."""
    from covidspark.workflows.commands import PATIENTS_USE, REJECTS_LISTED, SEEDED

    source = p.add_mutually_exclusive_group()
    source.add_argument("--data", action="append",
                        help="class-folder tree <DIR>/<label>/*.png|jpg (default: the embedded "
                             "synthetic set); repeat for several sources (source = folder name)")
    source.add_argument("--manifest", help="CSV with path,label[,patient_id,source]")
    p.add_argument("--label-map", default=None, help="folder name -> label, as JSON or "
                   "'ozturk' (Covid-19, No_findings, Pneumonia)")
    p.add_argument("--patients", help="CSV with path,patient_id (or patient_group): "
                   + PATIENTS_USE[command])
    p.add_argument("--lenient", action="store_true",
                   help=f"skip bad files instead of failing; the summary prints the first 20 "
                        f"and {REJECTS_LISTED[command]}")
    seeded = SEEDED[command]
    p.add_argument("--seed", type=int, default=0,
                   help="seed of " + (f"{seeded}; also of " if seeded else "")
                        + "the embedded data set")
    if featurizer:
        _add_featurizer_args(p)
    p.add_argument("--synthetic-per-class", type=int, default=40,
                   help="images per class of the embedded data set when --data is not given")
    p.add_argument("--synthetic-dir", default=None,
                   help="where the embedded data set is written when --data is not given: a "
                        "folder the executors can read (/Volumes/..., dbfs:/..., s3://...); "
                        "required on a cluster (default in local mode: the driver's cache)")
    p.add_argument("--master", default=None,
                   help="Spark master when run with python (default: spark-submit's, or local[*])")
    p.add_argument("--remote", default=None, help=_REMOTE_HELP)
    p.add_argument("--config", default=None,
                   help="YAML file of this command's flags (e.g. 'task: binary', 'data: DIR'); "
                        "flags on the command line override it")


def _add_featurizer_args(p):
    from covidspark.models.engines import ENGINES, PRECISIONS
    from covidspark.models.registry import BACKBONES

    p.add_argument("--model", choices=list(BACKBONES), default="ResNet50", help="backbone network")
    p.add_argument("--weights", default="imagenet",
                   help="'imagenet' (default, downloaded once on the driver), a weights file "
                        "path, or 'random' (seeded, not pretrained: offline tests and demos)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    p.add_argument("--precision", choices=PRECISIONS, default="float32",
                   help="compute precision (auto: bfloat16 on AMX / AVX-512 BF16 CPUs and "
                        "Ampere+ GPUs); features are float32 either way")
    p.add_argument("--engine", choices=ENGINES, default="keras",
                   help="inference engine: keras (TensorFlow), openvino (CPU; pip install "
                        "'covidspark[openvino]'), torch (Keras on PyTorch, CPU or GPU; "
                        "'covidspark[torch]'), auto (torch on GPU tasks, openvino on CPU "
                        "tasks, where installed)")


def _add_experiment_args(p, command):
    """Flags of train, compare and finetune: split, duplicates, selection, threshold, report."""
    from covidspark.workflows.config import CLASS_WEIGHTS, DUPLICATE_POLICIES

    # FinetuneConfig is a TrainConfig, so finetune has these flags, and refuses them.
    classifier_only = " (train and compare; finetune refuses it)" if command == "finetune" else ""

    p.add_argument("--duplicates", choices=DUPLICATE_POLICIES, default="group",
                   help="exact and near-duplicate images: group (default: kept, never split "
                        "apart), drop (later copies), keep (reported only), ignore (not searched)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="per-class test share")
    p.add_argument("--validation-fraction", type=float, default=0.1,
                   help="per-class validation share, taken only when --threshold is chosen "
                        "from data")
    p.add_argument("--threshold", default=None,
                   help="binary task: COVID decision threshold, chosen on validation data "
                        "('recall:0.95', 'f1', 'youden') or fixed ('0.1'); saved in the model")
    p.add_argument("--class-weight", choices=["none", *CLASS_WEIGHTS], default="none",
                   help="balanced: weight rows by inverse class frequency (MLlib weightCol)"
                        + classifier_only)
    p.add_argument("--tune", choices=["none", "cv"], default="none",
                   help="cv: cross-validate the classifier's grid over patient- and "
                        "duplicate-grouped folds, on stored features" + classifier_only)
    p.add_argument("--folds", type=int, default=3, help="folds for --tune cv")
    p.add_argument("--bootstrap", type=int, default=1000,
                   help="bootstrap resamples for the 95 %% intervals (0: none)")
    p.add_argument("--no-baseline", dest="baseline", action="store_false",
                   help="skip the logistic regression on 32x32 pixels (shortcut check)")
    p.add_argument("--train-source", default=None,
                   help="train on images of this source (manifest 'source' column or --data "
                        "folder name) ...")
    p.add_argument("--test-source", default=None, help="... and test on images of this one")
    p.add_argument("--features", default=None,
                   help="feature store folder: reuse stored features, compute only missing images"
                        + classifier_only)


def _add_model_dir_arg(p):
    p.add_argument("--model-dir", default=None, help="saved model folder (<run>/model)")
    # covidspark 0.1 spelled it --model; --model is the backbone everywhere now.
    p.add_argument("--model", dest="legacy_model_dir", default=None, help=argparse.SUPPRESS)


# ----------------------------------------------------------------- commands


def _config(config_class, args):
    """The config dataclass of a command from its parsed flags (same names)."""
    names = {f.name for f in dataclasses.fields(config_class)}
    return config_class(**{k: v for k, v in vars(args).items() if k in names})


def _run(workflow_name, config_name):
    """A command that builds ``config_name`` from the flags, runs the workflow, prints its summary."""

    def command(args):
        from covidspark import workflows

        result = getattr(workflows, workflow_name)(_config(getattr(workflows, config_name), args))
        print("\n" + result.summary())
        return result

    command.__name__ = f"cmd_{workflow_name}"
    return command


def cmd_serve(args):
    """Run the prediction service until interrupted."""
    from covidspark.errors import InputError
    from covidspark.serving.service import serve

    if not args.model_dir:
        raise InputError("--model-dir (the saved model folder, <run>/model) is required")
    serve(args.model_dir, args.host, args.port, args.max_upload_mb, args.max_pixels, args.engine)


def cmd_datasets_describe(args):
    from covidspark.errors import InputError
    from covidspark.workflows.description import DescribeConfig, describe_dataset, format_report

    if (args.path is None) == (args.data is None):
        raise InputError("datasets describe: give the folder once, as PATH or as --data PATH")
    args.path = args.path or args.data
    report = describe_dataset(_config(DescribeConfig, args))
    print(format_report(report, args.json_out))
    return report


def cmd_datasets_download(args):
    from covidspark.data.datasets import download

    print(f"{args.name} is in {os.path.abspath(download(args.name, args.to))}")


def cmd_synthetic(args):
    from covidspark.data.synthetic import synthetic

    path = synthetic(args.to, n_per_class=args.per_class, seed=args.seed, overwrite=True)
    print(f"wrote {3 * args.per_class} synthetic images to {os.path.abspath(path)}")


def cmd_spark_env(args):
    from covidspark.runtime.session import find_spark_home_script, write_spark_env

    if args.write:
        print(f"spark-submit of this environment now defaults to {sys.executable} "
              f"({write_spark_env()})")
    else:
        print(find_spark_home_script() or "no pip-installed spark-submit next to this Python")


def build_parser():
    """The ``covidspark`` argument parser (every command and flag)."""
    from covidspark.data.datasets import KNOWN_DATASETS
    from covidspark.ml.pipelines import CLASSIFIERS, TASKS
    from covidspark.models.registry import BACKBONES
    from covidspark.serving.service import DEFAULT_MAX_UPLOAD_MB

    parser = _Parser(
        prog="covidspark",
        description="Chest X-ray classification on Spark: ingest, featurize, train, evaluate.")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, with Spark's and TensorFlow's own logs")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="featurize, split, fit and evaluate one classifier",
                       description="Train a classifier on deep features of chest X-rays and "
                                   "report per-class precision, recall and F1.")
    p.add_argument("--classifier", choices=CLASSIFIERS, default="lr",
                   help="lr: logistic regression, rf: random forest, dt: decision tree")
    p.add_argument("--task", choices=list(TASKS), default="binary",
                   help="binary: covid vs normal (pneumonia excluded); 3class: all three")
    _add_input_args(p, "train")
    _add_experiment_args(p, "train")
    p.add_argument("--out", default="runs/latest",
                   help="output folder: model/, metrics.json, report.md, figures")
    p.set_defaults(func=_run("train", "TrainConfig"))

    from covidspark.finetune.recipe import add_recipe_arguments

    p = sub.add_parser("finetune", help="fine-tune the network itself across the cluster",
                       description="Fine-tune a backbone and a new head (Keras on PyTorch under "
                                   "TorchDistributor), evaluated and saved like train.")
    p.add_argument("--task", choices=list(TASKS), default="binary",
                   help="binary: covid vs normal (pneumonia excluded); 3class: all three")
    _add_input_args(p, "finetune")
    _add_experiment_args(p, "finetune")
    add_recipe_arguments(p)
    p.add_argument("--out", default="runs/finetune",
                   help="output folder: model/, checkpoints/, metrics.json, report.md, figures")
    p.set_defaults(func=_run("finetune", "FinetuneConfig"))

    p = sub.add_parser("compare", help="train the grid models x classifiers x tasks",
                       description="Featurize each backbone once, fit every classifier for "
                                   "every task on the same split, and write one comparison "
                                   "report (the studies' result tables).")
    _add_input_args(p, "compare")
    _add_experiment_args(p, "compare")
    p.add_argument("--models", type=_comma_list, default=["ResNet50", "InceptionV3"],
                   help=f"comma-separated backbones ({', '.join(BACKBONES)}; "
                        f"default ResNet50,InceptionV3)")
    p.add_argument("--classifiers", type=_comma_list, default=list(CLASSIFIERS),
                   help="comma-separated (default lr,rf,dt)")
    p.add_argument("--tasks", type=_comma_list, default=list(TASKS),
                   help="comma-separated (default binary,3class)")
    p.add_argument("--out", default="runs/compare",
                   help="output folder: comparison.md/json and <task>/<model>-<classifier>/")
    p.set_defaults(func=_run("compare", "CompareConfig"))

    p = sub.add_parser("predict", help="predict with a saved model; write one row per image",
                       description="Load a PipelineModel saved by train or compare and predict "
                                   "every image under --images (any folder layout) or of "
                                   "--data / --manifest.")
    _add_model_dir_arg(p)
    p.add_argument("--images", help="a folder or glob of images, any layout, or one image file")
    _add_input_args(p, "predict", featurizer=False)
    p.add_argument("--out", default=None,
                   help="output folder (Parquet) or file ending in .csv (required)")
    p.add_argument("--heatmaps", default=None, metavar="DIR",
                   help="also write an overlay PNG per image into DIR (Grad-CAM for LR models, "
                        "occlusion for RF/DT), computed on the executors; the predictions get "
                        "a 'heatmap' column with its path")
    p.set_defaults(func=_run("predict", "PredictConfig"))

    p = sub.add_parser("evaluate", help="evaluate a saved model on labelled images",
                       description="Predict labelled images with a saved model and write "
                                   "metrics.json, report.md and figures (e.g. a model trained "
                                   "on one source, tested on another).")
    _add_model_dir_arg(p)
    _add_input_args(p, "evaluate", featurizer=False)
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (0: none)")
    p.add_argument("--out", default=None, help="report folder (required)")
    p.add_argument("--seen", choices=["report", "drop"], default="report",
                   help="copies of the model's own training images (sha256, or perceptual "
                        "hash within 2 bits): report names them; drop evaluates without them")
    p.set_defaults(func=_run("evaluate_model", "EvaluateConfig"))

    p = sub.add_parser("serve", help="serve a saved model: REST API and upload page",
                       description="Load a saved model once and serve POST /predict, POST "
                                   "/explain, GET /health and an upload page at / (no Spark "
                                   "needed). Research tool, not a diagnostic device.")
    _add_model_dir_arg(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                   help="largest accepted upload; bigger ones get 413 before being read")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="largest accepted image in pixels (decompression bombs get 422)")
    p.add_argument("--engine", choices=["keras", "openvino", "torch", "auto"], default=None,
                   help="override the saved featurizer's inference engine")
    p.add_argument("--config", default=None, help="YAML file of this command's flags")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("featurize", help="compute deep features into a feature store",
                       description="Featurize images into a Parquet feature store keyed by "
                                   "image and featurizer; rerunning computes only images the "
                                   "store lacks.")
    _add_input_args(p, "featurize")
    p.add_argument("--features", default=None, help="feature store folder (required)")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="images per committed chunk (default 2000): a killed job keeps the "
                        "chunks it finished and its rerun computes only the rest")
    p.set_defaults(func=_run("featurize", "FeaturizeConfig"))

    p = sub.add_parser("datasets", help="public data sets: download, describe")
    datasets_sub = p.add_subparsers(dest="datasets_command", required=True)
    d = datasets_sub.add_parser("download", help="fetch a public data set (git) on a networked "
                                                 "machine")
    d.add_argument("name", choices=list(KNOWN_DATASETS))
    d.add_argument("--to", required=True, help="destination folder")
    d.set_defaults(func=cmd_datasets_download)
    d = datasets_sub.add_parser("describe", help="counts, sizes, bit depths, modes, duplicates")
    d.add_argument("path", nargs="?", help="class-folder tree, or the root of a known data set")
    d.add_argument("--data", metavar="PATH", help="PATH, spelt as train spells it")
    d.add_argument("--dataset", choices=list(KNOWN_DATASETS),
                   help="read PATH with this data set's layout and label mapping")
    d.add_argument("--label-map", default=None, help="as for train")
    d.add_argument("--max-distance", type=int, default=None,
                   help="perceptual-hash bits for near duplicates (default 2)")
    d.add_argument("--json", dest="json_out", help="also write the report as JSON here")
    d.add_argument("--master", default=None, help="Spark master when run with python")
    d.add_argument("--remote", default=None, help=_REMOTE_HELP)
    d.set_defaults(func=cmd_datasets_describe)

    p = sub.add_parser("synthetic", help="write the embedded synthetic data set")
    p.add_argument("--to", required=True, help="output folder")
    p.add_argument("--per-class", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_synthetic)
    p = sub.add_parser("spark-env", help="point this environment's spark-submit at its Python")
    p.add_argument("--write", action="store_true",
                   help="make bin/spark-submit default PYSPARK_PYTHON to this Python")
    p.set_defaults(func=cmd_spark_env)
    return parser


# ----------------------------------------------------------------- config files


def subparser_of(parser, command):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[command]
    raise KeyError(command)


def parse_args(argv=None):
    """Parse the command line, with a ``--config`` YAML file's values as defaults."""
    from covidspark.workflows.config_files import load_config

    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "config", None):
        subparser = subparser_of(parser, args.command)
        defaults = load_config(args.config, subparser)
        # argparse would append a repeatable flag's values to the file's list: a flag
        # given on the command line replaces the file's value instead.
        for action in subparser._actions:
            if isinstance(action, argparse._AppendAction) and getattr(args, action.dest) is not None:
                defaults.pop(action.dest, None)
        subparser.set_defaults(**defaults)
        args = parser.parse_args(argv)
    if getattr(args, "legacy_model_dir", None):
        warnings.warn(f"covidspark {args.command}: --model for a saved model folder is "
                      f"deprecated; use --model-dir (--model is the backbone everywhere)",
                      DeprecationWarning, stacklevel=2)
        logger.warning("--model %s: use --model-dir for a saved model folder (--model is the "
                       "backbone everywhere); accepted for now", args.legacy_model_dir)
        if not args.model_dir:
            args.model_dir = args.legacy_model_dir
    return args


# ----------------------------------------------------------------- entry point


def main(argv=None):
    """Entry point of the ``covidspark`` command and of ``jobs/*.py``; returns the exit status.

    0: success. 2: a :class:`~covidspark.errors.UserError` (bad input or a missing
    resource; also a Connect server lost mid-command, a standalone master that did not
    take the application), in one message without a traceback. 1: any other exception,
    with its traceback: a bug, not the user's mistake. 130: interrupted (Ctrl-C; also
    an error py4j raised while it handled Ctrl-C), in one line.
    """
    from covidspark.errors import UserError, raised_by_interrupt
    from covidspark.runtime.logs import configure_logging
    from covidspark.workflows.commands import after_interrupt

    words = sys.argv[1:] if argv is None else argv
    configure_logging("-v" in words or "--verbose" in words)
    args = None

    def left():  # "; <what the command leaves>", or nothing where it names no output
        leaves = args and after_interrupt(args.command, vars(args))
        return f"; {leaves}" if leaves else ""
    try:
        args = parse_args(argv)
        args.func(args)
    except UserError as exc:
        logger.error("%s", exc.command_line_message())
        return 2
    except (KeyboardInterrupt, Exception) as exc:
        from covidspark.runtime.remote import connection_lost
        from covidspark.runtime.masters import stopped_context_error

        if raised_by_interrupt(exc):
            # pyspark's handler has cancelled the Spark jobs; a traceback says nothing more.
            logger.error("interrupted%s", left())
            return 130
        lost = connection_lost(exc) or stopped_context_error()  # the cluster's, not a bug
        if lost is None:
            logger.exception("covidspark failed (a bug; please report it with this "
                             "traceback): %s", exc)
            return 1
        logger.error("%s%s", lost, left())
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
