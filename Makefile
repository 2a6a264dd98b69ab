# rserpool developer entry points.  `make test` works as the first command on
# a fresh clone: it bootstraps .venv (scripts/bootstrap.sh), builds the Cython
# extensions in place, then runs the whole test suite.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      ?= .venv
PY        := $(VENV)/bin/python
JOBS      ?= $(shell nproc 2>/dev/null || echo 2)
PYTEST_ARGS ?=
RUN_ARGS  ?=
BENCH_ARGS  ?=
FUZZ_RUNS   ?= 200000
FUZZ_TARGETS ?= $(wildcard fuzz/fuzz_*.py)

.PHONY: setup build run test bench fuzz clean distclean help

help:
	@echo "make setup     - system packages + .venv + editable install (idempotent)"
	@echo "make build     - compile _ext/**/*.pyx into rserpool/_c/ (RSERPOOL_DEBUG=1 for tracing)"
	@echo "make test      - setup + build + pytest (PYTEST_ARGS=...)"
	@echo "make run       - build + start a registrar: rserpool registrar (RUN_ARGS=...)"
	@echo "make bench     - pytest benches/ --benchmark-only (BENCH_ARGS=...)"
	@echo "make fuzz      - run fuzz/fuzz_*.py with atheris (FUZZ_RUNS=$(FUZZ_RUNS))"
	@echo "make clean     - remove build products;  make distclean - also .venv"

setup:
	@bash scripts/bootstrap.sh

build: setup
	$(PY) setup.py --quiet build_ext --inplace --parallel $(JOBS)

# A registrar on every address, port 3863, SCTP (when the kernel has it) and
# TCP, Server Announces on; it prints where it listens.  Ctrl-C stops it.
run: build
	$(VENV)/bin/rserpool registrar $(RUN_ARGS)

test: build
	$(PY) -m pytest $(PYTEST_ARGS)

# benches/ is outside testpaths; bench_*.py and test_*.py files are collected.
# "No benchmarks collected" (pytest exit 5) is not an error here.
bench: build
	@rc=0; $(PY) -m pytest benches -o 'python_files=bench_*.py test_*.py' \
	    --benchmark-only $(BENCH_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make bench: no benchmarks collected"; rc=0; fi; \
	exit $$rc

fuzz: build
	$(PY) -m pip install --quiet --no-build-isolation -e '.[fuzz]'
	@if [ -z "$(FUZZ_TARGETS)" ]; then echo "make fuzz: no fuzz/fuzz_*.py targets yet"; exit 0; fi; \
	mkdir -p fuzz/artifacts; \
	for t in $(FUZZ_TARGETS); do \
	    name=$$(basename $$t .py); mkdir -p fuzz/corpus/$$name; \
	    seeds=; [ -d fuzz/seeds/$$name ] && seeds=fuzz/seeds/$$name; \
	    echo "==> fuzzing $$t ($(FUZZ_RUNS) runs)"; \
	    $(PY) $$t -runs=$(FUZZ_RUNS) -artifact_prefix=fuzz/artifacts/$$name- \
	        fuzz/corpus/$$name $$seeds || exit $$?; \
	done

clean:
	rm -rf build dist *.egg-info .pytest_cache .hypothesis fuzz/artifacts
	find rserpool -name '*.so' -delete
	find _ext \( -name '*.c' -o -name '*.cpp' -o -name '*.html' \) -delete
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
