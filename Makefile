# Two entry points for a fresh clone: `make demo` and `make test`.
# TORCH pins the CPU build that the default environment installs; a range in pyproject.toml
# then accepts it instead of pulling a multi-GB CUDA build. Override for a GPU machine:
#   make demo TORCH=torch
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
MIRROR ?= $(abspath ../shared/corpora)
# bash with pipefail: a failing command piped into tee still fails the target.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

.PHONY: install browser vendor demo lint test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	$(MAKE) vendor
	touch $@

# onnxruntime-web's wasm (14 MB) is too large to keep in git: it is fetched from its pinned npm
# package (integrity checked) into the package before an install or a wheel build.
WASM := charrnn/export/vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm
vendor:
	@test -f $(WASM) || $(PYTHON) scripts/vendor_js.py onnxruntime-web

install: $(VENV)/.installed

# Chromium for the page tests of visualize, export and serve, which Playwright drives headless
# (they skip, saying why, without it; `playwright install` is never needed).
# Debian/Ubuntu, as root; does nothing where a chromium is already installed.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# Builds the folk-abc corpus offline (from music21's bundled tunes), trains a small model for two minutes,
# draws tunes until 3 pass the checker and writes their MIDI files.
demo: install
	$(BIN)/charrnn corpus get folk-abc
	$(BIN)/charrnn train folk-abc --hidden 128 --layers 2 --time-budget 2m --out checkpoints/demo --force
	rm -rf checkpoints/demo/midi
	$(BIN)/charrnn sample checkpoints/demo --tunes 3 --valid-only --seed 1 --midi checkpoints/demo/midi \
		| tee checkpoints/demo/tunes.abc
	$(BIN)/charrnn abc check checkpoints/demo/tunes.abc
	@echo "Demo done: 3 tunes in checkpoints/demo/tunes.abc, their MIDI files in checkpoints/demo/midi/"

# The habits: lint rules, formatting and strict types (settings in pyproject.toml), with zero findings.
# .pre-commit-config.yaml runs the same three; CI runs this before the tests.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Two pytest workers (one per core of a small machine); the tests that time real processes
# against each other (signals, DDP ranks) then run alone, where a busy neighbour cannot starve them.
test: install
	CHARRNN_MIRROR="$${CHARRNN_MIRROR:-$(MIRROR)}" $(BIN)/python -m pytest -q -n 2 -m "not serial"
	CHARRNN_MIRROR="$${CHARRNN_MIRROR:-$(MIRROR)}" $(BIN)/python -m pytest -q -m serial

bench: install
	CHARRNN_MIRROR="$${CHARRNN_MIRROR:-$(MIRROR)}" $(BIN)/charrnn bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
