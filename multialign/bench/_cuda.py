"""A Triton kernel for the CUDA exp-rate ceiling (imported only on CUDA runs, and by a test under the interpreter).

``torch.exp`` on a GPU measures DRAM bandwidth (8 bytes per exp), not the SFU: this kernel loads one value
per element, applies ``REPS`` dependent exps in registers and stores one accumulated value, so that
``n * REPS`` exps cost ``8 n`` bytes of traffic.
"""
import triton
import triton.language as tl


@triton.jit
def exp_chain_kernel(x_ptr, out_ptr, REPS: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    v = tl.load(x_ptr + offs)
    acc = tl.zeros_like(v)
    for _ in range(REPS):
        v = tl.exp(v * -0.5)
        acc += v
    tl.store(out_ptr + offs, acc)


def exp_chain(x, out, reps: int = 64, block: int = 1024):
    """``out[i] = sum_{k=1..reps} v_k`` with ``v_0 = x[i]``, ``v_k = exp(-v_{k-1} / 2)``; ``x.numel() % block == 0``."""
    assert x.numel() % block == 0 and out.shape == x.shape
    exp_chain_kernel[(x.numel() // block,)](x, out, REPS=reps, BLOCK=block)
    return out
