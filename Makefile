# Two commands for a newcomer: `make demo` and `make test`. Each creates the virtual environment
# it needs (.venv) the first time, and reinstalls when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# checkov lives in its own venv: it pins packaging, networkx and a fork of python-hcl2 that would
# clash with ours. tests/test_terraform.py runs it over terraform/.
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
CHECKOV_VERSION := 3.3.30
# mitmproxy (the fault-injecting proxy of bench/faults.py) pins its own dependencies: a venv of its own.
MITMPROXY_VENV := .venv-mitmproxy
MITMPROXY_STAMP := $(MITMPROXY_VENV)/.installed
MITMPROXY_VERSION := 11.0.2

.PHONY: demo demo-bikeshare test test-unit lint lock bench bench-stack bench-api bench-partition bench-realdata bench-daily bench-coldstart bench-faults bench-console clean functions

# setuptools ends every editable install of a package-dir layout with an InformationOnly note
# ("Editable installation ... folders with the same name as your package may take precedence"):
# no folder at the root is named batchcast or batchcast_api, so the note is filtered by its text.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	PYTHONWARNINGS='ignore:Editable installation' $(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

$(CHECKOV_STAMP):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet 'checkov==$(CHECKOV_VERSION)'
	touch $(CHECKOV_STAMP)

# The deploy lock: pyproject's base dependencies with the ml, gcp and api extras, pinned with hashes
# for the runtime (Python 3.11, Linux x86_64). The functions' archives take their requirements.txt
# from it and the job image installs it. Rerun after changing dependencies in pyproject.toml.
lock: $(STAMP)
	$(BIN)/pip install --quiet 'uv>=0.4'
	$(BIN)/uv pip compile pyproject.toml --extra ml --extra gcp --extra api --generate-hashes \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 --quiet -o requirements/deploy.txt

$(MITMPROXY_STAMP):
	$(PYTHON) -m venv $(MITMPROXY_VENV)
	$(MITMPROXY_VENV)/bin/pip install --quiet 'mitmproxy==$(MITMPROXY_VERSION)'
	touch $(MITMPROXY_STAMP)

# Cloud Functions source archives for Terraform: dist/functions/<name>.zip.
functions: $(STAMP)
	$(BIN)/python scripts/build_functions.py

demo: $(STAMP)
	$(BIN)/batchcast demo --profile retail

demo-bikeshare: $(STAMP)
	$(BIN)/batchcast demo --profile bikeshare --root demo-output-bikeshare

# Lint, check the import rules (pyproject's [tool.importlinter]), then every test. pytest's exit
# code 5 means it collected no test at all: that is a broken test setup, never a pass.
# System parts pip cannot install (Java, the Pub/Sub emulator, Chromium) come from
# scripts/install_system_deps.sh: installed when run as root, else named with the command to run.
# Two pytest-xdist workers: the emulator stack's tests wait on deliveries while the other worker
# trains (tests/conftest.py schedules whole files: one stack, each file's fixtures built once).
PYTEST_WORKERS ?= -n 2
test: $(STAMP) $(CHECKOV_STAMP)
	scripts/install_system_deps.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_WORKERS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing on purpose" >&2; exit 1; fi; \
	exit $$status

# Lint, then the unit tests only, in the same two workers: no emulator stack, SMTP server, server
# subprocess, browser or model training (tests/conftest.py marks tests by the fixtures they use;
# tests that train are marked slow). The quick loop while editing (under a minute on 2 cores;
# make test: about 6 minutes).
test-unit: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_WORKERS) -m "not integration and not browser and not slow"; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing on purpose" >&2; exit 1; fi; \
	exit $$status

bench: $(STAMP)
	$(BIN)/python bench/pipeline.py

# Retail 200 stores × 730 days on the emulator stack vs. the embedded backend.
bench-stack: $(STAMP)
	$(BIN)/python bench/stack.py

# Real data a package ships: ISLP's Capital Bikeshare 2011, daily, batchcast vs. seasonal naive vs. a
# plain HistGradientBoosting script on the same origins. ISLP's own dependencies (torch, ...) are not
# needed to read its data, hence --no-deps; the tests never need it.
bench-realdata: $(STAMP)
	$(BIN)/pip install --quiet --no-deps 'ISLP>=0.4'
	$(BIN)/python bench/realdata.py

# Every store uploads its own day: per-run cost on day 1,095 against day 30, and a GCS estimate.
bench-daily: $(STAMP)
	$(BIN)/python bench/daily.py

# Each function's cold start from its archive (import main + first event, median of 5 fresh
# processes), against the layout before the deploy units (2fac327) measured in the same run.
bench-coldstart: $(STAMP)
	$(BIN)/python bench/coldstart.py

# Per-store daily uploads of 200 stores on the emulator stack through a proxy injecting connection
# drops, 503 answers and latency, against the same run without faults.
bench-faults: $(STAMP) $(MITMPROXY_STAMP)
	$(BIN)/python bench/faults.py

# The results API under load: 200 authenticated requests/s for 30 s over 1,000 stores, on loopback.
bench-api: $(STAMP)
	$(BIN)/python bench/api.py

# The operators' console routes: p50/p95 over 1,000 stores x 365 days of runs and uploads, and at 30 days.
bench-console: $(STAMP)
	$(BIN)/python bench/console.py

# Partition's peak memory on a 2 GiB trips export and a 2 GiB retail rows file, against a bare
# pandas.read_csv of each (target: peak RSS <= 512 MiB). Needs about 10 GB of disk and half an hour.
bench-partition: $(STAMP)
	$(BIN)/python bench/partition_memory.py

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) $(MITMPROXY_VENV) dist demo-output demo-output-bikeshare batchcast-data .batchcast-stack
