# The two commands of the README:
#   make demo   set everything up, then run the main job on the synthetic multimodal world
#   make test   set everything up, then run the test suite
# `scripts/setup_env.sh` is a no-op when .venv is already complete.

VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= demo

.PHONY: setup demo test lint bench clean

setup:
	@bash scripts/setup_env.sh

demo: setup
	$(PY) -m recsys demo --dir $(DEMO_DIR)

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
