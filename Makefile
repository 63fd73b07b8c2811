# Every target sets up what it needs from nothing: a fresh clone needs only `make test` or `make demo`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
DOCS_STAMP := $(VENV)/.installed-docs
PIP_INSTALL := $(BIN)/python -m pip install --quiet --constraint constraints.txt

.PHONY: install demo test lint format bench docs docs-check clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/captum-robust demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest

bench: $(STAMP)
	@for script in benchmarks/bench_*.py; do \
		echo "== $$script"; \
		$(BIN)/python $$script || exit 1; \
	done

# MathJax comes from its own npm package (pinned in docs/package-lock.json), so
# the built site renders formulas without a network; npm is installed when missing.
$(DOCS_STAMP): $(STAMP) setup.cfg pyproject.toml constraints.txt docs/package.json docs/package-lock.json
	$(PIP_INSTALL) -e '.[docs]'
	command -v npm >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; }
	npm ci --prefix docs --no-audit --no-fund --loglevel=error
	touch $(DOCS_STAMP)

# Build the site from nothing (notebooks are executed), warnings as errors, then
# check it in headless Chromium. SPHINXOPTS adds sphinx-build options (e.g. -j auto).
SPHINXOPTS ?=
docs: $(DOCS_STAMP)
	rm -rf docs/_build/html docs/_build/doctrees docs/api/generated
	$(BIN)/sphinx-build -W --keep-going -b html $(SPHINXOPTS) docs docs/_build/html
	$(MAKE) docs-check

# The browser check alone, on the site already built. It uses Debian's Chromium
# (installed here when missing; we run as root), or the browser named by $CHROMIUM.
docs-check: $(DOCS_STAMP)
	test -x "$${CHROMIUM:-/usr/bin/chromium}" || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	$(BIN)/python docs/check_site.py docs/_build/html

clean:
	rm -rf $(VENV) build dist *.egg-info docs/_build docs/api/generated .pytest_cache .ruff_cache
