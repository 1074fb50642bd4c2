# Set-up for a fresh machine: `make test` or `make demo`. Both reuse .venv on a second run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install test test-fast demo clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch goes in first and pinned: `torch==2.13.0` takes the local CPU wheel, while letting
# pip resolve torch through another package would pull several GB of CUDA wheels.
$(STAMP): $(PY) pyproject.toml
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[test]" "torch==2.13.0"
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
