# The README's two commands are `make demo` and `make test`; both do all set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: setup demo test test-all lint format bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv>=0.4,<1"
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP)            ## create .venv and install fraudops with its dev tools

demo: setup                ## run the main job on embedded defaults
	$(BIN)/fraudops demo $(ARGS)

test: setup lint           ## lint, then the default test suite (slow end-to-end tests excluded)
	$(BIN)/pytest -m "not slow" $(ARGS)

test-all: setup            ## every test, slow ones included
	$(BIN)/pytest $(ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup               ## run every benchmark and rewrite benchmarks/RESULTS.md
	$(BIN)/python -m benchmarks $(ARGS)

clean:
	rm -rf $(VENV) .fraudops .pytest_cache
