# `make demo` and `make test` set up .venv on first use (CPU torch via constraints.txt).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint bench bench-pruners bench-oneshot clean

$(STAMP): pyproject.toml constraints.txt setup.py $(wildcard fsparse/_src/engine/kernels/*)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt torch==2.13.0+cpu
	$(PY) -m pip install --quiet -c constraints.txt -e '.[all]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m fsparse demo

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check fsparse tests examples benchmarks
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) benchmarks/run.py
	$(PY) -m pytest -q -m slow

# fsparse.pruners: accuracy vs sparsity on the digits, then update time vs a read pass
# (writes benchmarks/PRUNERS.md and benchmarks/pruners_quality.png; ~3-5 + ~10 min on 2 busy cores).
bench-pruners: $(STAMP)
	$(PY) benchmarks/pruners_quality.py
	$(PY) benchmarks/pruners_speed.py

# fsparse.oneshot: a small GPT-2-style LM trained on the stdlib's sources, pruned at 50 % and
# 2:4 by magnitude, Wanda and SparseGPT (writes benchmarks/ONESHOT.md; ~5 min).
bench-oneshot: $(STAMP)
	$(PY) benchmarks/oneshot_lm.py

clean:
	rm -rf $(VENV) demo-report .pytest_cache .hypothesis
