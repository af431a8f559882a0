# The two commands of README.md: `make book` and `make test`. Both set themselves up in .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is installed first and pinned, so pip never pulls a multi-GB CUDA build on a CPU machine.
TORCH_SPEC ?= torch==2.13.0
# Where the datasets are (see paperlib/data.py); default: the project's shared/ folder beside the clone.
PAPERLIB_DATA ?= $(abspath $(CURDIR)/../shared/data)
export PAPERLIB_DATA

# MathJax is served with the book (fetched once from the npm registry, checksum-checked), so pages
# render their equations without reaching a CDN.
MATHJAX := book/_static/mathjax/tex-svg-full.js
MATHJAX_TGZ_SHA256 := 1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09

.PHONY: setup book test bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e '.[book,test]'
	touch $@

$(MATHJAX):
	rm -rf .cache/mathjax && mkdir -p .cache/mathjax $(dir $@)
	cd .cache/mathjax && npm pack --silent mathjax@3.2.2 >/dev/null \
	  && echo "$(MATHJAX_TGZ_SHA256)  mathjax-3.2.2.tgz" | sha256sum -c --quiet \
	  && tar xzf mathjax-3.2.2.tgz package/es5/tex-svg-full.js package/LICENSE
	cp .cache/mathjax/package/es5/tex-svg-full.js .cache/mathjax/package/LICENSE $(dir $@)

setup: $(VENV)/.installed $(MATHJAX)

# Executes every chapter at the CPU profile, then writes the static site to _build/html (book/build.py):
# the terminal shows which chapter runs and its progress bars (rate, ETA); no cell has a time limit
# (a stalled kernel still fails); an interrupted build resumes from the result cache when rerun.
# Every chapter is executed in every build (a page whose results changed through paperlib, data or
# book/gpu_records never ships stale); the site is then built from those notebooks without executing
# them again. JOBS=2 runs two chapters at a time, one CPU thread each.
JOBS ?= 1
book: setup
	PAPERLIB_PROFILE=cpu PAPERLIB_CACHE=$(CURDIR)/.cache/results \
	  $(BIN)/python book/build.py --profile cpu --jobs $(JOBS)

# Unit tests, then every chapter under nbmake at the smoke profile.
test: setup
	PAPERLIB_PROFILE=smoke PAPERLIB_CACHE=$(CURDIR)/.cache/smoke \
	  $(BIN)/python -m pytest -q tests notebooks --nbmake --nbmake-timeout=900 --durations=15

bench: setup
	$(BIN)/python benchmarks/bench_geometry.py

clean:
	rm -rf _build .cache
