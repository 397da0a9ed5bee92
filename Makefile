# pskd: `make bench` (the main job) and `make test` install everything they need themselves.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# Re-run the installer only when what it installs from changes; it skips finished steps itself too.
SETUP_STAMP := $(VENV)/.pskd-setup-done
DATA_STAMP := data/.pskd-data-done
BENCH_OUT ?= runs/bench-mini
PYTEST_ARGS ?=

.PHONY: setup data test bench perf clean-venv help

help:
	@echo "make bench   - install, fetch data, run the mini benchmark suite, print the table, write the report"
	@echo "make test    - install, fetch data, run the test suite"
	@echo "make setup   - only the install (.venv with torch, mmcv+ops, mmdet, fairseq, pskd)"
	@echo "make data    - only the data sets of shared/DATA.md into data/"
	@echo "make perf    - the performance benchmarks (benchmarks/perf_*.py)"

setup: $(SETUP_STAMP)
$(SETUP_STAMP): scripts/setup.sh pyproject.toml
	bash scripts/setup.sh
	@touch $@

data: $(DATA_STAMP)
$(DATA_STAMP): scripts/fetch_data.py | $(SETUP_STAMP)
	$(PY) scripts/fetch_data.py --data-dir data
	@touch $@

test: setup data
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

bench: setup data
	$(VENV)/bin/pskd-bench run mini --out $(BENCH_OUT)

perf: setup
	$(PY) benchmarks/perf_core.py

clean-venv:
	rm -rf $(VENV)
