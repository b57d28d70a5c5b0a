# Two commands on a fresh machine: `make demo` runs the observatory, `make test` runs the tests.
# Each creates the virtual environment (.venv) on first use.

VENV := .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: demo test lint bench chromium

# The demo needs the observatory alone; the tests add their tools (Playwright, ruff, moto, …).
$(VENV)/.installed-run: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed-run

demo: $(VENV)/.installed-run
	$(VENV)/bin/observatory demo

# Browser tests drive Debian's chromium; install it when missing (needs root, as on this project's machines).
chromium:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

test: $(VENV)/.installed chromium
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) bench/train_overhead.py
	$(PY) bench/run_page_load.py
	$(PY) bench/train_on_ray.py
	$(PY) bench/scheduling.py
