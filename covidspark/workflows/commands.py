"""What each command does with the flags it shares, in the words its help and messages use.

The commands share their input flags (``--lenient``, ``--seed``, ``--patients``)
but not what they do with them: predict writes no metrics.json, only the
splitting commands split by patient, and after Ctrl-C featurize and finetune can
go on where they stopped while the others start over. The command line's help
and its messages read these tables, so that each says what that command does.
"""

#: Where each command lists every file --lenient skipped (its summary prints 20).
REJECTS_LISTED = {**dict.fromkeys(("train", "finetune", "evaluate"),
                                   "metrics.json lists them all"),
                  "compare": "comparison.json lists them all",
                  "predict": "all go to <out>.rejected.csv, or _rejected.csv in a Parquet --out",
                  "featurize": "all go to a CSV in the store, <store>/<key>/rejected/"}

#: What --seed seeds, by command.
SEEDED = {**dict.fromkeys(("train", "compare"),
                          "the split, random weights, RF/DT and the bootstrap"),
          "finetune": "the split, random weights, the head, sampling, augmentation and the "
                      "bootstrap",
          "evaluate": "the bootstrap", "predict": None, "featurize": "random weights"}

#: What --patients does, by command: the splitting commands keep a patient on one side;
#: every command with metrics draws a patient's test images together in its bootstrap.
PATIENTS_USE = {
    **dict.fromkeys(("train", "compare", "finetune"),
                    "images of one patient stay on one side of the split, and the bootstrap "
                    "intervals draw them together"),
    "evaluate": "the bootstrap intervals draw a patient's images together",
    "predict": "adds a patient_id column to the predictions",
    "featurize": "not used: the store keeps features by image content (give it to train)"}

#: What is left after Ctrl-C, by command (formatted with its flags); others: the default.
AFTER_INTERRUPT = {
    "featurize": "the feature store {features} keeps every chunk it committed; the same "
                 "command computes only the rest",
    "finetune": "the same command resumes from the last checkpoint in {out}/checkpoints",
}
AFTER_INTERRUPT_DEFAULT = "--out {out} may hold a partial run"


def after_interrupt(command, flags):
    """What a command interrupted by Ctrl-C leaves, in words; None where it names no output."""
    text = AFTER_INTERRUPT.get(command, AFTER_INTERRUPT_DEFAULT)
    try:
        return text.format(**{k: v for k, v in flags.items() if v is not None})
    except KeyError:  # a command without that flag (serve, datasets), or it was not given
        return None
