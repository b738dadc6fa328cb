"""Moved: the static GPU report is ``multialign bench --gpu-static`` (``multialign/bench/gpu_static.py``).

    python tools/triton_aot.py [family ...] [--cc 80,90] [--default-configs-only] [--kernel NAME]

is kept as a thin wrapper around ``python -m multialign.bench.gpu_static`` (same arguments).
"""
import sys

from multialign.bench.gpu_static import main

if __name__ == "__main__":
    sys.exit(main())
