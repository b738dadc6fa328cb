# Every target sets itself up: a fresh Linux machine with Python >= 3.10 needs nothing else.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build of torch is installed first, on its own, so that no multi-GB CUDA build is pulled in.
TORCH_SPEC ?= torch==2.13.0

.PHONY: test venv clean bench wheel asv-quick asv-run bench-compare bench-docs gpu-static

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

# Benchmarks (CONTRIBUTING.md): pytest-benchmark microbenchmarks, asv, and the peer comparison.
$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[bench]"
	touch $@

bench: $(VENV)/.bench-installed
	$(VENV)/bin/pytest benchmarks --ignore=benchmarks/benchmarks -q \
	  --benchmark-only --benchmark-group-by=group $(PYTEST_ARGS)

# The quick asv pass CI runs (.ci/run): every asv benchmark of every op once (small size, float32, the op's
# compiled backend), so the suite cannot rot; asv exits with status 2 when a benchmark fails.
asv-quick: $(VENV)/.installed
	$(PY) -m pip install --quiet "asv>=0.6"
	cd benchmarks && $(abspath $(VENV))/bin/asv machine --yes >/dev/null && \
	  MULTIALIGN_BENCH_SIZES=small MULTIALIGN_BENCH_DTYPES=float32 MULTIALIGN_BENCH_BACKENDS=numba,default \
	  OMP_NUM_THREADS=2 \
	  $(abspath $(VENV))/bin/asv run --python=same --quick --launch-method forkserver --show-stderr

# A full asv run of the working tree, saved under the current commit (compare two with `asv compare A B`).
asv-run: $(VENV)/.bench-installed
	cd benchmarks && $(abspath $(VENV))/bin/asv machine --yes >/dev/null && \
	  $(abspath $(VENV))/bin/asv run --python=same --launch-method forkserver --set-commit-hash $$(git rev-parse HEAD)

bench-compare: $(VENV)/.bench-installed
	$(VENV)/bin/multialign bench --op all --compare --out bench-results

# Regenerates docs/benchmarks.md: the CPU peer comparison (long) and the static GPU report.
bench-docs: $(VENV)/.bench-installed
	$(VENV)/bin/multialign bench --op all --compare --out docs/bench-results --doc docs/benchmarks.md
	$(VENV)/bin/multialign bench --gpu-static --out docs/bench-results --doc docs/benchmarks.md

gpu-static: $(VENV)/.installed
	$(VENV)/bin/multialign bench --gpu-static --strict

wheel: $(VENV)/.installed
	$(PY) -m build --wheel --outdir dist .

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
