# Every target sets itself up: a fresh Linux machine with Python >= 3.10 needs nothing else.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build of torch is installed first, on its own, so that no multi-GB CUDA build is pulled in.
TORCH_SPEC ?= torch==2.13.0

.PHONY: test venv clean clean-numba-cache bench wheel asv-quick asv-run asv-compare bench-compare bench-docs gpu-static

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

# `asv continuous BASE HEAD` without network: both commits installed into throwaway virtualenvs layered on
# $(VENV), the current asv suites run against each, then `asv compare` (benchmarks/asv_compare.sh).
BASE ?= main
HEAD ?= HEAD
asv-compare: $(VENV)/.installed
	VENV_PY=$(abspath $(PY)) benchmarks/asv_compare.sh $(BASE) $(HEAD) $(ASV_ARGS)

bench-compare: $(VENV)/.bench-installed
	$(VENV)/bin/multialign bench --op all --compare --out bench-results

# Regenerates docs/benchmarks.md and docs/bench-results/ (JSON, CSV, Markdown, plots): the static GPU report
# (every Triton kernel at every autotune config, sm_80 and sm_90), then the CPU comparison of exactly what the
# kernel issues' performance bars compare (`--bars`: their sizes and peers; multialign alone at the large sizes
# where eager peers run out of memory), one op at a time merged into one report, then the page. About 35 minutes
# on the 2-core development VM: run it on a quiet machine. BENCH_LOCK prefixes each step (e.g. "flock x.lock");
# BENCH_DOCS_OPS=spd BENCH_DOCS_KEEP=1 re-times one op and keeps the others' figures; BENCH_DOCS_STATIC= skips
# the static GPU report (keeps docs/bench-results/gpu_static.json); BENCH_DOCS_ARGS="--compare
# --sizes medium,large --peer-cases-only --tuned-malloc peers" is the broad (~1 h) comparison of every peer case.
BENCH_DOCS_OPS  ?= spd stress sinkhorn gram mmd
BENCH_DOCS_ARGS ?= --compare --bars --tuned-malloc all --reps 10 --budget 1 --procs 2
BENCH_DOCS_KEEP ?=
BENCH_DOCS_STATIC ?= 1
BENCH_LOCK      ?=
bench-docs: $(VENV)/.bench-installed
	test -n "$(BENCH_DOCS_KEEP)" || rm -f docs/bench-results/results.json
	test -z "$(BENCH_DOCS_STATIC)" || \
	  $(BENCH_LOCK) $(VENV)/bin/multialign bench --gpu-static --out docs/bench-results > /dev/null
	for op in $(BENCH_DOCS_OPS); do \
	  $(BENCH_LOCK) $(VENV)/bin/multialign bench --op $$op $(BENCH_DOCS_ARGS) --merge --no-plots \
	    --out docs/bench-results > /dev/null || exit 1; \
	done
	$(VENV)/bin/multialign bench --render docs/bench-results --doc docs/benchmarks.md

gpu-static: $(VENV)/.installed
	$(VENV)/bin/multialign bench --gpu-static --strict

wheel: $(VENV)/.installed
	$(PY) -m build --wheel --outdir dist .

clean: clean-numba-cache
	rm -rf $(VENV) build dist *.egg-info .pytest_cache

# Numba's on-disk cache keys a function on its own file only: after editing a helper module (e.g.
# kernels/numba/_spd_lanes.py), the cached kernels that call it (kernels/numba/spd.py) are stale.
clean-numba-cache:
	find kernels multialign -name '*.nbi' -delete -o -name '*.nbc' -delete
