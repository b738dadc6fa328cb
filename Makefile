# Every target sets itself up: a fresh Linux machine with Python >= 3.10 needs nothing else.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build of torch is installed first, on its own, so that no multi-GB CUDA build is pulled in.
TORCH_SPEC ?= torch==2.13.0

.PHONY: test venv clean bench wheel

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" || \
	  $(PY) -m pip install --quiet "$(TORCH_SPEC)" --index-url https://download.pytorch.org/whl/cpu
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

venv: $(VENV)/.installed

# Triton kernels run under Triton's CPU interpreter: no GPU is needed (or used) by the tests.
test: $(VENV)/.installed
	TRITON_INTERPRET=1 OMP_NUM_THREADS=2 $(VENV)/bin/pytest tests -q $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[bench]"
	$(VENV)/bin/pytest benchmarks -o python_files='bench_*.py' --ignore=benchmarks/benchmarks -q \
	  --benchmark-only --benchmark-group-by=group $(PYTEST_ARGS)

wheel: $(VENV)/.installed
	$(PY) -m build --wheel --outdir dist .

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
