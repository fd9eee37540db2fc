# The README's two commands are `make demo` and `make test`; both do all set-up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: setup redis-server demo test test-all lint format bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv>=0.4,<1"
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP)            ## create .venv and install fraudops with its dev tools

# The shared online-state tests start their own redis-server on loopback (Debian's package;
# there is none on PyPI). Without one they are skipped with the reason (or set REDIS_URL).
redis-server:              ## install Debian's redis-server if missing (root or sudo)
	@command -v redis-server >/dev/null || { \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo="$$(command -v sudo)"; \
	  echo "installing redis-server (Debian) for the shared online-state tests"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  $$sudo apt-get install -y -q redis-server >/dev/null 2>&1 \
	  || { $$sudo apt-get update -q >/dev/null 2>&1 \
	       && $$sudo apt-get install -y -q redis-server >/dev/null 2>&1; } \
	  || echo "warning: could not install redis-server: the Redis tests will be skipped"; }

demo: setup                ## run the main job on embedded defaults
	$(BIN)/fraudops demo $(ARGS)

test: setup redis-server lint  ## lint, then the default test suite (slow end-to-end tests excluded)
	$(BIN)/pytest -m "not slow" $(ARGS)

test-all: setup redis-server  ## every test, slow ones included
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
