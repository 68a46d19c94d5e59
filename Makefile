# cleancut developer tasks. `make demo` and `make test` are the README's quickstart commands.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= ../shared/data

.PHONY: setup demo test test-fast docs clean

# torch 2.13.0 first: it is the CPU build (a plain `torch` requirement would pull CUDA wheels).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[train,dev]'
	$(BIN)/cleancut warmup   # first-use costs now: numba compiles the alpha-matting kernels (~1 min, once)
	touch $@

setup: $(VENV)/.installed

## Cut out the sample photos in samples/ with the bundled model (offline) into samples/out/.
demo: setup
	$(BIN)/cleancut remove samples/*.jpg -o samples/out --overwrite
	@echo "cut-outs written to samples/out/"

## The whole test suite (what CI runs).
test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not browser"

## The documentation site into site/ (offline; --strict: a broken link or reference fails).
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) .pytest_cache samples/out site
