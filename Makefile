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
PYTEST_ARGS ?=

.PHONY: help java browser venv test-venv demo test bench-ingest clean

help:
	@echo "make demo   - create $(VENV), install covidspark, train LR on the embedded synthetic data"
	@echo "make test   - create/update $(VENV) with test dependencies and run the whole test suite"
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
	$(PIP) install -q -e .
	# Point spark-submit from this venv at this venv's Python (driver and workers).
	$(PY) -m covidspark.cli spark-env --write
	@touch $@

$(VENV)/.stamp-test: $(VENV)/.stamp-runtime
	$(PIP) install -q -e ".[test]"
	@touch $@

venv: java $(VENV)/.stamp-runtime

test-venv: java browser $(VENV)/.stamp-test

demo: venv
	$(VENV)/bin/spark-submit jobs/train_lr.py --task $(TASK) --model $(MODEL) \
	    --weights $(WEIGHTS) --out $(DEMO_OUT)

test: test-venv
	COVIDSPARK_REQUIRE_BROWSER=1 $(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info runs spark-warehouse .pytest_cache
