"""Compiles, for sm_90 and without a GPU, the gate's running sum and anchor rows of one [64, 32] slice of the
prepare kernel three ways and prints SASS instruction counts: Triton (its layouts spread a column's 64 tokens
over the four warps, so the sums go through shared memory), and Gluon with a layout in which each warp owns all
64 tokens of its columns, loading g either in that layout or coalesced and converted once
(docs/design.md, "What would get to the floor").
Usage: python tools/scan_layouts.py"""

from __future__ import annotations

import collections
import re

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from compile_report import disassemble  # tools/ is this script's directory


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def triton_slice(g, out, A, lb):
    o_t = tl.arange(0, 64)
    o_h = tl.arange(0, 32)
    x = tl.load(g + o_t[:, None] * 128 + o_h[None, :]).to(tl.float32)
    gam = tl.cumsum(lb * (1.0 / (1.0 + tl.exp2(-A * x))), axis=0)
    r = o_t[:, None]
    a31 = tl.sum(tl.where(r == 31, gam, 0.0), 0)[None, :]
    G = tl.sum(tl.where(r == 63, gam, 0.0), 0)[None, :]
    tl.store(out + o_t[:, None] * 32 + o_h[None, :], tl.exp2(gam - tl.where(r >= 32, G, a31)))


@gluon.jit
def gluon_slice(g, out, A, lb, COALESCED: gl.constexpr):
    # each thread: 8 consecutive tokens of 2 columns; a warp: all 64 tokens of 8 columns
    L: gl.constexpr = gl.BlockedLayout(size_per_thread=[8, 2], threads_per_warp=[8, 4], warps_per_cta=[1, 4],
                                       order=[0, 1])
    o_t = gl.arange(0, 64, layout=gl.SliceLayout(1, L))
    o_h = gl.arange(0, 32, layout=gl.SliceLayout(0, L))
    if COALESCED:
        C: gl.constexpr = gl.BlockedLayout(size_per_thread=[1, 8], threads_per_warp=[8, 4], warps_per_cta=[4, 1],
                                           order=[1, 0])
        c_t = gl.arange(0, 64, layout=gl.SliceLayout(1, C))
        c_h = gl.arange(0, 32, layout=gl.SliceLayout(0, C))
        x = gl.convert_layout(gl.load(g + c_t[:, None] * 128 + c_h[None, :]), L).to(gl.float32)
    else:
        x = gl.load(g + o_t[:, None] * 128 + o_h[None, :]).to(gl.float32)
    gam = gl.associative_scan(lb * (1.0 / (1.0 + gl.exp2(-A * x))), 0, _add)
    r = o_t[:, None]
    a31 = gl.expand_dims(gl.sum(gl.where(r == 31, gam, 0.0), 0), 0)
    G = gl.expand_dims(gl.sum(gl.where(r == 63, gam, 0.0), 0), 0)
    gl.store(out + o_t[:, None] * 32 + o_h[None, :], gl.exp2(gam - gl.where(r >= 32, G, a31)))


def sass_counts(ck) -> str:
    ops = [op.split(".")[0] for op in re.findall(r"/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][\w.]*)", disassemble(ck))]
    return f"{len(ops)} SASS instructions; most frequent {collections.Counter(ops).most_common(8)}"


def main():
    sig = {"g": "*bf16", "out": "*fp32", "A": "fp32", "lb": "fp32"}
    attrs = {(0,): [["tt.divisibility", 16]], (1,): [["tt.divisibility", 16]]}
    target = GPUTarget("cuda", 90, 32)
    src = triton.compiler.ASTSource(fn=triton_slice, signature=sig, constexprs={}, attrs=attrs)
    print("triton:", sass_counts(triton.compile(src, target=target, options={"num_warps": 4})))
    for coalesced in (False, True):
        src = gluon._runtime.GluonASTSource(fn=gluon_slice, signature={**sig, "COALESCED": "constexpr"},
                                            constexprs={"COALESCED": coalesced}, attrs=attrs)
        name = "gluon, coalesced load:" if coalesced else "gluon:"
        print(name, sass_counts(triton.compile(src, target=target, options={"num_warps": 4})))


if __name__ == "__main__":
    main()
