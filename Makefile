# make ladder : set up .venv and walk the ladder on the default workload (llama 1b on a GPU, tiny on a CPU)
# make test   : set up .venv and run the tests (what CI runs)
# make lab    : set up .venv and start JupyterLab on notebooks/ (localhost, with a token)
# make browser: Debian's chromium + chromium-driver for the browser tests (apt-get, as root; `make test` runs it)
# make screenshots : docs/report.png and docs/jupyterlab.png (headless Chromium)
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
ARGS ?=

$(VENV)/.installed: requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -e .
	@echo "preflight: can this machine compile? (it also warms the compiler's caches for the first run)"
	@$(PY) -m playbook preflight || echo "preflight: NOT READY (above): the compiled phases will fail until that is fixed"
	touch $@

setup: $(VENV)/.installed

ladder: setup
	$(PY) -m playbook run $(ARGS)

test: setup browser
	$(PY) -m pytest -q -m "not gpu" $(ARGS)

# The browser tests need Chromium; installed here where the machine allows it (root with apt-get, as in CI).
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's chromium and chromium-driver for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "note: no chromium/chromedriver and no root apt-get: the browser tests will be skipped"; fi

lab: setup
	$(VENV)/bin/jupyter lab --ip=127.0.0.1 --no-browser $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) notebooks

screenshots: setup browser
	$(PY) docs/screenshots.py

.PHONY: setup ladder test lab browser screenshots
