# The two commands: `make run` (the pipeline on the embedded default) and `make test` (`make lint`, then pytest).
# Both set up .venv on first use and are quick to repeat.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all

.PHONY: run test lint report publish clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

# Reinstall only when the package metadata changes. torch is pinned to the CPU wheel first, so that
# no dependency can pull a multi-GB CUDA build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

run: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --cores $(CORES)

# The static checks first (seconds), then the tests: one worker per core (pytest-xdist), each test
# file on one worker, so a file's module fixtures (the tiny pipeline runs) are made once.
test: lint
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -n auto --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check src benchmarks
	$(BIN)/mypy src
	$(BIN)/snakefmt --check Snakefile rules/
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --lint

report: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --report report.html

clean:
	rm -rf results logs .snakemake report.html
