# The two commands of the README. Both create the environment on a fresh machine:
# a virtualenv, torch==2.13.0 first (a CPU wheel here; unpinned torch pulls GBs of CUDA), then the package.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.clef-hf-installed

.PHONY: demo test install clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) scripts/demo.py --output_dir outputs/demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

clean:
	rm -rf $(VENV) outputs .pytest_cache
