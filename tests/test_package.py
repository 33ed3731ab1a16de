"""The package surface: a cheap import, every public name of 0.1 still there, old paths kept."""
import importlib
import subprocess
import sys
import warnings

import pytest

import covidspark

# covidspark 0.1's __all__: every name must still resolve after the move to subpackages.
PUBLIC_0_1 = [
    "BACKBONES", "DeepImageFeaturizer", "FeatureStore", "IngestError", "IngestResult",
    "PixelFeaturizer", "TrainOptions", "apply_threshold", "build_pipeline", "choose_threshold",
    "cross_validate", "decode_image", "describe", "evaluate", "fit_and_evaluate", "get_spark",
    "grouped_split", "merge", "prepare_task", "read_dataset", "read_images", "resolve_duplicates",
    "resolve_weights", "split_images", "stratified_split", "synthetic", "write_report",
]


def test_import_loads_no_engine_and_no_spark():
    code = ("import sys, covidspark; covidspark.__version__; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'torch', 'openvino', 'pyspark') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_public_name_is_defined_where_the_table_says():
    assert set(PUBLIC_0_1) <= set(covidspark.__all__)
    for name, module_name in covidspark._PUBLIC.items():
        module = importlib.import_module(module_name)
        value = getattr(covidspark, name)
        assert value is getattr(module, name), name
        # Defined in that module, not re-exported from another one.
        if callable(value) and hasattr(value, "__module__"):
            assert value.__module__ == module_name, (name, value.__module__)


def test_unknown_attribute_raises():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        covidspark.nope


@pytest.mark.parametrize("old", sorted(covidspark._compat.MOVED_MODULES))
def test_old_module_paths_work_with_a_deprecation_warning(old):
    code = (f"import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            f"try:\n    import {old}\nexcept DeprecationWarning as w:\n    print('warned', w)\n"
            f"else:\n    print('silent')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    new = covidspark._compat.MOVED_MODULES[old][0]
    assert out.stdout.startswith("warned") and new in out.stdout, out.stdout
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        alias = importlib.import_module(old)
    for target in covidspark._compat.MOVED_MODULES[old]:
        module = importlib.import_module(target)
        for name, value in vars(module).items():
            if not name.startswith("__") and getattr(module, "__name__", None) == target \
                    and getattr(value, "__module__", None) == target:
                assert getattr(alias, name) is value, (old, name)


def test_names_users_imported_from_old_paths_are_the_new_objects():
    from covidspark.ml.featurizer import DeepImageFeaturizer
    from covidspark.models.weights import resolve_weights

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from covidspark.datasets import OZTURK_LABEL_MAP, synthetic  # noqa: F401
        from covidspark.experiment import TrainOptions, split_images  # noqa: F401
        from covidspark.featurizer import DeepImageFeaturizer as old_featurizer
        from covidspark.images import decode_image, read_images  # noqa: F401
        from covidspark.models import default_cache_dir  # noqa: F401
        from covidspark.models import resolve_weights as old_resolve
    assert old_featurizer is DeepImageFeaturizer and old_resolve is resolve_weights
    assert synthetic is covidspark.synthetic and split_images is covidspark.split_images


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "covidspark.cli", "train", "--help"],
                         capture_output=True, text=True, check=True)
    for flag in ("--data", "--task", "--model", "--weights", "--out", "--classifier",
                 "--threshold", "--tune", "--class-weight", "--train-source"):
        assert flag in out.stdout
    for command in ("predict", "evaluate", "serve"):
        out = subprocess.run([sys.executable, "-m", "covidspark.cli", command, "--help"],
                             capture_output=True, text=True, check=True)
        assert "--model-dir" in out.stdout


def test_pyspark_is_an_extra_so_a_cluster_keeps_its_own_spark():
    """A plain install must not pull a second Spark beside Databricks' or EMR's own."""
    from importlib.metadata import requires

    spark = [r for r in requires("covidspark") if r.replace(" ", "").startswith("pyspark")]
    assert spark, "pyspark is not declared at all"
    # Only under extras: `spark` (classic) and `connect` (the Spark Connect client).
    assert all("extra ==" in r for r in spark), spark
    assert any("extra == \"spark\"" in r.replace("'", "\"") for r in spark), spark
