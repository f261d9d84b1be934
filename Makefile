# PA-Seg: `make test` installs everything into .venv (once) and runs the test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NUMPY_PIN := $(shell grep -E '^numpy==' requirements.txt)
GEODISTK_PIN := $(shell grep -E '^GeodisTK==' requirements.txt)
# numpy 2 removed NPY_IN_ARRAY, which GeodisTK 0.1.7 still uses.
GEODISTK_FLAGS := -DNPY_IN_ARRAY=NPY_ARRAY_IN_ARRAY

.PHONY: install lint test test-quick demo clean-venv

# nnU-Net finds PA-Seg's trainers by name (nnUNetv2_train/nnUNetv2_predict -tr nnUNetTrainerPASeg): one small
# module written into nnunetv2/training/nnUNetTrainer/ (experiments/nnunet_trainers/install_paseg_trainers.py)
install: $(STAMP)
	$(PY) experiments/nnunet_trainers/install_paseg_trainers.py

$(STAMP): pyproject.toml requirements.txt requirements-nnunet.txt requirements-data.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet "$(NUMPY_PIN)"
	CFLAGS="$(GEODISTK_FLAGS)" CPPFLAGS="$(GEODISTK_FLAGS)" \
		$(PY) -m pip install --quiet --no-build-isolation "$(GEODISTK_PIN)"
	$(PY) -m pip install --quiet -r requirements.txt
	# the project itself, editable: `networks` and `utilities` importable from every script and test
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	# nnU-Net v2 (the baseline, and its dataset check); --no-deps keeps the pinned torch (see requirements-nnunet.txt)
	$(PY) -m pip install --quiet --no-deps -r requirements-nnunet.txt
	# the MNI template of the dataset family (data files only, see requirements-data.txt)
	$(PY) -m pip install --quiet --no-deps -r requirements-data.txt
	touch $(STAMP)

# ruff (pinned in requirements.txt, configured in pyproject.toml): pyflakes, pycodestyle, bugbear, import order
lint: install
	$(PY) -m ruff check .
	$(PY) -m mypy

# -rs: every skipped test with its reason (tests/integration/test_documented_commands.py: the documented commands not run);
# -n auto: one worker per core (pytest-xdist); --dist loadgroup --no-loadscope-reorder: the tests of a module
# that builds a module-scoped fixture (a tiny trained run) stay on one worker, so it is built once; every
# other test goes to whichever worker is free, the slow ones first (tests/conftest.py). The torchrun tests
# start two ranks per run and run afterwards on their own, not beside another worker: on two cores, four
# busy processes once left a finished rank waiting until the launch timeout.
TORCHRUN_TESTS := tests/utilities/core/test_distributed.py
XDIST := -n auto --dist loadgroup --no-loadscope-reorder
# mypy runs inside the suite (tests/utilities/test_types.py), beside the other tests on the second core.
test: install
	$(PY) -m ruff check .
	$(PY) -m pytest -q -rs $(XDIST) --ignore=$(TORCHRUN_TESTS) tests
	$(PY) -m pytest -q -rs $(TORCHRUN_TESTS)

# For development: no lint, no end-to-end tests (marked slow: trainings, script runs, benchmarks; see
# docs/guide/testing.md), no torchrun launches. `make test` runs everything.
test-quick: install
	$(PY) -m pytest -q $(XDIST) -m "not slow" --ignore=$(TORCHRUN_TESTS) tests

clean-venv:
	rm -rf $(VENV)

# The whole PA-Seg sequence on the embedded synthetic dataset (about 8 minutes on 2 CPU cores);
# everything it generates (data, split, models, results) goes under demo_output/.
demo: install
	$(PY) data/demo/run_demo.py --output_dir demo_output --data_dir demo_output/data --split_file demo_output/split_demo.csv
