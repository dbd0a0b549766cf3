# Two commands set everything up on a fresh machine:
#   make quickstart   — venv, torch (exact CPU pin first), the package, built-in data, then the quickstart run
#   make test         — the same set-up, then the test suite
# make quickstart-mt runs the translation quickstart (the paper's second system) after the same set-up.
VENV ?= .venv
PY := $(VENV)/bin/python
TLC := $(VENV)/bin/tlc
# torch first with an exact pin: a looser spec pulls a multi-GB CUDA build on these machines.
TORCH_PIN ?= torch==2.13.0

.PHONY: setup quickstart quickstart-mt test lint mutants system-deps screenshot clean gpu-carry

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e ".[cpu,dev]"
	touch $@

# Headless Chromium renders the report in a test; installed with apt where we are root.
system-deps:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (report rendering test)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null) \
	      || echo "warning: chromium could not be installed; the report rendering test will be skipped"; \
	  else echo "note: chromium not found and not root; the report rendering test will be skipped"; fi; \
	fi

quickstart: setup
	$(TLC) data prepare recipes/quickstart.yaml
	$(TLC) run recipes/quickstart.yaml

quickstart-mt: setup
	$(TLC) run recipes/quickstart-mt.yaml

test: setup system-deps
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check tlc_export runtime_bench tests scripts

# The standing mutation check (not part of `make test`): plants each bug of scripts/mutants.toml and runs
# the tests that cover it; fails when one survives or a target has moved out of reach. ≤ 10 min on 2 cores.
mutants: setup
	$(PY) scripts/mutants.py

screenshot: setup
	$(PY) scripts/report_screenshot.py runs/quickstart docs/pareto.png --height 1000

# Wheels (Python 3.12) and built-in data for a GPU machine without a package index: see runtime_bench/gpu_check.py.
gpu-carry: setup
	$(PY) scripts/gpu_carry.py

clean:
	rm -rf runs
