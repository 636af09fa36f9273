# The project's commands. `make demo` and `make test` set up what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup test demo bench clean

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest -q tests

demo: setup
	bash scripts/demo.sh

bench: setup
	bash bench/run_all.sh

clean:
	rm -rf $(VENV) demo_output sample .pytest_cache
