"""The layout holds: imports point one way along the stages, no private name crosses a module,
no module is long, test and benchmark helpers stay out of the package."""
import ast
import os

import pytest

from conftest import REPO_ROOT

PACKAGE = os.path.join(REPO_ROOT, "covidspark")
# Stages, lowest first: a module may import its own stage and the stages before it.
LAYERS = ["errors", "_version", "runtime", "data", "models", "evaluation", "ml", "finetune",
          "serving", "workflows", "cli"]
MAX_LINES = 450


def _modules():
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                rel = os.path.relpath(path, REPO_ROOT)[:-3].replace(os.sep, ".")
                yield rel.removesuffix(".__init__"), path


def _layer(module):
    parts = module.split(".")
    if len(parts) < 2:
        return None  # covidspark/__init__.py: the lazy public table
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else None


def _imports(path):
    """Every covidspark import in a file (module level and inside functions):
    ``(line, imported module, [names])``."""
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("covidspark"):
            yield node.lineno, node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("covidspark"):
                    yield node.lineno, alias.name, []


MODULES = sorted(_modules())


def test_every_stage_exists_with_a_docstring():
    for stage in ["runtime", "data", "models", "evaluation", "ml", "finetune", "serving",
                  "workflows"]:
        init = os.path.join(PACKAGE, stage, "__init__.py")
        doc = ast.get_docstring(ast.parse(open(init).read()))
        assert doc and len(doc.splitlines()[0]) > 20, stage


@pytest.mark.parametrize("module,path", MODULES, ids=[m for m, _ in MODULES])
def test_imports_point_down_the_stages(module, path):
    own = _layer(module)
    if own is None or module == "covidspark._compat":
        return
    for line, imported, names in _imports(path):
        targets = [imported] if imported != "covidspark" else [f"covidspark.{n}" for n in names]
        for target in targets:
            layer = _layer(target)
            if layer is not None:
                assert layer <= own, f"{path}:{line}: {module} (stage {LAYERS[own]}) imports " \
                                     f"{target} (stage {LAYERS[layer]})"


@pytest.mark.parametrize("module,path", MODULES, ids=[m for m, _ in MODULES])
def test_no_private_name_crosses_a_module(module, path):
    for line, imported, names in _imports(path):
        private = [n for n in names if n.startswith("_") and n != "__version__"
                   and not (imported == "covidspark" and n == "_compat")]
        assert not private, f"{path}:{line}: imports {private} from {imported}"


@pytest.mark.parametrize("module,path", MODULES, ids=[m for m, _ in MODULES])
def test_modules_stay_small(module, path):
    with open(path) as f:
        assert sum(1 for _ in f) <= MAX_LINES, module


def test_no_test_or_benchmark_helper_in_the_package():
    names = {m.rsplit(".", 1)[-1] for m, _ in MODULES}
    assert not {n for n in names if "client" in n or n.startswith("test")}


def test_the_longest_first_test_files_exist():
    # A renamed file would silently fall back to pytest-xdist's order (conftest.py).
    from conftest import LONGEST_FILES_FIRST

    missing = [p for p in LONGEST_FILES_FIRST if not os.path.isfile(os.path.join(REPO_ROOT, p))]
    assert not missing, missing
