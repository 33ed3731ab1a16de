"""``--config`` files: a command's flags as YAML, read as that command's defaults.

A key is a flag without its dashes (``batch-size: 16``, ``data: [DIR1, DIR2]``),
so a file says what the command line says; flags given on the command line win
(:func:`covidspark.cli.parse_args`).
"""
import argparse
import os

from covidspark.errors import InputError, InputNotFoundError


def load_config(path, subparser):
    """A ``--config`` YAML file as ``{dest: value}`` defaults for a command's ``subparser``.

    Keys are the command's flags without dashes (``label-map`` or ``label_map``;
    ``no-baseline: true``, or its field, ``baseline: false``); an unknown key is
    an error that lists the flags. Lists become comma-separated values, except
    for repeatable flags (``data``).

    Raises
    ------
    covidspark.errors.InputError
        The file is missing, not YAML, not a mapping, or has unknown keys.
    """
    import yaml

    if not os.path.isfile(path):
        raise InputNotFoundError(f"--config {path}: no such file")
    try:
        with open(path) as f:
            config = yaml.safe_load(f) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"--config {path}: not valid YAML: {exc}") from None
    if not isinstance(config, dict):
        raise InputError(f"{path}: expected a mapping of flag: value, got "
                         f"{type(config).__name__}")
    # key -> (action, whether the key says the opposite of its field: no-baseline)
    keys, flags = {}, set()
    for action in subparser._actions:
        if action.dest in ("help", "config", "legacy_model_dir"):
            continue
        keys[action.dest.replace("_", "-")] = (action, False)
        for option in action.option_strings:
            flags.add(option.lstrip("-"))
            keys[option.lstrip("-")] = (action, isinstance(action, argparse._StoreFalseAction))
        if not action.option_strings:  # a positional: its name
            flags.add(action.dest)
    defaults, unknown = {}, []
    for key, value in config.items():
        action, opposite = keys.get(str(key).lstrip("-").replace("_", "-"), (None, False))
        if action is None:
            unknown.append(str(key))
            continue
        if opposite:
            if not isinstance(value, bool):
                raise InputError(f"{path}: {key} takes true or false, not {value!r}")
            value = not value
        if isinstance(value, list) and not isinstance(action, argparse._AppendAction):
            value = ",".join(str(v) for v in value)
        elif isinstance(action, argparse._AppendAction) and not isinstance(value, list):
            value = [value]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and action.type is None:
            value = str(value)
        defaults[action.dest] = value
    if unknown:
        raise InputError(f"{path}: unknown key(s) {unknown}; valid: {', '.join(sorted(flags))}")
    return defaults
