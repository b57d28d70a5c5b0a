# Two commands on a fresh machine: `make demo` runs the observatory, `make test` runs the tests.
# Each creates the virtual environment (.venv) on first use.

VENV := .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# Every package a fresh machine installs, at the versions the tests passed with: `make lock` refreshes it.
LOCK := requirements.lock

.PHONY: demo test lint bench bench-smoke chromium iproute lock

# The demo needs the observatory alone; the tests add their tools (Playwright, ruff, moto, …).
$(VENV)/.installed-run: pyproject.toml $(LOCK)
	@echo "installing the observatory into $(VENV) (a few minutes the first time; torch is most of it)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c $(LOCK) pip
	$(PY) -m pip install --progress-bar on -c $(LOCK) -e .
	touch $@

$(VENV)/.installed: pyproject.toml $(LOCK)
	@echo "installing the observatory and its test tools into $(VENV) (a few minutes the first time)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c $(LOCK) pip
	$(PY) -m pip install --progress-bar on -c $(LOCK) -e '.[test]'
	touch $@ $(VENV)/.installed-run

# Resolve pyproject.toml's ranges afresh in a scratch environment and pin the result (then run `make test`).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --upgrade pip
	.lock-venv/bin/python -m pip install -q -e '.[test,data]'
	(echo "# Made by \`make lock\` on $$(date -u +%F) with $$($(PYTHON) --version); installed with pip's -c."; \
	 .lock-venv/bin/python -m pip freeze --all --exclude-editable | grep -v '^setuptools==\|^wheel==' \
	   | sed 's/^\(torch==[^+]*\)+.*/\1/') > $(LOCK)
	rm -rf .lock-venv

# `make demo PORT=8100 HOST=0.0.0.0` serves elsewhere than 127.0.0.1:8000.
demo: $(VENV)/.installed-run
	$(VENV)/bin/observatory demo $(if $(PORT),--port $(PORT)) $(if $(HOST),--host $(HOST))

# Browser tests drive Debian's chromium; install it when missing (needs root, as on this project's machines).
chromium:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# The pool-on-hosts tests give each node a network namespace of its own (iproute2's `ip`, as root).
iproute:
	@command -v ip >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2)

test: $(VENV)/.installed chromium iproute
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) bench/train_overhead.py
	$(PY) bench/run_page_load.py
	$(PY) bench/train_on_ray.py
	$(PY) bench/scheduling.py
