"""Benchmark cases for the Sinkhorn family: log-domain entropic OT against its peers (issue 3).

Problem (PEERS.md "Op 2"): uniform weights, unit-scale data (points uniform in ``[0, 1/sqrt(D)]^D``, so the
squared-distance cost lies in [0, 1]), eps = 0.05 (POT's ``reg``; GeomLoss ``blur = sqrt(eps / 2)`` on its
half cost), float32, a fixed number of iterations (no stopping test: every provider does the same work).
The value each provider returns is the entropic dual value ``<a, f> + <b, g>``, compared with a float64
run of the reference solver to convergence.

Providers:

* ours: ``multialign-numba`` (``ops.sinkhorn`` on the points, ``path="auto"``: the stabilised-scaling
  path when its kernel matrix fits the memory budget, else the online one), ``-online`` (O(N + M)
  memory), ``-logmatrix`` / ``-scaling`` (``ops.sinkhorn_matrix`` on the precomputed cost, like the
  matrix peers: log-domain and stabilised-scaling paths), ``multialign-triton`` (CUDA runs).
* POT ``sinkhorn_log`` on NumPy arrays and torch tensors, ``sinkhorn_stabilized``, plain ``sinkhorn``
  (linear domain), all given the precomputed cost matrix (the cost matrix is not timed for any matrix
  solver); a plain torch log-sum-exp loop (same); GeomLoss ``SamplesLoss("sinkhorn", debias=False)``
  tensorized and online with a scaling that gives ~``iters`` iterations; a KeOps LazyTensor log-sum-exp
  loop (online).
* batched: 256 problems of 256 x 256 points, D = 16: ours in one call against POT's ``ot.batch.solve_batch``
  (log-Sinkhorn) and a Python loop over POT ``sinkhorn_log``.

The floor of a log-domain iteration is 2 N M exponentials (one log-sum-exp pass per potential).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..harness import Case, Unavailable, runs_on

EPS = 0.05


def _data(p, dtype=torch.float32, device=None):
    g = torch.Generator().manual_seed(0)
    B, N, M, D = p.get("B", 1), p["N"], p.get("M", p["N"]), p["D"]
    s = 1.0 / math.sqrt(D)
    x = (torch.rand(B, N, D, generator=g, dtype=torch.float64) * s).to(dtype)
    y = (torch.rand(B, M, D, generator=g, dtype=torch.float64) * s).to(dtype)
    if "B" not in p:
        x, y = x[0], y[0]
    dev = device or p.get("device", "cpu")
    return x.to(dev), y.to(dev)


def _cost(x, y):
    """float64 squared distances by explicit differences, chunked, then cast (the matrix input)."""
    xs, ys = x.double(), y.double()
    rows = max(1, (1 << 24) // max(1, ys.shape[-2] * xs.shape[-1]))
    parts = [((xs[..., i:i + rows, None, :] - ys[..., None, :, :]) ** 2).sum(-1) for i in range(0, xs.shape[-2], rows)]
    return torch.cat(parts, dim=-2).to(x.dtype)


def _uniform(n):
    return np.full(n, 1.0 / n, dtype=np.float32)


def _dual(a, b, f, g):
    return float(np.dot(a.astype(np.float64), f) + np.dot(b.astype(np.float64), g))


# ------------------------------------------------------------------------------------------ ours
def _ma(path="auto", matrix=False):
    def make(p):
        from multialign import ops

        be = "triton" if p.get("device", "cpu") == "cuda" else "numba"
        x, y = _data(p)
        kw = dict(eps=EPS, max_iter=p["iters"], tol=0.0, backend=be, path=path)
        if matrix:
            C = _cost(x, y)
            return lambda: ops.sinkhorn_matrix(C, **kw)
        return lambda: ops.sinkhorn(x, y, **kw)
    return make


def _ma_triton(p):
    if p.get("device", "cpu") != "cuda":
        raise Unavailable("the Triton backend is timed on CUDA only (the interpreter is not benchmarked)")
    return _ma()(p)


# ------------------------------------------------------------------------------------------ POT
def _pot_log(kind):
    def make(p):
        import ot

        x, y = _data(p, device="cpu")
        C = _cost(x, y)
        n, m = C.shape
        if kind == "torch":
            a, b, M = torch.full((n,), 1.0 / n), torch.full((m,), 1.0 / m), C
        else:
            a, b, M = _uniform(n), _uniform(m), C.numpy()

        def fn():
            _, log = ot.bregman.sinkhorn_log(a, b, M, EPS, numItermax=p["iters"], stopThr=0.0, log=True)
            lu, lv = (np.asarray(log[k].cpu() if hasattr(log[k], "cpu") else log[k], dtype=np.float64)
                      for k in ("log_u", "log_v"))
            an, bn = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
            return _dual(an, bn, EPS * (lu - np.log(an)), EPS * (lv - np.log(bn)))
        return fn
    return make


def _pot_stabilized(p):
    import ot

    x, y = _data(p, device="cpu")
    M = _cost(x, y).numpy()
    a, b = _uniform(M.shape[0]), _uniform(M.shape[1])

    def fn():
        _, log = ot.bregman.sinkhorn_stabilized(a, b, M, EPS, numItermax=p["iters"], stopThr=0.0, log=True)
        # log["alpha"] already holds the absorbed potential plus eps log u
        return _dual(a, b, np.asarray(log["alpha"], np.float64) - EPS * np.log(a),
                     np.asarray(log["beta"], np.float64) - EPS * np.log(b))
    return fn


def _pot_plain(p):
    import ot

    x, y = _data(p, device="cpu")
    M = _cost(x, y).numpy()
    a, b = _uniform(M.shape[0]), _uniform(M.shape[1])

    def fn():
        _, log = ot.bregman.sinkhorn_knopp(a, b, M, EPS, numItermax=p["iters"], stopThr=0.0, log=True)
        with np.errstate(divide="ignore"):
            return _dual(a, b, EPS * np.log(np.asarray(log["u"], np.float64) / a),
                         EPS * np.log(np.asarray(log["v"], np.float64) / b))
    return fn


# ------------------------------------------------------------------------------------------ torch, GeomLoss, KeOps
@runs_on("cpu", "cuda")
def _torch_lse(p):
    x, y = _data(p)
    C = _cost(x, y)
    n, m = C.shape
    la, lb = torch.full((n,), -math.log(n), device=C.device), torch.full((m,), -math.log(m), device=C.device)
    Ce = C / EPS

    def fn():
        f = torch.zeros(n, device=C.device)
        g = torch.zeros(m, device=C.device)
        for _ in range(p["iters"]):
            f = -EPS * torch.logsumexp(lb + g / EPS - Ce, dim=1)
            g = -EPS * torch.logsumexp(la + f / EPS - Ce.T, dim=1)
        return (f.mean() + g.mean()).double()
    return fn


def _geomloss(backend):
    @runs_on("cpu", "cuda")
    def make(p):
        from geomloss import SamplesLoss

        x, y = _data(p)
        # GeomLoss works on C/2 = |x - y|^2 / 2 with eps_g = blur^2: blur = sqrt(EPS / 2) is our eps; its
        # schedule runs ~log(diameter / blur) / log(1 / scaling) iterations -- pick scaling for ~iters
        blur = math.sqrt(EPS / 2)
        diameter = float((torch.cat([x, y]).amax(0) - torch.cat([x, y]).amin(0)).norm())
        scaling = math.exp(-math.log(max(diameter, 2 * blur) / blur) / max(p["iters"] - 2, 1))
        loss = SamplesLoss("sinkhorn", p=2, blur=blur, scaling=scaling, debias=False, backend=backend)
        return lambda: 2.0 * loss(x, y).double()   # their value is half ours (half the cost)
    return make


@runs_on("cpu", "cuda")
def _keops_lse(p):
    from pykeops.torch import LazyTensor

    x, y = _data(p)
    n, m = x.shape[0], y.shape[0]
    Ce = ((LazyTensor(x[:, None, :]) - LazyTensor(y[None, :, :])) ** 2).sum(-1) / EPS
    CeT = ((LazyTensor(y[:, None, :]) - LazyTensor(x[None, :, :])) ** 2).sum(-1) / EPS
    la, lb = -math.log(n), -math.log(m)

    def fn():
        f = torch.zeros(n, 1, device=x.device)
        g = torch.zeros(m, 1, device=x.device)
        for _ in range(p["iters"]):
            f = -EPS * (LazyTensor((lb + g / EPS)[None, :, :]) - Ce).logsumexp(dim=1)
            g = -EPS * (LazyTensor((la + f / EPS)[None, :, :]) - CeT).logsumexp(dim=1)
        return (f.mean() + g.mean()).double()
    return fn


# ------------------------------------------------------------------------------------------ batched peers
def _pot_batch(p):
    import ot

    try:
        from ot.batch import solve_batch
    except ImportError as exc:   # older POT
        raise Unavailable(f"ot.batch not available ({exc})") from None
    x, y = _data(p, device="cpu")
    C = _cost(x, y)
    B, n, m = C.shape
    a, b = torch.full((B, n), 1.0 / n), torch.full((B, m), 1.0 / m)

    def fn():
        res = solve_batch(C, EPS, a, b, max_iter=p["iters"], tol=0.0, method="log_sinkhorn", reg_type="kl",
                          grad="detach")
        return res.value
    del ot
    return fn


def _pot_loop(p):
    import ot

    x, y = _data(p, device="cpu")
    C = _cost(x, y).numpy()
    B, n, m = C.shape
    a, b = _uniform(n), _uniform(m)

    def fn():
        out = []
        for k in range(B):
            _, log = ot.bregman.sinkhorn_log(a, b, C[k], EPS, numItermax=p["iters"], stopThr=0.0, log=True)
            out.append(_dual(a, b, EPS * (log["log_u"] - np.log(a)), EPS * (log["log_v"] - np.log(b))))
        return np.array(out)
    return fn


# ------------------------------------------------------------------------------------------ reference, floor
def _reference(p):
    """The converged dual value in float64 (the reference solver, eps = 0.05, tol 1e-9)."""
    from multialign import ops

    x, y = _data(dict(p, device="cpu"), dtype=torch.float64)
    return ops.sinkhorn(x, y, eps=EPS, tol=1e-9, max_iter=5000, backend="numba").cost


def _floor(p):
    return {"exps": 2 * p.get("B", 1) * p["N"] * p.get("M", p["N"]) * p["iters"]}


_OURS = {"multialign-numba": _ma(), "multialign-numba-online": _ma("online"),
         "multialign-numba-logmatrix": _ma("matrix", matrix=True),
         "multialign-numba-scaling": _ma("scaling", matrix=True),
         "multialign-triton": runs_on("cuda")(_ma_triton)}
_MATRIX_PEERS = {"pot-sinkhorn_log-numpy": _pot_log("numpy"), "pot-sinkhorn_log-torch": _pot_log("torch"),
                 "pot-sinkhorn_stabilized": _pot_stabilized, "pot-sinkhorn-plain": _pot_plain,
                 "torch-logsumexp-loop": _torch_lse}
_ONLINE_PEERS = {"geomloss-tensorized": _geomloss("tensorized"), "geomloss-online": _geomloss("online"),
                 "keops-logsumexp-loop": _keops_lse}


def _case(n, d, iters, tier, peers=None, note=""):
    params = {"N": n, "D": d, "iters": iters}
    provs = {**_OURS, **(peers if peers is not None else {**_MATRIX_PEERS, **_ONLINE_PEERS})}
    return Case("sinkhorn", f"{n}x{d},{iters}it", params, provs, _floor, note=note,
                reference=_reference if n <= 4096 else None, tier=tier)


CASES = [
    _case(1024, 2, 100, "small"),
    _case(4096, 2, 100, "medium"),
    _case(4096, 64, 100, "medium"),
    # the log-domain peers need 4-8 GB and seconds per iteration here: 10 iterations for everyone
    _case(16384, 2, 10, "large", note="(10 iterations: the dense peers take seconds per iteration)"),
    _case(16384, 64, 10, "large", note="(10 iterations)"),
    Case("sinkhorn_batched", "256x256x256x16,100it", {"B": 256, "N": 256, "D": 16, "iters": 100},
         {"multialign-numba": _ma(), "multialign-numba-online": _ma("online"),
          "multialign-triton": runs_on("cuda")(_ma_triton), "pot-ot.batch-log": _pot_batch,
          "pot-sinkhorn_log-loop": _pot_loop}, _floor, tier="medium"),
]
