# make ladder : set up .venv and walk the ladder on the default workload (llama 1b on a GPU, tiny on a CPU)
# make test   : set up .venv and run the tests (what CI runs)
# make lab    : set up .venv and start JupyterLab on notebooks/ (localhost, with a token)
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
ARGS ?=

$(VENV)/.installed: requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -e .
	touch $@

setup: $(VENV)/.installed

ladder: setup
	$(PY) -m playbook run $(ARGS)

test: setup
	$(PY) -m pytest -q -m "not gpu" $(ARGS)

lab: setup
	$(VENV)/bin/jupyter lab --ip=127.0.0.1 --no-browser notebooks

.PHONY: setup ladder test lab
