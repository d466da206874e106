"""Triton helpers shared by the KDA kernels: matrix products, gate activations, constants."""

from __future__ import annotations

import os

import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_wait

# Per-step log-decay floor (natural units) used only when factoring the 16x16 diagonal blocks of an
# unbounded gate: a step that decays more than exp(-10) = 4.5e-5 is treated as decaying by exactly that much
# inside those blocks, which keeps every factor within exp(+-80). See docs/numerics.md.
DIAG_DECAY_FLOOR = 10.0
# The kernels work in log2 units (exp2 on the special-function unit): natural log-decays times log2(e).
LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)
# The lower-bounded gate's fast path: per-step log-decays of at most BOUNDED_STEP (natural units; lower_bound
# in [-BOUNDED_STEP, 0)). A 32-token block then decays by at most 31 such steps from its first token to its
# last, so both factors of its scores fit within 2^+-HALF_BLOCK_SHIFT once shifted by half that span.
BOUNDED_STEP = 5.0
HALF_BLOCK_SHIFT = 15.5 * BOUNDED_STEP * LOG2E.value


def interpreting() -> bool:
    """True when Triton runs kernels through its CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def prefetch_l2(ptrs):
    """Asks L2 for the 128-byte lines at ptrs. A prefetch returns nothing, so no fence (a MEMBAR, which waits for
    every load in flight) waits for it. Not for the interpreter."""
    tl.inline_asm_elementwise("prefetch.global.L2 [$1]; mov.u32 $0, 0;", "=r,l", [ptrs], dtype=tl.int32,
                              is_pure=False, pack=1)


@triton.jit
def wait_for_prior_grid(PDL: tl.constexpr):
    """Programmatic dependent launch (sm_90+): this kernel's programs may start as the previous kernel's last ones
    exit; here they wait until that kernel has completed and its writes are visible. Nothing this kernel reads from
    an earlier kernel of the call may be read before it. (No kernel signals its dependents early: that measured
    slower, perf-notes v18.)"""
    if PDL:
        gdc_wait()


@triton.jit
def after_prior_grid(x):
    """wait_for_prior_grid for the Gluon kernels: returns x, an int32 scalar, through the assembly that waits
    (griddepcontrol.wait), so that what is computed from it comes after the wait."""
    return tl.inline_asm_elementwise("griddepcontrol.wait; mov.b32 $0, $1;", "=r,r", [x], dtype=tl.int32,
                                     is_pure=False, pack=1)


# ready flags a load of the overlapped state kernel reads (16 bytes: ld.acquire.v4.b32), and their rows' alignment
FLAG_GROUP = tl.constexpr(16)
# int32 words a lane of the overlapped state kernel's programs publish their step counts in after the flag rows: one
# a thread of a 4-warp program (chunk_state_sm90._publish and _seen)
STEP_WORDS = tl.constexpr(128)


@triton.jit
def flag_row(NSLOTS):
    """Row stride of the ready flags (one byte per chunk slot, a row per value head): slots rounded up to
    FLAG_GROUP, so that the overlapped state kernel reads a group of a row's flags with one aligned acquire load."""
    return (NSLOTS + FLAG_GROUP - 1) // FLAG_GROUP * FLAG_GROUP


@triton.jit
def mark_ready(ready, idx):
    """Sets the flag byte ready[idx] once every thread's stores of this program are visible at gpu scope: the
    overlapped state kernel (chunk_state_sm90.py) waits on it. A barrier, then one thread's release store: the
    barrier orders the other threads' stores before it, and the release makes all of them visible before the flag.
    (A gpu-scope fence in every thread, then the flag, cost the prepare kernel 6%: each warp waited for its own
    stores; perf-notes v20.) Not for the interpreter."""
    tl.debug_barrier()
    tl.inline_asm_elementwise(
        "{ .reg .pred p; .reg .b32 t; .reg .b16 one; mov.u32 t, %tid.x; setp.eq.u32 p, t, 0; mov.b16 one, 1; "
        "@p st.release.gpu.global.b8 [$1], one; mov.u32 $0, 0; }", "=r,l", [ready + idx], dtype=tl.int32,
        is_pure=False, pack=1)


@triton.jit
def cast(x, DTYPE: tl.constexpr, INTERPRET: tl.constexpr):
    """x.to(DTYPE), rounding to nearest even also under the interpreter, whose bf16 conversion truncates."""
    if INTERPRET and DTYPE == tl.bfloat16:
        bits = x.to(tl.float32).to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return bits.to(tl.float32, bitcast=True).to(DTYPE)
    return x.to(DTYPE)


@triton.jit
def bf16(x, INTERPRET: tl.constexpr):
    """Matrix-product operand: bf16, whose range holds the exp(+-80) decay factors that fp16's cannot."""
    return cast(x, tl.bfloat16, INTERPRET)


@triton.jit
def mm(a, b, INTERPRET: tl.constexpr):
    """a @ b with 16-bit operands and fp32 accumulation; 2-D or batched 3-D.

    The interpreter of Triton 3.6 multiplies bf16 operands wrongly, so there the product runs in fp32."""
    if INTERPRET:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    return tl.dot(a, b)


@triton.jit
def mm_acc(a, b, acc, INTERPRET: tl.constexpr):
    """acc + a @ b, as `mm`."""
    if INTERPRET:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    return tl.dot(a, b, acc)


@triton.jit
def mm_f32(a, b, PRECISION: tl.constexpr, INTERPRET: tl.constexpr):
    """a @ b with fp32 operands on tensor cores (PRECISION "tf32" or "tf32x3")."""
    if INTERPRET:
        return tl.dot(a, b, input_precision="ieee")
    return tl.dot(a, b, input_precision=PRECISION)


@triton.jit
def log2_fast(x, INTERPRET: tl.constexpr):
    """log2 on the special-function unit (lg2.approx, relative error ~2^-22); libdevice's is a polynomial."""
    if INTERPRET:
        return tl.log2(x)
    return tl.inline_asm_elementwise("lg2.approx.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def rcp_fast(x, INTERPRET: tl.constexpr):
    """1 / x on the special-function unit (rcp.approx, 1 ulp); Triton's division rounds to IEEE, a long
    instruction sequence on every element."""
    if INTERPRET:
        return 1.0 / x
    return tl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=tl.float32, is_pure=True, pack=1)


@triton.jit
def sigmoid_fast(x, INTERPRET: tl.constexpr):
    """1 / (1 + exp(-x)) with exp2 and the reciprocal on the special-function unit."""
    return rcp_fast(1.0 + tl.exp2(x * -LOG2E), INTERPRET)


@triton.jit
def gate_log2(graw, A_scale, bias, lower_bound, GATE: tl.constexpr, INTERPRET: tl.constexpr):
    """Log-decay in log2 units from the raw gate input (fp32 tile); bias is a [1, K] row.
    GATE 0: pre-gated, a = g. GATE 1: a = -exp(A_log) * softplus(g + dt_bias).
    GATE 2: a = lower_bound * sigmoid(exp(A_log) * (g + dt_bias)). A_scale is exp(A_log) (or 1).
    The factors are folded into the row so that each element takes one fused multiply-add before its exp2."""
    if GATE == 0:
        return graw * LOG2E
    elif GATE == 1:
        x = graw * LOG2E + bias * LOG2E
        # softplus in log2 units: log2(1 + 2^x), with x itself past 2^-24 relative
        return -A_scale * tl.where(x > 28.0, x, log2_fast(1.0 + tl.exp2(x), INTERPRET))
    else:
        s = A_scale * -LOG2E
        return lower_bound * LOG2E * rcp_fast(1.0 + tl.exp2(graw * s + bias * s), INTERPRET)


@triton.jit
def halves_operands(b_k, b_q, gam, end_e, end_l, late, INTERPRET: tl.constexpr):
    """The factored operands of the halves' scores (chunk_prepare.levels_halves): t = gamma - (the gamma of the
    half's last token) - HALF_SHIFT, kf = k exp2(t), qf = q exp2(t), kr = k exp2(-t), and c = exp2((G - a31) / 2)
    on late rows (1 on early ones). end_e, end_l: a31 + HALF_SHIFT and G + HALF_SHIFT, [1, KS] rows (at a bounded
    gate the sm_90 kernel adds the shift where each thread holds 2 columns, not 8). exp2(-t) as the reciprocal of
    exp2(t): t is within +-HALF_SHIFT wherever the factors are used, so neither flushes, and the negation of t is
    saved."""
    t = gam - tl.where(late, end_l, end_e)
    f = tl.exp2(t)
    kf = b_k * f
    qf = b_q * f
    kr = b_k * rcp_fast(f, INTERPRET)
    c = tl.where(late, tl.exp2((end_l - end_e) * 0.5), 1.0)
    return kf, qf, kr, c


@triton.jit
def varlen_chunk_rows(chunk_rows, slot):
    """(first token row, end of its sequence's rows), as int64, of a varlen batch's workspace slot, from the pairs
    kda_schedule_kernel wrote: one load's round trip where finding the sequence and then its bounds took two. A slot
    past the last chunk has first >= end."""
    t0 = tl.load(chunk_rows + 2 * slot).to(tl.int64)
    eos = tl.load(chunk_rows + 2 * slot + 1).to(tl.int64)
    return t0, eos


@triton.jit
def sequence_bounds(cu_seqlens, i_n, T, IS_VARLEN: tl.constexpr):
    """(bos, eos) of sequence i_n in its batch row; a malformed cu_seqlens is clamped into [0, T], so no
    kernel ever reads or writes outside the tensors it was given."""
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
        bos = tl.minimum(tl.maximum(bos, 0), T)
        eos = tl.minimum(tl.maximum(eos, bos), T)
    else:
        bos = (i_n * 0).to(tl.int64)   # no tl.zeros: the sm_90 (Gluon) kernel calls this too
        eos = bos + T
    return bos, eos


@triton.jit
def find_sequence(offsets, idx, N, NSEARCH):
    """The n in [0, N) with offsets[n] <= idx < offsets[n + 1], for non-decreasing offsets (binary search)."""
    lo = idx * 0
    hi = lo + N - 1
    for _ in range(NSEARCH):
        mid = (lo + hi + 1) // 2
        ok = tl.load(offsets + mid) <= idx
        lo = tl.where(ok, mid, lo)
        hi = tl.where(ok, hi, mid - 1)
    return lo


@triton.jit
def segments_per_sequence(T, NCS):
    """Segments of each sequence of a fixed-length batch (at least one, for empty sequences)."""
    return tl.maximum(tl.cdiv(tl.cdiv(T, 64), NCS), 1)


@triton.jit
def segment_of(i_g, seg_offsets, N, T, NCS, NSEARCH, IS_VARLEN: tl.constexpr):
    """(sequence, segment within it, live) of the split path's segment i_g: a fixed-length batch's sequences have
    segments_per_sequence each; a varlen batch's lie at seg_offsets (kda_schedule_kernel), none past seg_offsets[N]
    (a program there is not live)."""
    if IS_VARLEN:
        live = i_g < tl.load(seg_offsets + N)
        i_n = find_sequence(seg_offsets, i_g, N, NSEARCH)
        i_s = i_g - tl.load(seg_offsets + i_n)
    else:
        sps = segments_per_sequence(T, NCS)
        live = True
        i_n = i_g // sps
        i_s = i_g % sps
    return i_n, i_s, live


@triton.jit
def segment_chunks(i_n, i_s, chunk_offsets, bos, eos, NT, NSLOTS, NCS, BT: tl.constexpr, IS_VARLEN: tl.constexpr):
    """(batch row, first workspace slot, first chunk, end chunk, last) of segment i_s of sequence i_n (tokens
    bos..eos): the sequence's chunks from slot chunk_offsets[i_n] (varlen) or i_n NT, the segment's NCS of them from
    chunk i_s NCS, its end clamped to the workspace's NSLOTS slots (a malformed cu_seqlens can ask for more);
    last: whether it is the sequence's last segment (before the clamp)."""
    if IS_VARLEN:
        i_b = (i_n * 0).to(tl.int64)
        slot0 = tl.load(chunk_offsets + i_n).to(tl.int64)
    else:
        i_b = i_n.to(tl.int64)
        slot0 = i_b * NT
    n_chunks = tl.cdiv(eos - bos, BT).to(tl.int32)
    c_begin = i_s * NCS
    c_end = tl.minimum(c_begin + NCS, n_chunks)
    is_last = c_end >= n_chunks
    return i_b, slot0, c_begin, tl.minimum(c_end, NSLOTS - slot0), is_last


@triton.jit
def initial_state(h0, i_n, i_hv, HV, o_k, cols, K: tl.constexpr, V: tl.constexpr, BV: tl.constexpr,
                  HAS_H0: tl.constexpr, STATE_V_FIRST: tl.constexpr):
    """State columns cols of sequence i_n's initial state in h0 (state_ptrs) as [K, BV] fp32; zeros without one."""
    if HAS_H0:
        return tl.load(state_ptrs(h0, i_n, i_hv, HV, o_k, cols, K, V, STATE_V_FIRST)).to(tl.float32)
    else:
        return tl.zeros([K, BV], dtype=tl.float32)


@triton.jit
def state_offsets(o_k, cols, K: tl.constexpr, V: tl.constexpr, STATE_V_FIRST: tl.constexpr):
    """Offsets of a [K, BV] block of a [K, V] state stored K-first, or of a [V, K] state stored V-first."""
    if STATE_V_FIRST:
        return cols[None, :] * K + o_k[:, None]
    return o_k[:, None] * V + cols[None, :]


@triton.jit
def state_ptrs(base, i, i_hv, HV, o_k, cols, K: tl.constexpr, V: tl.constexpr, STATE_V_FIRST: tl.constexpr):
    """Pointers to the [K, BV] block (state columns cols) of state [i, i_hv] in a [*, HV, K, V] tensor at base
    ([*, HV, V, K] with STATE_V_FIRST): initial, final and intermediate states."""
    return base + ((i * HV + i_hv) * K).to(tl.int64) * V + state_offsets(o_k, cols, K, V, STATE_V_FIRST)
