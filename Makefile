# Two commands on a fresh machine (README): `make demo` and `make test`.
# Everything the project needs is installed from here; nothing by hand.

PYTHON ?= python3
VENV ?= .venv
CORE_VENV ?= .venv-core
BIN := $(VENV)/bin
CORE_BIN := $(CORE_VENV)/bin
PIP_FLAGS ?= --disable-pip-version-check --progress-bar off
# Pinned versions the suite was last run green with (regenerate: make constraints).
CONSTRAINTS := -c constraints.txt
# GUI tests need an X display with OpenGL; on a headless Linux box run them under Xvfb.
XVFB := $(shell if [ -z "$$DISPLAY" ] && command -v xvfb-run >/dev/null 2>&1; then echo 'xvfb-run -a -s "-screen 0 1920x1080x24 +extension GLX +render"'; fi)

.PHONY: install install-core demo demo-headless test test-full test-core lint clean constraints

$(BIN)/.installed: pyproject.toml setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(BIN)/python -m pip install $(PIP_FLAGS) $(CONSTRAINTS) -e '.[all]'
	touch $@

$(CORE_BIN)/.installed: pyproject.toml setup.py constraints.txt
	$(PYTHON) -m venv $(CORE_VENV)
	$(CORE_BIN)/python -m pip install $(PIP_FLAGS) --upgrade pip
	$(CORE_BIN)/python -m pip install $(PIP_FLAGS) $(CONSTRAINTS) -e '.[test]'
	touch $@

install: $(BIN)/.installed
install-core: $(CORE_BIN)/.installed

## demo: install, make demo data, open the viewer (headless batch run when there is no display)
demo: install
	$(BIN)/tessera demo

demo-headless: install
	$(BIN)/tessera demo --headless

## test: lint, the full suite (GUI tests under Xvfb), then the headless job without gui/train extras
test: lint test-full test-core

# import-linter walks a package's folder on disk; ours is assembled from top-level folders
# (setup.py), so give it an assembled copy to read. The contracts live in pyproject.toml.
LAYER_TREE := build/import-graph
lint: install
	$(BIN)/ruff check .
	rm -rf $(LAYER_TREE) && mkdir -p $(LAYER_TREE)
	cp -r tessera $(LAYER_TREE)/tessera
	for d in app plugins pipelines resources; do cp -r $$d $(LAYER_TREE)/tessera/$$d; done
	cd $(LAYER_TREE) && $(CURDIR)/$(BIN)/lint-imports --config $(CURDIR)/pyproject.toml --no-cache

test-full: install
	TESSERA_REQUIRE_ALL=1 $(XVFB) $(BIN)/python -m pytest $(PYTEST_ARGS)

# Proves the CLI and batch pipelines run with neither Qt/napari nor torch installed.
test-core: install-core
	TESSERA_HEADLESS_JOB=1 $(CORE_BIN)/python -m pytest -m "not gui and not torch and not accuracy" $(PYTEST_ARGS)

constraints: install
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e ' > constraints.txt

clean:
	rm -rf $(VENV) $(CORE_VENV) build *.egg-info .pytest_cache
