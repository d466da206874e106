"""Compiles the forward's kernels for sm_90 without a GPU and prints registers and spills (ptxas -v, from the
ptxas that ships with Triton) and SASS instruction counts: in all, and in the longest loop (nvdisasm).
--check-wgmma: compiles the Gluon kernels' variants (the prepare kernel's sixteen, ready x varlen x bounded gate x K,
its two with slices 2 and 3 requested at the start, and its other modes: PREPARE_MODES; the state and transition
kernels' variants below) and exits 1 if ptxas serialized the wgmma products of any (its warning C7511: every
asynchronous product then waits for the one before; 10% of a call where it happened). Run with TRITON_INTERPRET
unset.
Usage: python tools/compile_report.py [--check-wgmma]"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import tempfile
import time

import triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource, GluonJITFunction

from fastkda.forward import prepare_inverse_form
from fastkda.kernels.chunk_prepare import kda_chunk_prepare_kernel
from fastkda.kernels.chunk_prepare_sm90 import kda_chunk_prepare_sm90_kernel
from fastkda.kernels.chunk_state import kda_chunk_state_kernel
from fastkda.kernels.chunk_state_sm90 import kda_chunk_state_sm90_kernel
from fastkda.kernels.common import HALF_BLOCK_SHIFT
from fastkda.kernels.split_sm90 import kda_transition_sm90_kernel

I32_PTRS = {"cu_seqlens", "seg_offsets", "chunk_offsets", "chunk_rows"}
F32_PTRS = {"A_log", "dt_bias", "h0", "ht", "seg_start", "seg_trans", "ws_eg"}
# the state kernel's workspace arguments are tensor descriptors with one chunk (64 rows) as a tile
TILE_DESCS = {"ws_kg": "K", "ws_ku": "K", "ws_qg": "K", "ws_mu": "BT"}
UNALIGNED = {"T", "N", "NT", "NSLOTS", "NT_ALLOC", "NCS", "NSEG", "NSEARCH", "H", "HV", "s_bb", "s_bt", "s_bh", "group_lanes",
             "ahead"}


def compile_kernel(fn, constexprs: dict, warps: int, stages: int, maxnreg=None, ptr_types=None):
    """What the launcher's specialization sees: 16-byte aligned pointers and row strides; ptr_types: pointer types
    other than the defaults below (bf16 data)."""
    sig, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in ("scale", "lower_bound"):
            sig[name] = "fp32"
        elif name.startswith("div_"):
            sig[name] = "i64"
        elif fn is kda_chunk_state_kernel and name in TILE_DESCS:
            sig[name] = f"tensordesc<bf16[64, {constexprs[TILE_DESCS[name]]}]>"
        elif name.startswith("s_") or name in UNALIGNED:
            sig[name] = "i32"
            if name not in UNALIGNED:
                attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            sig[name] = (ptr_types or {}).get(name) or ("*u8" if name == "ready" else "*i32" if name in I32_PTRS
                                                        else "*fp32" if name in F32_PTRS else "*bf16")
            attrs[(i,)] = [["tt.divisibility", 16]]
    source = GluonASTSource if isinstance(fn, GluonJITFunction) else triton.compiler.ASTSource
    src = source(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs)
    t = time.time()
    ck = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, "num_stages": stages, **({"maxnreg": maxnreg} if maxnreg else {})})
    return ck, time.time() - t


def ptxas_log(ck) -> str:
    """What ptxas -v says of a compiled kernel's PTX."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.ptx")
        open(path, "w").write(ck.asm["ptx"])
        return subprocess.run([tool, "-v", "--gpu-name", "sm_90a", path, "-o", os.path.join(d, "k.o")],
                              capture_output=True, text=True, check=True).stderr


def wgmma_serialized(log: str) -> bool:
    return "C7511" in log


def ptxas_verbose(ck) -> str:
    log = ptxas_log(ck)
    facts = [ln.split("info    : ")[-1].strip() for ln in log.splitlines() if "spill" in ln or "Used" in ln]
    return " | ".join(facts + (["WGMMA SERIALIZED (C7511)"] if wgmma_serialized(log) else []))


def disassemble(ck, line_info: bool = False) -> str:
    """The SASS of a compiled kernel (nvdisasm, from the tools that ship with Triton); line_info: with the source
    line of each instruction."""
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "nvdisasm")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        with open(path, "wb") as f:
            f.write(ck.asm["cubin"])
        flags = ["-c", "--print-line-info"] if line_info else ["-c"]
        return subprocess.run([tool, *flags, path], capture_output=True, text=True, check=True).stdout


INSN = re.compile(r"\s*/\*([0-9a-f]+)\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")
LABEL = re.compile(r"\s*\.(L_x_\d+):")
LINE = re.compile(r'//## File "([^"]+)", line (\d+)')
BRANCH_TARGET = re.compile(r"`\(\.(L_x_\d+)\)")


def sass_instructions(ck):
    """[(address, opcode, operands, (file, line) or None)] in program order, and {label: address}."""
    out, labels, src, pending = [], {}, None, []
    for ln in disassemble(ck, line_info=True).splitlines():
        if m := LINE.search(ln):
            src = (os.path.basename(m.group(1)), int(m.group(2)))
        elif m := LABEL.match(ln):
            pending.append(m.group(1))
        elif m := INSN.match(ln):
            addr = int(m.group(1), 16)
            for name in pending:
                labels[name] = addr
            pending = []
            out.append((addr, m.group(2), m.group(3), src))
    return out, labels


def sass_counts(ck) -> str:
    """Static SASS instructions of the kernel and of its longest loop (the prepare kernel's score loop)."""
    insns, labels = sass_instructions(ck)
    addrs = [a for a, *_ in insns]
    loops = [(labels[t.group(1)], a) for a, op, args, _ in insns
             if op == "BRA" and (t := BRANCH_TARGET.search(args)) and labels.get(t.group(1), a) < a]
    longest = max((sum(lo <= x <= hi for x in addrs) for lo, hi in loops), default=0)
    return f"{len(addrs)} SASS instructions, {longest} in the longest loop"


def prepare_variant(warps=4, K=128, bounded=True, ks=32, maxnreg=None, sm90=False, varlen=False, ready=False,
                    modes=None, ptr_types=None):
    """The prepare kernel with the lower-bounded gate (bounded) or the softplus gate, l2norm and beta sigmoid in the
    kernel, bf16 inputs; modes: other constant arguments (None for an absent pointer); ptr_types: other dtypes."""
    c = dict(K=K, BT=64, GATE=2 if bounded else 1, BOUNDED=bounded, HAS_A=True, HAS_BIAS=True,
             L2NORM=True, BETA_MODE=1, IS_VARLEN=varlen, DIAG_FLOOR=10.0, HALF_SHIFT=HALF_BLOCK_SHIFT,
             INTERPRET=False, KS=ks,
             **({"PREFETCH": True, "READY": ready, "PDL": ready or varlen, "LATE_AT_START": False,
                 **({} if ready else {"ready": None})} if sm90 else {}))
    if sm90:    # Ku and Mu by TMA where the launcher takes it (forward.kda_forward)
        c["TMA_OUT"] = K == 128
        if c["TMA_OUT"]:
            ptr_types = {**(ptr_types or {}), "ku_d": f"tensordesc<bf16[64, 32],{nvmma(64)}>",
                         "mu_d": f"tensordesc<bf16[64, 64],{nvmma(128)}>"}
        else:
            c.update(ku_d=None, mu_d=None)
    c.update(modes or {})
    if sm90:    # the inverse's form as the launcher takes it
        c["REG_INVERSE"], c["BETA_COLS_LATE"] = prepare_inverse_form(
            ready=c["READY"], varlen=c["IS_VARLEN"], K=K, gate_mode=c["GATE"], bounded=c["BOUNDED"],
            has_a=c["HAS_A"], has_bias=c["HAS_BIAS"], l2norm=c["L2NORM"], beta_mode=c["BETA_MODE"],
            plain=not {"q", "k", "g", "beta", "A_log", "dt_bias"} & set(ptr_types or {}),
            default_build=c["PREFETCH"] and warps == 4 and maxnreg is None)
    fn = kda_chunk_prepare_sm90_kernel if sm90 else kda_chunk_prepare_kernel
    return compile_kernel(fn, c, warps, 1, maxnreg, ptr_types)


# the other modes of the forward, by what the prepare kernel is built with
PREPARE_MODES = {
    "pre-gated": dict(modes=dict(GATE=0, BOUNDED=False, HAS_A=False, HAS_BIAS=False, A_log=None, dt_bias=None)),
    "lower bound outside the fast range": dict(modes=dict(GATE=2, BOUNDED=False)),
    "no l2norm, raw beta": dict(modes=dict(L2NORM=False, BETA_MODE=0)),
    "beta twice the sigmoid": dict(modes=dict(BETA_MODE=2)),
    "fp16 q, k, g": dict(ptr_types={"q": "*fp16", "k": "*fp16", "g": "*fp16", "beta": "*fp16"}),
    "fp32 g": dict(ptr_types={"g": "*fp32"}),
}


def state_variant(bv=64, warps=4, stages=2, K=128, V=128, transition=False, split=False):
    c = dict(K=K, V=V, BV=bv, NCOL=(V + K) // bv if transition else V // bv, BT=64, HAS_H0=True,
             STORE_HT=True, STORE_HI=False, STATE_V_FIRST=False, IS_VARLEN=False, SPLIT=split or transition,
             TRANSITION=transition, V_DESC=False, PDL=True, INTERPRET=False)
    return compile_kernel(kda_chunk_state_kernel, c, warps, stages)


def nvmma(swizzle: int, bits: int = 16) -> str:
    return (f"NVMMASharedLayout(swizzle_byte_width={swizzle}, element_bitwidth={bits}, rank=2, transposed=False, "
            "fp4_padded=False, cga_layout=[])")


def compile_gluon(fn, c: dict, descs: dict, ints: tuple, pointers: dict):
    """A Gluon kernel as the launcher builds it: descs maps a tensor-descriptor argument to (tile type, swizzle
    bytes, element bits); ints: its int32 arguments; pointers: pointer types other than *fp32."""
    sig, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in c:
            sig[name] = "constexpr"
        elif name in descs:
            tile, swizzle, bits = descs[name]
            sig[name] = f"tensordesc<{tile},{nvmma(swizzle, bits)}>"
        elif name in ints:
            sig[name] = "i32"
        else:
            sig[name] = pointers.get(name, "*fp32")
            attrs[(i,)] = [["tt.divisibility", 16]]
    src = GluonASTSource(fn=fn, signature=sig, constexprs=c, attrs=attrs)
    t = time.time()
    ck = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "num_stages": 1})
    return ck, time.time() - t


def state_sm90_variant(K=128, V=128, dtype="bf16", v_first=False, varlen=False, stages=2, bv=64):
    """The Gluon state kernel run beside the prepare kernel (forward.overlaps_prepare), as the launcher builds it
    (bv = 32: narrow programs; v and o tiles swizzled over their 2 bv bytes, as forward.gluon_desc does; three stages:
    a whole multiprocessor, with the producer warp)."""
    h0_tma = stages == 2 and bv == 64           # the initial state by TMA (forward.launch_overlapped_state)
    c = dict(K=K, V=V, BV=bv, BT=64, HAS_H0=True, STORE_HT=True, STATE_V_FIRST=v_first, IS_VARLEN=varlen,
             STAGES=stages, H0_TMA=h0_tma, PRODUCER=stages == 3, DISCARD=h0_tma, HT_TMA=h0_tma,
             **({} if h0_tma else {"h0_d": None, "ht_d": None}))
    descs = {"kg_d": (f"bf16[64, {K}]", 128, 16), "ku_d": (f"bf16[64, {K}]", 128, 16),
             "qg_d": (f"bf16[64, {K}]", 128, 16), "mu_d": ("bf16[64, 64]", 128, 16),
             "v_d": (f"{dtype}[64, {bv}]", min(128, 2 * bv), 16), "o_d": (f"{dtype}[64, {bv}]", min(128, 2 * bv), 16),
             "eg_d": (f"fp32[1, {K}]", 0, 32)}
    if h0_tma:      # 128-byte swizzle, as forward.gluon_desc gives a tile of 64 rows of 128 bytes or more
        descs["h0_d"] = descs["ht_d"] = (f"fp32[{bv}, {K}]" if v_first else f"fp32[{K}, {bv}]", 128, 32)
    return compile_gluon(kda_chunk_state_sm90_kernel, c, descs, ("T", "N", "NT", "NSLOTS", "HV", "s_vh", "lanes",
                                                                 "group_lanes"),
                         {"ready": "*u8", "cu_seqlens": "*i32", "chunk_offsets": "*i32",
                          **{w: "*bf16" for w in ("ws_kg", "ws_ku", "ws_qg", "ws_mu")}})


def transition_sm90_variant(K=128, V=128, dtype="bf16", varlen=False):
    """The split path's Gluon transition pass (forward.transition_sm90), as the launcher builds it."""
    c = dict(K=K, V=V, BV=64, BT=64, IS_VARLEN=varlen, PDL=True, STAGES=2)
    descs = {"kg_d": (f"bf16[64, {K}]", 128, 16), "ku_d": (f"bf16[64, {K}]", 128, 16),
             "v_d": (f"{dtype}[64, 64]", 128, 16), "eg_d": (f"fp32[1, {K}]", 0, 32)}
    return compile_gluon(kda_transition_sm90_kernel, c, descs, ("T", "N", "NT", "NSLOTS", "NCS", "NSEARCH", "HV",
                                                                "s_vh"),
                         {"cu_seqlens": "*i32", "seg_offsets": "*i32", "chunk_offsets": "*i32"})


STATE_SM90_VARIANTS = (dict(K=128, V=128), dict(K=128, V=128, stages=3), dict(K=128, V=128, varlen=True),
                       dict(K=64, V=64, dtype="fp16", v_first=True), dict(K=128, V=128, stages=3, bv=32),
                       dict(K=64, V=64, dtype="fp16", v_first=True, bv=32))
TRANSITION_SM90_VARIANTS = (dict(K=128, V=128), dict(K=128, V=128, varlen=True), dict(K=64, V=64, dtype="fp16"))


def gluon_variants():
    """(name, compile thunk) of every Gluon kernel variant that --check-wgmma covers."""
    for ready, varlen, bounded, K in itertools.product((True, False), (True, False), (True, False), (128, 64)):
        kw = dict(sm90=True, ready=ready, varlen=varlen, bounded=bounded, K=K)
        yield f"prepare {kw}", lambda kw=kw: prepare_variant(**kw)
    for varlen in (False, True):    # forward.late_slices_at_start
        kw = dict(sm90=True, ready=True, varlen=varlen, modes=dict(LATE_AT_START=True))
        yield f"prepare slices 2 and 3 at the start (varlen={varlen})", lambda kw=kw: prepare_variant(**kw)
    for i, (mode, extra) in enumerate(PREPARE_MODES.items()):
        kw = dict(sm90=True, ready=True, varlen=i % 2 == 1, **extra)
        yield f"prepare {mode} (varlen={i % 2 == 1})", lambda kw=kw: prepare_variant(**kw)
    for kw in STATE_SM90_VARIANTS:
        yield f"state_sm90 {kw}", lambda kw=kw: state_sm90_variant(**kw)
    for kw in TRANSITION_SM90_VARIANTS:
        yield f"transition_sm90 {kw}", lambda kw=kw: transition_sm90_variant(**kw)


def check_wgmma() -> int:
    serialized = 0
    for name, build in gluon_variants():
        ck, dt = build()
        bad = wgmma_serialized(ptxas_log(ck))
        serialized += bad
        print(f"{name} {dt:.1f}s: {'wgmma SERIALIZED' if bad else 'ok'}", flush=True)
    return 1 if serialized else 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--check-wgmma"]:
        sys.exit(check_wgmma())
    for kw in (dict(warps=4), dict(warps=4, ks=64), dict(warps=4, bounded=False), dict(sm90=True),
               dict(sm90=True, bounded=False), dict(sm90=True, ready=True), dict(sm90=True, ready=True, varlen=True)):
        ck, dt = prepare_variant(**kw)
        print(f"prepare {kw} {dt:.1f}s smem={ck.metadata.shared}: {ptxas_verbose(ck)}; {sass_counts(ck)}")
    for kw in (dict(bv=64, warps=4, stages=3), dict(bv=32, warps=4, stages=3), dict(bv=64, warps=4, stages=3, split=True),
               dict(bv=64, warps=4, stages=3, transition=True)):
        ck, dt = state_variant(**kw)
        print(f"state {kw} {dt:.1f}s smem={ck.metadata.shared}: {ptxas_verbose(ck)}; {sass_counts(ck)}")
    for kw in STATE_SM90_VARIANTS:
        ck, dt = state_sm90_variant(**kw)
        print(f"state_sm90 {kw} {dt:.1f}s smem={ck.metadata.shared}: {ptxas_verbose(ck)}; {sass_counts(ck)}")
    for kw in TRANSITION_SM90_VARIANTS:
        ck, dt = transition_sm90_variant(**kw)
        print(f"transition_sm90 {kw} {dt:.1f}s smem={ck.metadata.shared}: {ptxas_verbose(ck)}; {sass_counts(ck)}")
