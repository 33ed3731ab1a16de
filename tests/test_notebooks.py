"""Every notebook's code runs, in local mode, against the current library.

Databricks source notebooks are Python files whose magic cells are comments, so
running the file runs exactly its code cells. Only ``dbutils.widgets`` and
``display`` are stood in for; ``spark`` is the test session.
"""
import glob
import os

import pytest

from conftest import REPO_ROOT

NOTEBOOKS = sorted(glob.glob(os.path.join(REPO_ROOT, "notebooks", "*.py")))


class Widgets:
    def __init__(self, values):
        self.values = dict(values)

    def text(self, name, default, label=None):
        self.values.setdefault(name, default)

    def dropdown(self, name, default, choices, label=None):
        assert default in choices
        self.values.setdefault(name, default)

    def get(self, name):
        return self.values[name]


class DBUtils:
    def __init__(self, values):
        self.widgets = Widgets(values)


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_in_local_mode(path, spark, fixture_dir):
    with open(path) as f:
        source = f.read()
    assert source.startswith("# Databricks notebook source")
    shown = []
    namespace = {
        "spark": spark,
        "dbutils": DBUtils({"data": fixture_dir, "weights": "random", "task": "3class"}),
        "display": lambda df: shown.append(df.count()),
    }
    exec(compile(source, path, "exec"), namespace)
    assert shown and all(n > 0 for n in shown)
    if "comparison" in namespace:
        rows = namespace["comparison"].collect()
        assert {(r.task, r.classifier) for r in rows} == {
            (t, c) for t in ("binary", "3class") for c in ("lr", "rf", "dt")}
        for r in rows:
            assert r.accuracy_low <= r.accuracy <= r.accuracy_high
    if "results" in namespace:
        assert set(namespace["results"]) == {"lr", "rf", "dt"}
        for metrics in namespace["results"].values():
            assert metrics["n"] == 3 and 0.0 <= metrics["accuracy"] <= 1.0
