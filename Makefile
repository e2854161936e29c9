# Two commands for a newcomer: `make demo` and `make test`. Each creates the virtual environment
# it needs (.venv) the first time, and reinstalls when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-bikeshare test lint bench bench-stack clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/batchcast demo --profile retail

demo-bikeshare: $(STAMP)
	$(BIN)/batchcast demo --profile bikeshare --root demo-output-bikeshare

# Lint, then every test. pytest's exit code 5 means it collected no test at all: that is a
# broken test setup, never a pass.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing on purpose" >&2; exit 1; fi; \
	exit $$status

bench: $(STAMP)
	$(BIN)/python bench/pipeline.py

# Retail 200 stores × 730 days on the emulator stack vs. the embedded backend.
bench-stack: $(STAMP)
	$(BIN)/python bench/stack.py

clean:
	rm -rf $(VENV) demo-output demo-output-bikeshare batchcast-data .batchcast-stack
