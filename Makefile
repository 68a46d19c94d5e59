# cleancut developer tasks. `make demo` and `make test` are the README's quickstart commands.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= ../shared/data

.PHONY: setup demo test test-fast browser-deps docs docs-serve clean
CHROMIUM ?= /usr/bin/chromium

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

## The whole test suite (what CI runs), browser tests included.
test: setup browser-deps
	CLEANCUT_REQUIRE_BROWSER=1 $(BIN)/python -m pytest -q   # a browser test fails rather than skips

## Debian's chromium, which the browser tests drive (tests/test_browser.py; playwright comes with
## the dev extra and downloads no browser). Installed with apt-get, through sudo when not root.
browser-deps:
	@test -x $(CHROMIUM) || { \
	  sudo=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser tests ($${sudo:+sudo }apt-get install chromium)"; \
	    $$sudo apt-get install -y -qq chromium >/dev/null 2>&1 || { $$sudo apt-get update -qq && \
	      DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium >/dev/null; }; \
	  else \
	    echo "warning: no apt-get here; install chromium at $(CHROMIUM) or the browser tests are skipped" >&2; \
	  fi; }

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not browser"

## The documentation site into site/ (offline; --strict: a broken link or reference fails).
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

## The documentation site served at http://127.0.0.1:8001, rebuilt on every change (site/ also
## works opened from files: site/index.html).
docs-serve: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve -a 127.0.0.1:8001

clean:
	rm -rf $(VENV) .pytest_cache samples/out site
