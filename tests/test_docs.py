"""The documentation's runnable snippets run (docs/migrating-from-sparkdl.md's "after" half)."""
import os
import re

import numpy as np
import pytest

from conftest import REPO_ROOT


def _after_snippet():
    with open(os.path.join(REPO_ROOT, "docs", "migrating-from-sparkdl.md")) as f:
        text = f.read()
    return re.search(r"<!-- after-snippet -->\n```python\n(.*?)```", text, re.S).group(1)


# Its Spark path (a pipeline with the featurizer fit, saved, loaded and applied) is the one
# test_prediction.py's saved model takes with ResNet50: CI's Spark 3.5 pass leaves this out.
@pytest.mark.same_spark_path
def test_the_sparkdl_migration_after_snippet_runs_and_its_saved_model_predicts_the_same(
        spark, fixture_dir, tmp_path):
    code = (_after_snippet()
            .replace('"/dbfs/xrays"', repr(fixture_dir))
            .replace('"dbfs:/models/xray-lr"', repr(str(tmp_path / "xray-lr")))
            .replace('weights="imagenet"', 'weights="random"'))
    assert '"/dbfs' not in code and '"dbfs:' not in code and 'weights="random"' in code
    namespace = {"spark": spark}
    exec(compile(code, "migrating-from-sparkdl.md", "exec"), namespace)
    predictions = namespace["predictions"].select("path", "probability").collect()
    test = namespace["test"]
    assert len(predictions) == test.count() > 0
    # The reloaded model predicts what the fitted one does (sparkdl could not save it).
    fitted = {r.path: r.probability.toArray()
              for r in namespace["model"].transform(test).select("path", "probability").collect()}
    for r in predictions:
        np.testing.assert_allclose(r.probability.toArray(), fitted[r.path], atol=1e-6)
    assert namespace["featurizer"].getModelName() == "InceptionV3"
