# The project's commands. `make demo` and `make test` set up what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup test demo bench clean

setup:
	@bash scripts/setup.sh

# Two pytest-xdist workers, one per core of a 2-core machine, each taking
# whole files (tests/cores.py shares the cores out between them).
test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder tests

demo: setup
	bash scripts/demo.sh

bench: setup
	bash bench/run_all.sh

clean:
	rm -rf $(VENV) demo_output sample .pytest_cache
