"""What bounds ``(ops.gram(x, y) * W).sum().backward()`` at 4096 x 4096 x 64 on the CPU.

    OMP_NUM_THREADS=2 MALLOC_MMAP_THRESHOLD_=17179869184 MALLOC_TRIM_THRESHOLD_=17179869184 \\
        python benchmarks/gram_fwd_bwd_bound.py

Times, in one process, the peer of the ``gram_fwd_bwd[4096x64]`` bench case (torch autograd on the GEMM
expansion) and the parts that any implementation of the same user code must run: the user's own ``K * W``,
``.sum()`` and autograd's ``grad * W``; the three GEMMs (x y^T, W y, [x, 1]^T W) as single MKL calls into
memory in cache; 16.7 M exps; one write of K and one read of G and K into / from memory not in cache. Their
sum over the peer's time is the most any implementation could gain on this machine (issue 2's 3x bar: the
sum was 46 ms against 115 / 3 = 38 ms on the development VM).
"""
import statistics
import time

import torch

from multialign.bench.cases.gram import _data, _rbf_autograd, _weights


def _median_ms(f, n=12):
    ts = []
    for i in range(n):
        t = time.perf_counter()
        f(i)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts[2:]) * 1e3


def main(reps: int = 3) -> None:
    p = dict(N=4096, M=4096, D=64)
    x, y, gamma = _data(p, grad=True)
    W = _weights(p)
    xd, yd = x.detach(), y.detach()

    def peer(i):
        x.grad = y.grad = None
        (_rbf_autograd(x, y, gamma) * W).sum().backward()

    K = torch.rand(4096, 4096)
    neg = torch.rand(4096, 4096) * -8
    cold = [torch.rand(4096, 4096) for _ in range(6)]   # 384 MB: a buffer is out of cache when its turn comes
    o1, o2, o3 = torch.empty(4096, 4096), torch.empty(4096, 64), torch.zeros(65, 4096)
    xt = torch.cat([xd.T, torch.ones(1, 4096)])
    ones = torch.ones(()).expand(4096, 4096)
    parts = {
        "peer: the whole loop": lambda i: peer(i),
        "user: K * W": lambda i: K * W,
        "user: .sum()": lambda i: cold[i % 6].sum(),
        "user: autograd's grad * W": lambda i: ones * W,
        "GEMM x y^T": lambda i: torch.mm(xd, yd.T, out=o1),
        "GEMM W y": lambda i: torch.mm(K, yd, out=o2),
        "GEMM [x, 1]^T W": lambda i: o3.addmm_(xt, K),
        "exp, 16.7 M": lambda i: torch.exp(neg, out=o1),
        "write K once (not in cache)": lambda i: cold[i % 6].fill_(0.5),
        "read G and K once (not in cache)": lambda i: (cold[i % 6].sum(), cold[(i + 3) % 6].sum()),
    }
    runs = {k: [] for k in parts}
    for _ in range(reps):
        for k, f in parts.items():
            runs[k].append(_median_ms(f, 8 if k.startswith("peer") else 12))
    med = {k: statistics.median(v) for k, v in runs.items()}
    for k, v in med.items():
        print(f"{k:34s} {v:7.2f} ms")
    total = sum(v for k, v in med.items() if not k.startswith("peer"))
    whole = med["peer: the whole loop"]
    print(f"sum of the parts {total:.1f} ms; peer / sum = {whole / total:.2f}x (a 3x needs {whole / 3:.1f} ms)")


if __name__ == "__main__":
    main()
