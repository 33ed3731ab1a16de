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


class Library:
    restarts = 0

    def restartPython(self):
        self.restarts += 1


class DBUtils:
    def __init__(self, values):
        self.widgets = Widgets(values)
        self.library = Library()


def test_there_are_notebooks():
    assert NOTEBOOKS


def _display(shown):
    def display(frame):
        shown.append(len(frame) if hasattr(frame, "iloc") else frame.count())
    return display


# The notebooks call compare(), whose Spark path test_comparison.py takes too.
@pytest.mark.same_spark_path
@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_in_local_mode_and_reports_what_its_models_predict(path, spark, fixture_dir,
                                                                        tmp_path):
    """The notebook's one call runs; its reported accuracy is what scikit-learn computes from
    the saved models' own predictions of the test images."""
    from pyspark.ml import PipelineModel
    from sklearn.metrics import accuracy_score

    from covidspark.workflows import steps

    with open(path) as f:
        source = f.read()
    assert source.startswith("# Databricks notebook source")
    # Notebooks hold widgets, one call and display: no functions, no loops.
    assert "\ndef " not in source and "\nfor " not in source and "\nclass " not in source
    shown = []
    wheel = "/Volumes/main/xray/artifacts/covidspark-0.1.0-py3-none-any.whl"
    # evaluate_and_compare's backbones: SmallCNN, not its default ResNet50, whose
    # compare() test_comparison.py runs (the notebook's own cost was ~3 minutes of CI).
    dbutils = DBUtils({"data": fixture_dir, "weights": "random", "task": "3class",
                       "models": "SmallCNN", "out": str(tmp_path / "out"), "wheel": wheel})
    namespace = {"spark": spark, "dbutils": dbutils, "display": _display(shown)}
    exec(compile(source, path, "exec"), namespace)
    # The wheel from the widget is what %pip installs (the notebook's own install line).
    assert "# MAGIC %pip install -r /tmp/covidspark-notebook-requirements.txt" in source
    with open("/tmp/covidspark-notebook-requirements.txt") as f:
        assert f.read().split("[")[0].strip() == wheel
    assert dbutils.library.restarts == 1
    result = namespace["result"]
    table = result.to_pandas()
    assert shown == [len(table)] and len(table) > 0
    assert set(table.classifier) == {"lr", "rf", "dt"}
    # The same split the workflow made (seeded), scored by scikit-learn on the saved models.
    config = result.config
    images, _, with_content = steps.prepare_images(spark, config, "3class", [],
                                                   config.duplicates)
    split, _ = steps.split_for(images, config, config.fit_options())
    test = with_content(split.filter("split = 'test'"))
    for row in table.itertuples():
        model = PipelineModel.load(result.model_dir(row.task, row.model, row.classifier))
        labels = [r.label for r in test.select("label").collect()]
        rows = model.transform(test if row.task == "3class" else
                               test.filter("label != 'pneumonia'")).select(
            "label", "predicted_label").collect()
        truth = [r.label for r in rows]
        assert len(truth) == (len(labels) if row.task == "3class" else
                              sum(label != "pneumonia" for label in labels))
        expected = accuracy_score(truth, [r.predicted_label for r in rows])
        assert row.accuracy == pytest.approx(expected), (row.task, row.classifier)
        assert row.accuracy_low <= row.accuracy <= row.accuracy_high
