# covidspark: `make demo` and `make test` do all the set-up on a fresh machine
# (Python 3.9+, Debian/Ubuntu for the Java step). See README.md.

PYTHON      ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip
# Weights for the demo: "random" works offline; use WEIGHTS=imagenet on a machine with a network.
WEIGHTS     ?= random
MODEL       ?= ResNet50
TASK        ?= 3class
DEMO_OUT    ?= runs/demo
# PyTorch for the torch engine's tests: the CPU build (about 200 MB). A plain
# `pip install 'covidspark[torch]'` takes PyPI's Linux wheel, which carries CUDA (a few GB).
TORCH       ?= torch==2.13.0
# Two pytest workers, a test file each at a time (module fixtures such as a standalone
# cluster are built once): many tests wait on JVMs and spark-submit, not on the cores.
# Files are handed out longest first (LONGEST_FILES_FIRST in tests/conftest.py), not
# by pytest-xdist's own order (most tests first), which left the longest files to the end.
PYTEST_WORKERS ?= 2
# How both environments run pytest (the slowest 40 tests are listed: where CI's minutes go).
PYTEST_RUN  := -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=40
# The whole suite, the Spark Connect pass included (tests/test_connect.py: the core
# tests again against a local Connect server, in one test of 9-15 minutes in a full run).
PYTEST_ARGS ?= $(PYTEST_RUN)
# Spark 3.5 compatibility: a second environment with what Databricks 16.4 LTS and
# EMR 7.x run (pyspark 3.5, pandas 1.5.3, numpy 1.x, pyarrow 15) and the whole suite
# again (no test needs Spark 4). COMPAT_TESTS narrows it to paths, COMPAT_MARKERS to markers.
COMPAT_VENV ?= .venv-compat
COMPAT_PY   := $(COMPAT_VENV)/bin/python
COMPAT_TESTS ?=
COMPAT_MARKERS ?= not connect
# CI's Spark 3.5 pass leaves out the tests that start spark-submit, a second Python or
# a standalone cluster, and those marked same_spark_path (a Spark path another test
# takes, again for another backbone, engine or entry point): with them the two passes
# take about 55 minutes on 2 cores. It also leaves out spark35_covered tests: core tests
# the Connect pass reruns, whose Spark 3.5 path others in the pass take (CI took 2,740 s
# here in session 43 with them, over its 45 minutes).
CI_COMPAT_MARKERS := not connect and not subprocess and not cluster and not same_spark_path \
                     and not spark35_covered

.PHONY: help java browser venv test-venv demo test test-connect test-compat test-compat-ci bench-ingest clean

help:
	@echo "make demo   - create $(VENV), install covidspark, train LR on the embedded synthetic data"
	@echo "make test   - create/update $(VENV) with test dependencies and run the whole test suite"
	@echo "make test-compat - the whole suite on pyspark 3.5 + pandas 1.5.3 in $(COMPAT_VENV)"
	@echo "make test-compat-ci - what CI runs of it (no subprocess or cluster tests)"
	@echo "make clean  - remove $(VENV), build outputs and runs/"

java:
	@bash scripts/ensure_java.sh

# Debian's Chromium for the browser test of the upload page.
browser:
	@bash scripts/ensure_chromium.sh

# The stamp files make re-runs cheap; they are rebuilt when setup.py changes.
$(VENV)/.stamp-runtime: setup.py pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q -e ".[spark]"
	# Point spark-submit from this venv at this venv's Python (driver and workers).
	$(PY) -m covidspark.cli spark-env --write
	@touch $@

$(VENV)/.stamp-test: $(VENV)/.stamp-runtime
	$(PIP) install -q -e ".[spark,test,torch,connect]" "$(TORCH)"
	@touch $@

venv: java $(VENV)/.stamp-runtime

test-venv: java browser $(VENV)/.stamp-test

demo: venv
	$(VENV)/bin/spark-submit jobs/train_lr.py --task $(TASK) --model $(MODEL) \
	    --weights $(WEIGHTS) --out $(DEMO_OUT)

test: test-venv
	COVIDSPARK_REQUIRE_BROWSER=1 $(PY) -m pytest $(PYTEST_ARGS)

# Only the Spark Connect pass (`make test` runs it too).
test-connect: test-venv
	$(PY) -m pytest -m connect tests/test_connect.py

$(COMPAT_VENV)/.stamp: setup.py pyproject.toml Makefile
	@test -x $(COMPAT_PY) || $(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_PY) -m pip install -q --upgrade pip setuptools wheel
	$(COMPAT_PY) -m pip install -q "pyspark==3.5.*" "pandas==1.5.3" "numpy<2" "pyarrow<16" \
	    "$(TORCH)" -e ".[test,torch]"
	$(COMPAT_PY) -m covidspark.cli spark-env --write
	@touch $@

test-compat: java browser $(COMPAT_VENV)/.stamp
	$(COMPAT_PY) -c "import pyspark, pandas; print('pyspark', pyspark.__version__, 'pandas', pandas.__version__)"
	COVIDSPARK_REQUIRE_BROWSER=1 $(COMPAT_PY) -m pytest -m "$(COMPAT_MARKERS)" $(PYTEST_RUN) \
	    $(COMPAT_TESTS)

# What CI runs on Spark 3.5 (see CI_COMPAT_MARKERS).
test-compat-ci:
	$(MAKE) test-compat COMPAT_MARKERS="$(CI_COMPAT_MARKERS)"

clean:
	rm -rf $(VENV) $(COMPAT_VENV) build dist *.egg-info runs spark-warehouse .pytest_cache
