# Set-up for a fresh machine: `make test` or `make demo`. Both reuse .venv on a second run
# (`make clean` first after changing TORCH or PIP_OPTS).
PYTHON ?= python3
# The torch requirement, installed first and pinned again in the same pip command as the project:
# a torch resolved through another package (the newest torchvision pins the newest torch) would pull
# several GB of CUDA wheels. torch==2.13.0 is the CPU wheel on this project's build machines.
TORCH ?= torch==2.13.0
# Extra pip options, e.g. PyTorch's CPU wheel index on a machine without a GPU:
#   make test TORCH="torch==2.9.1" PIP_OPTS="--index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple"
PIP_OPTS ?=
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install test test-fast demo clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PIP) install -q $(PIP_OPTS) "$(TORCH)"
	$(PIP) install -q $(PIP_OPTS) -e ".[test]" "$(TORCH)"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

demo: $(STAMP)
	$(PY) tools/demo.py

clean:
	rm -rf $(VENV) build *.egg-info
