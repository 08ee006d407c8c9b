# The two set-up commands of the README: `make demo` and `make test`.
# Each installs the pinned environment into .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
STAMP  := $(VENV)/.installed

.PHONY: demo test browser compose-cli lint lock bench clean

demo: $(STAMP)
	$(BIN)/millet demo

test: $(STAMP) browser compose-cli
	$(BIN)/ruff check millet dags features tests bench
	$(BIN)/pytest

# The browser tests (quality report, catalog) render pages in Debian's Chromium (headless). Installed here when it is
# missing and this is root; otherwise that test skips and says why.
browser:
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] \
	  || apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 \
	  || (apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends chromium >/dev/null 2>&1) \
	  || echo "WARNING: could not install chromium; the report-rendering test will skip"

# The compose file's test runs Compose's own `config` (Debian's docker-compose; no engine needed). Installed
# here when missing and this is root; otherwise that one test skips and says why.
compose-cli:
	@command -v docker-compose >/dev/null || [ "$$(id -u)" != 0 ] \
	  || apt-get install -y --no-install-recommends docker-compose >/dev/null 2>&1 \
	  || (apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends docker-compose >/dev/null 2>&1) \
	  || echo "WARNING: could not install docker-compose; the compose-config test will skip"

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==0.13.9
	$(UV) pip install --quiet --python $(BIN)/python -r requirements.lock
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

# Re-pin after changing pyproject.toml's dependencies.
lock: $(STAMP)
	$(UV) pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) .millet
