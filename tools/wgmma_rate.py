"""The tensor cores' rate for the state chain's product shapes on one sm_90 GPU: a program repeats D[64, N] += A[64, 128]
B[128, N] (eight wgmma instructions), A from registers (RS, as the chain's products) or shared memory (SS), B from
shared memory, one or two programs a multiprocessor, each call waited for (dep: a dependent product's latency) or one
left in flight (pipe: the rate). Writes {case: [TFLOP/s, ns a call a program]} to OUT.json.
Usage: python tools/wgmma_rate.py OUT.json"""

from __future__ import annotations

import json
import sys

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, warpgroup_mma, warpgroup_mma_wait


@gluon.jit
def wgmma_rate_kernel(out, ITERS, N: gl.constexpr, A_REG: gl.constexpr, DEP: gl.constexpr):
    MMA: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, N, 16])
    SB: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)
    BL: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [4, 1], [1, 0])
    b_s = gl.allocate_shared_memory(gl.bfloat16, [128, N], SB, gl.full([128, N], 0.001, gl.bfloat16, BL))
    a_s = gl.allocate_shared_memory(gl.bfloat16, [64, 128], SB, gl.full([64, 128], 0.002, gl.bfloat16, BL))
    fence_async_shared()
    if A_REG:
        a = a_s.load(gl.DotOperandLayout(operand_index=0, parent=MMA, k_width=2))
    else:
        a = a_s
    acc = gl.zeros([64, N], gl.float32, MMA)
    for _ in range(ITERS):
        acc = warpgroup_mma(a, b_s, acc, is_async=True)
        acc = warpgroup_mma_wait(0 if DEP else 1, deps=(acc,))
    acc = warpgroup_mma_wait(0, deps=(acc,))
    gl.store(out + gl.program_id(0), gl.sum(gl.sum(acc, axis=1), axis=0))


def rate(N: int, a_reg: bool, per_sm: int, dep: bool, iters: int = 4000) -> tuple[float, float]:
    """(TFLOP/s, ns a call a program): the median of five launches of one program per multiprocessor (per_sm 1) or
    two."""
    dev = torch.device("cuda")
    grid = torch.cuda.get_device_properties(dev).multi_processor_count * per_sm
    out = torch.empty(grid, device=dev)
    launch = lambda: wgmma_rate_kernel[(grid,)](out, iters, N=N, A_REG=a_reg, DEP=dep, num_warps=4)  # noqa: E731
    launch()
    times = []
    for _ in range(5):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        launch()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e))
    ms = sorted(times)[2]
    return 2 * grid * iters * 64 * N * 128 / ms / 1e9, ms * 1e6 / iters


def main(path: str) -> None:
    res = {}
    for dep in (False, True):
        for a_reg in (True, False):
            for N in (64, 128, 256):
                for per_sm in (1, 2):
                    tflops, ns = rate(N, a_reg, per_sm, dep)
                    key = f"N{N} {'RS' if a_reg else 'SS'} {per_sm}/SM {'dep' if dep else 'pipe'}"
                    res[key] = [round(tflops, 1), round(ns, 1)]
                    print(f"{key}: {tflops:.1f} TFLOP/s, {ns:.1f} ns a call of 64 x {N} x 128", flush=True)
    with open(path, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
