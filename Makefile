# trustjax: `make demo` and `make test` each create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.trustjax-installed
DEMO_WORKDIR ?= runs/demo
PYTEST_ARGS ?=

.PHONY: demo test check-slow bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m launch.train_dp --config=configs/dp_clinc150.py:demo --workdir=$(DEMO_WORKDIR) --overwrite

test: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not slow" $(PYTEST_ARGS)

check-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

clean:
	rm -rf runs .pytest_cache
