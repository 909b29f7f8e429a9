# The README's two commands. Each creates .venv and installs what it needs on first use;
# the install re-runs only when setup.py changes.
# jax >= 0.11 needs Python >= 3.12: the first such interpreter on PATH, else pyenv's 3.12 or 3.13.
PYTHON ?= $(shell for p in python3.12 python3.13 python3 \
  $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.12*/bin/python3 \
  $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.13*/bin/python3; do \
  $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && echo $$p && break; done)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# 8 fake CPU devices so that sharding code runs the same paths as on a pod slice.
export XLA_FLAGS ?= --xla_force_host_platform_device_count=8
export TF_CPP_MIN_LOG_LEVEL ?= 2
# This Makefile runs on the CPU. libtpu (installed for compile-only TPU checks, the `aot`
# extra) is then never tried as a backend, and several processes may load it at once.
export JAX_PLATFORMS ?= cpu
export ALLOW_MULTIPLE_LIBTPU_LOAD ?= 1

.PHONY: demo test lint bench clean

$(STAMP): setup.py
	@test -n "$(PYTHON)" || { echo 'error: gato-jax needs Python >= 3.12 (jax >= 0.11); none found on PATH or in pyenv; set PYTHON=/path/to/python3.12' >&2; exit 1; }
	@# A venv made by an older Python (the project needed 3.11 before jax 0.12) is remade.
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null || rm -rf $(VENV)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[envs,dev,aot,viz,beam]'
	touch $(STAMP)

# The whole job on this machine: the mixture's datasets generated from real environments
# (data/demo/, once), a tiny Gato trained with checkpoints in runs/demo/, the evaluator on
# the newest checkpoint (runs/demo/eval/). Run again, it resumes: a finished run only
# re-evaluates.
demo: $(STAMP)
	$(PY) -m data_pipelines.prepare --config=configs/demo.py
	$(PY) -m gato_jax.train --config=configs/demo.py --workdir=runs/demo
	$(PY) -m gato_jax.evaluator --config=configs/demo.py --workdir=runs/demo --step=-1

test: $(STAMP)
	$(PY) -m ruff check .
	@# One worker per core, at most 4: each worker imports its own JAX and TensorFlow. Tests,
	@# not files, are spread over the workers: whole files (--dist loadfile) put all of
	@# test_train.py on one worker: 18:51 of pytest for 509 tests, spread by test 16:31;
	@# with tests/conftest.py's compilation cache for the run, 15:17 for 504 (idle, 2 cores),
	@# and its XLA CPU optimization level 0 as well, 11:36.
	$(PY) -m pytest -q -n auto --maxprocesses=4 --durations=15 tests

bench: $(STAMP)
	$(PY) -m benchmarks.tokenize
	$(PY) -m benchmarks.model --config=configs/demo.py
	$(PY) -m benchmarks.pipeline --config=configs/demo.py
	$(PY) -m benchmarks.checkpoint --config=configs/demo.py

clean:
	rm -rf $(VENV) build *.egg-info
