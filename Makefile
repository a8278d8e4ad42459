# The README's two commands: `make demo` (the main job on the embedded scene) and `make test`.
# Each installs what it needs first (scripts/setup.sh: apt, a venv, pip), idempotently.
SHELL := /bin/bash
PY := .venv/bin/python
QGIS_PROCESS := scripts/qgis_process.sh
DEMO := demo_out
# The lighter settings that finish on 2 CPU cores in minutes; see README.
DEMO_SIZE ?= 200
DEMO_BANDS ?= 60

.PHONY: setup demo test test-fast bench install package clean help

help:
	@echo "make demo     - generate the embedded scene and run the chain through qgis_process"
	@echo "make test     - run the test suite"
	@echo "make bench    - run the benchmarks (slow; writes docs/BENCHMARKS.md)"
	@echo "make install  - link the plugin into your QGIS profile"
	@echo "make package  - build dist/bdgf.zip for QGIS's plugin manager"

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh "$(DEMO)" "$(DEMO_SIZE)" "$(DEMO_BANDS)"

test: setup
	@QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -m "not bench" tests

bench: setup
	@QT_QPA_PLATFORM=offscreen $(PY) benchmarks/run_all.py $(BENCH_ARGS)

install: setup
	@bash scripts/install_plugin.sh $(PROFILE)

package:
	@bash scripts/package_plugin.sh

clean:
	rm -rf build dist $(DEMO) .pytest_cache
