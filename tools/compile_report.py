"""Compiles the chunk kernel for sm_90 without a GPU and prints registers, spills and shared memory of each
variant (uses the ptxas and cuobjdump that ship with Triton). Usage: python tools/compile_report.py [bv,warps,stages ...]"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import triton
from triton.backends.compiler import GPUTarget

from fastkda.kernels.chunk_fwd import kda_chunk_fwd_kernel

PTR_ARGS = ["q", "k", "v", "g", "beta", "A_log", "dt_bias", "o", "h0", "ht", "hi", "seg_start", "seg_trans",
            "cu_seqlens", "seg_offsets", "chunk_offsets"]
PTR_TYPES = {"cu_seqlens": "*i32", "seg_offsets": "*i32", "chunk_offsets": "*i32", "A_log": "*fp32",
             "dt_bias": "*fp32", "h0": "*fp32", "ht": "*fp32", "seg_start": "*fp32", "seg_trans": "*fp32"}
INT_ARGS = ["s_qb", "s_qt", "s_qh", "s_kb", "s_kt", "s_kh", "s_vb", "s_vt", "s_vh", "s_gb", "s_gt", "s_gh",
            "s_bb", "s_bt", "s_bh", "T", "N", "NT_ALLOC", "NCS", "NSEARCH"]


def compile_variant(bv=64, warps=8, stages=1, K=128, V=128, transition=False, bounded=True, split=False, bt=64):
    const = dict(H=1, HV=1, K=K, V=V, BV=bv, BT=bt, NCOL=(V + K) // bv if transition else V // bv, GATE=2 if bounded else 1,
                 BOUNDED=bounded, HAS_A=True, HAS_BIAS=True, L2NORM=True, BETA_MODE=1, HAS_H0=True,
                 STORE_HT=True, STORE_HI=False, STATE_V_FIRST=False, IS_VARLEN=False, SPLIT=split or transition,
                 TRANSITION=transition, DIAG_FLOOR=10.0, INTERPRET=False)
    sig = {a: PTR_TYPES.get(a, "*bf16") for a in PTR_ARGS}
    sig.update({a: "i32" for a in INT_ARGS})
    sig.update({"scale": "fp32", "lower_bound": "fp32"})
    sig.update({c: "constexpr" for c in const})
    # what the launcher's specialization sees: 16-byte aligned pointers, row strides that are multiples of 16
    names = list(kda_chunk_fwd_kernel.arg_names)
    aligned = PTR_ARGS + ["s_qb", "s_qt", "s_qh", "s_kb", "s_kt", "s_kh", "s_vb", "s_vt", "s_vh", "s_gb", "s_gt", "s_gh"]
    attrs = {(names.index(a),): [["tt.divisibility", 16]] for a in aligned}
    src = triton.compiler.ASTSource(fn=kda_chunk_fwd_kernel, signature=sig, constexprs=const, attrs=attrs)
    t = time.time()
    ck = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, "num_stages": stages})
    dt = time.time() - t
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        open(path, "wb").write(ck.asm["cubin"])
        tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
        res = subprocess.run([tool, "--dump-resource-usage", path], capture_output=True, text=True).stdout
    line = [ln.strip() for ln in res.splitlines() if "REG" in ln]
    return dt, (line[0] if line else res), ck


def ptxas_verbose(ck) -> str:
    """ptxas -v summary (registers, spill stores and loads) of a compiled kernel."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.ptx")
        open(path, "w").write(ck.asm["ptx"])
        res = subprocess.run([tool, "-v", "--gpu-name", "sm_90a", path, "-o", os.path.join(d, "k.o")],
                             capture_output=True, text=True)
    return " | ".join(ln.split("info    : ")[-1] for ln in res.stderr.splitlines() if "spill" in ln or "Used" in ln)


if __name__ == "__main__":
    variants = sys.argv[1:] or ["64,8,1"]
    for var in variants:
        parts = var.split(",")
        bv, warps, stages = map(int, parts[:3])
        flags = set(parts[3:])
        bt = 32 if "bt32" in flags else 64
        dt, usage, ck = compile_variant(bv, warps, stages, transition="trans" in flags, bounded="unb" not in flags, bt=bt)
        print(f"bv={bv} warps={warps} stages={stages} {sorted(flags)} compile {dt:.1f}s smem={ck.metadata.shared} :: "
              f"{ptxas_verbose(ck)}")
