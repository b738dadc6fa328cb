#!/usr/bin/env bash
# `asv continuous` without network: benchmark two commits and compare them.
#
#   benchmarks/asv_compare.sh BASE [HEAD] [asv run options...]      e.g.  benchmarks/asv_compare.sh main HEAD -b bench_gram
#   make asv-compare BASE=main [HEAD=HEAD] [ASV_ARGS='-b bench_gram']
#
# `asv continuous main HEAD` builds each commit in a fresh virtualenv from asv.conf.json's matrix, which
# downloads torch and friends. This script does the same comparison offline: each commit is checked out in
# a temporary git worktree and installed (no dependencies, no build isolation) into a throwaway virtualenv
# that sees the project venv's packages (torch, numba, triton, ... via a path entry), then the asv suites
# of the current tree are run against it with `asv run --python=same --set-commit-hash`, and
# `asv compare` prints the ratios (`--factor`, default 1.1, marks changes). The project venv itself is
# never modified. Results land in benchmarks/results/ like any asv run.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
base=${1:?usage: benchmarks/asv_compare.sh BASE [HEAD] [asv run options]}
head=${2:-HEAD}
shift $(( $# >= 2 ? 2 : 1 ))
venv_py=${VENV_PY:-$root/.venv/bin/python}
venv_site=$("$venv_py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
work=$(mktemp -d "${TMPDIR:-/tmp}/multialign-asv-XXXXXX")
cleanup() {
  for d in "$work"/src-*; do [ -d "$d" ] && git -C "$root" worktree remove --force "$d" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
cd "$root/benchmarks"
"$venv_py" -m asv machine --yes >/dev/null
shas=()
for rev in "$base" "$head"; do
  sha=$(git -C "$root" rev-parse "$rev^{commit}")
  shas+=("$sha")
  src="$work/src-$sha" env="$work/env-$sha"
  git -C "$root" worktree add --detach --quiet "$src" "$sha"
  "$venv_py" -m venv --without-pip "$env"
  site=$("$env/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$venv_site" > "$site/_multialign_project_venv.pth"       # torch, numba, asv, ... from the project venv
  "$env/bin/python" -m pip install --quiet --no-deps --no-build-isolation --no-index "$src"
  echo "== asv run: $rev ($sha)" >&2
  (cd "$work" && "$env/bin/python" -c "import multialign, sys; sys.exit(multialign.__file__.startswith('$env') == False)")
  "$env/bin/python" -m asv run --python=same --launch-method forkserver --set-commit-hash "$sha" "$@"
done
"$venv_py" -m asv compare --split "${shas[0]}" "${shas[1]}"
