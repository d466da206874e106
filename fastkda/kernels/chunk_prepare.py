"""Stage 1 of the KDA forward: everything that does not depend on the state, for all chunks in parallel.

One program per (64-token chunk, value head). It reads q, k, g and beta of its chunk once and writes, in
bf16 (KDA.md section 2, with T = (I + A_kk)^-1 and Tb = T diag(beta)):
    Kg = k * exp(gamma)                       [BT, K]
    Qg = scale * q * exp(gamma)               [BT, K]
    Ku = Tb^T (k * exp(G - gamma))            [BT, K]    (G: the decay over the whole chunk)
    Mu = M Tb                                 [BT, BT]   (M: scale * the query-key decay scores, lower
                                                          triangle with the diagonal)
and exp(G) [K] in fp32. Stage 2 (chunk_state.py) runs the state through them and v: with the residuals
R = v - Kg S before the solve, the new values are Tb R, so o = Qg S + Mu R and the update is Ku^T R. The
triangular solve is folded into the key and score rows, which v never has to visit here.

Decay factors (docs/numerics.md). exp(gamma_i - gamma_j) <= 1 for i >= j, but no single factoring
exp(gamma_i - c) exp(c - gamma_j) fits in floating point over a whole chunk. The scores are built from
products, each over the pairs where its anchor c lies between j and i, one KS-wide slice of the key dims at
a time:
    rows 32-63 with columns 0-31            around token 31 (both factors <= 1),
then the two 32x32 diagonal blocks around the end of each, both exponents shifted by HALF_SHIFT: exact when
no token decays by more than 2^-(2 HALF_SHIFT) to the end of its half, which 31 steps of at most
exp(-BOUNDED_STEP) guarantee for a lower-bounded gate (BOUNDED) and the kernel checks per slice for the
others. There the two blocks and level 1 take two products with no mask (levels_halves: level 1's rows are the
second block's rows times a per-column constant). Where the check fails, two levels instead:
    rows 16-31 with columns 0-15 (and 48-63 with 32-47) around token 15 (47),
and the 16x16 diagonal blocks around the end of each block, with every step's decay floored at
exp(-DIAG_FLOOR) = exp(-10) inside these blocks only and the exponents shifted by 7.5 such steps (factors
within 2^+-108); a pair across such a step decays by less than 4.5e-5 either way, which is the only
approximation made.

The inverse T takes fp16 products (tf32's mantissa, half the operand bytes); a chunk whose T overflows fp16
is solved again with tf32 products.
"""

from __future__ import annotations

import triton
import triton.language as tl

from fastkda.kernels.common import (LOG2E, bf16, gate_log2, halves_operands, mm, mm_acc, mm_f32,
                                   sigmoid_fast, varlen_chunk_rows)

CHUNK = 64
# rows of a chunk are int32 offsets from its first row: 64 of any token stride must fit
MAX_ROW_STRIDE = 2**31 // CHUNK
SOLVE_PRECISION: tl.constexpr = tl.constexpr("tf32")


@triton.jit
def _add2(a0, a1, b0, b1):
    return a0 + b0, a1 + b1


@triton.jit
def row_of(x, o_t, r):
    """Row r of a [64, W] tile as a [1, W] row (a sum with one nonzero term, so exact)."""
    return tl.sum(tl.where(o_t[:, None] == r, x, 0.0), 0)[None, :]


@triton.jit
def row_pair(x, o_t, r0: tl.constexpr, r1: tl.constexpr, INTERPRET: tl.constexpr):
    """Rows r0 and r1 of a [64, W] tile as [1, W] rows, in one reduction pass: its cross-warp exchange is the
    cost, so the two rows share it. The interpreter, for which a two-operand reduction is slow, takes them
    one by one."""
    if INTERPRET:
        return row_of(x, o_t, r0), row_of(x, o_t, r1)
    r = o_t[:, None]
    e0, e1 = tl.reduce((tl.where(r == r0, x, 0.0), tl.where(r == r1, x, 0.0)), 0, _add2)
    return e0[None, :], e1[None, :]


@triton.jit
def scores(k_rows, q_rows, k_cols, keep, AK, AQ, INTERPRET: tl.constexpr):
    """Adds one anchoring level of the decay scores: AK += keep * (k_rows @ k_cols^T), AQ likewise with q_rows.
    Rows and columns arrive already scaled by their decay factors; keep None: the factors' zeros already
    confine the products to the level's pairs, so they accumulate on the tensor cores."""
    cols = tl.trans(bf16(k_cols, INTERPRET))
    if keep is None:
        AK = mm_acc(bf16(k_rows, INTERPRET), cols, AK, INTERPRET)
        AQ = mm_acc(bf16(q_rows, INTERPRET), cols, AQ, INTERPRET)
    else:
        AK += tl.where(keep, mm(bf16(k_rows, INTERPRET), cols, INTERPRET), 0.0)
        AQ += tl.where(keep, mm(bf16(q_rows, INTERPRET), cols, INTERPRET), 0.0)
    return AK, AQ


@triton.jit
def anchored_level(b_k, b_q, gam, anc, rows, keep, AK, AQ, INTERPRET: tl.constexpr):
    """Adds a level whose rows (the mask rows) decay to the anchor anc and whose other tokens, its columns, decay
    from it: both factors exp2(-|gamma - anc|) <= 1. A token is a row or a column of a level, never both, so one
    exp2 gives both factors."""
    e = tl.exp2(tl.minimum(tl.where(rows, gam - anc, anc - gam), 0.0))
    return scores(b_k * tl.where(rows, e, 0.0), b_q * tl.where(rows, e, 0.0), b_k * tl.where(rows, 0.0, e), keep,
                  AK, AQ, INTERPRET)


@triton.jit
def levels_halves(b_k, b_q, gam, a31, G, late, AK, AQ, p_kd, HALF_SHIFT: tl.constexpr, INTERPRET: tl.constexpr):
    """The scores of the two 32x32 diagonal blocks and the cross block between them, when no token decays by
    more than 2^-(2 HALF_SHIFT) to the end of its half. One pair of factors per element, f = exp2(t) and
    r = exp2(-t) with t = gamma - (the gamma of the half's last token) - HALF_SHIFT, serves the diagonal blocks as
    they are, and the cross block and exp(G - gamma) times per-column constants (docs/numerics.md). Two products
    per slice, both accumulated on the tensor cores without a mask:
        rows f (late rows times exp2(G - a31)) with the early columns r: the early block and the cross block;
        rows f with the late columns r: the late block.
    Whatever else they add lies above the diagonal, which the caller discards. Stores k exp(G - gamma) at p_kd."""
    kf, qf, kr, c = halves_operands(b_k, b_q, gam, a31 + HALF_SHIFT, G + HALF_SHIFT, late, INTERPRET)
    # late rows: exp2(gamma_i - a31 - s) = f_i c c with c in [2^-HALF_SHIFT, 1]: an underflow of either product
    # stands for a true row factor below 2^-126, so a lost term is below 2^-126 2^HALF_SHIFT
    AK, AQ = scores(kf * c * c, qf * c * c, tl.where(late, 0.0, kr), None, AK, AQ, INTERPRET)
    # k exp(gamma_end - gamma) (exp(a31 - gamma) early, exp(G - gamma) late), early rows times exp(G - a31)
    tl.store(p_kd, bf16(kr * tl.exp2(-HALF_SHIFT) * tl.where(late, 1.0, tl.exp2(G - a31)), INTERPRET))
    return scores(kf, qf, tl.where(late, kr, 0.0), None, AK, AQ, INTERPRET)


@triton.jit
def levels_quarters(a, b_k, b_q, gam, a31, G, late, cross16, diag16, AK, AQ, p_kd, DIAG_FLOOR: tl.constexpr,
                    INTERPRET: tl.constexpr):
    """The scores for any decay: the cross level around token 31, rows 16-31 with columns 0-15 of each half
    around its token 15 (both factors <= 1), then the 16x16 diagonal blocks around the end of each, with every
    step's decay floored at exp(-DIAG_FLOOR) and both exponents shifted by 7.5 such steps. Stores k exp(G - gamma)
    at p_kd."""
    tl.store(p_kd, bf16(b_k * tl.exp2(G - gam), INTERPRET))
    AK, AQ = anchored_level(b_k, b_q, gam, a31, late, None, AK, AQ, INTERPRET)
    a15, a47 = row_pair(gam, tl.arange(0, 64), 15, 47, INTERPRET)
    late16 = tl.arange(0, 64)[:, None] % 32 >= 16
    AK, AQ = anchored_level(b_k, b_q, gam, tl.where(late, a47, a15), late16, cross16, AK, AQ, INTERPRET)
    KS: tl.constexpr = a.shape[1]
    af3 = tl.maximum(tl.reshape(a, [4, 16, KS]), -DIAG_FLOOR * LOG2E)
    d = tl.reshape(af3 - tl.cumsum(af3, axis=1, reverse=True), [64, KS]) - 7.5 * DIAG_FLOOR * LOG2E
    return scores(b_k * tl.exp2(d), b_q * tl.exp2(d), b_k * tl.exp2(-d), diag16, AK, AQ, INTERPRET)


@triton.jit
def invert_unit_lower(A, FP16: tl.constexpr, INTERPRET: tl.constexpr):
    """(I + A)^-1 for a strictly lower triangular [64, 64] A, by doubling the inverted diagonal blocks,
    1 -> 2 -> ... -> 64: with T the inverse of the block-diagonal part, [[T1, 0], [-T2 A21 T1, T2]] =
    T - T A_off T is exact at every level. FP16: the products take fp16 operands (the mantissa of tf32, half
    the bytes; values past 65504 become inf), else tf32."""
    i_r = tl.arange(0, 64)[:, None]
    i_c = tl.arange(0, 64)[None, :]
    Tm = tl.where(i_r == i_c, 1.0, 0.0) - tl.where((i_r % 2 == 1) & (i_c == i_r - 1), A, 0.0)
    for lv in tl.static_range(1, 6):
        b = 1 << lv
        A_off = tl.where(((i_r // b) % 2 == 1) & (i_c // b == i_r // b - 1), A, 0.0)
        if FP16:
            Th = Tm.to(tl.float16)
            Tm = Tm - mm(mm(Th, A_off.to(tl.float16), INTERPRET).to(tl.float16), Th, INTERPRET)
        else:
            Tm = Tm - mm_f32(mm_f32(Tm, A_off, SOLVE_PRECISION, INTERPRET), Tm, SOLVE_PRECISION, INTERPRET)
    return Tm


@triton.jit(do_not_specialize=["H", "HV"])  # one compilation for every head count
def kda_chunk_prepare_kernel(
    q, k, g, beta, A_log, dt_bias, ws_kg, ws_ku, ws_qg, ws_mu, ws_eg, chunk_rows,
    s_qb, s_qt, s_qh, s_kb, s_kt, s_kh, s_gb, s_gt, s_gh, s_bb, s_bt, s_bh,
    T, NT, scale, lower_bound,
    H, HV, K: tl.constexpr, BT: tl.constexpr,
    GATE: tl.constexpr, BOUNDED: tl.constexpr, HAS_A: tl.constexpr, HAS_BIAS: tl.constexpr,
    L2NORM: tl.constexpr, BETA_MODE: tl.constexpr, IS_VARLEN: tl.constexpr, DIAG_FLOOR: tl.constexpr,
    HALF_SHIFT: tl.constexpr, INTERPRET: tl.constexpr, KS: tl.constexpr = 32,
):
    """Grid: one program per (chunk slot, value head). Fixed length: slot = b * NT + chunk; varlen: slots
    number the chunks of all sequences in order (kda_schedule_kernel's chunk_rows gives each slot's first token row and
    its sequence's end), and programs past the last chunk exit."""
    pid = tl.program_id(0)
    i_hv = pid % HV
    slot = pid // HV
    i_h = i_hv // (HV // H)
    if IS_VARLEN:
        t0, eos = varlen_chunk_rows(chunk_rows, slot)
        i_b = t0 * 0
    else:
        i_b = (slot // NT).to(tl.int64)
        t0 = (slot - i_b * NT) * BT
        eos = t0 * 0 + T
    # at fixed length never taken, but with this exit ptxas schedules the program as it does the varlen one, which
    # measured 7% faster (docs/perf-notes.md, v9)
    if t0 >= eos:
        return
    tl.static_assert(BT == 64, "the anchoring levels assume 64-token chunks")
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, K)
    valid = (t0 + o_t) < eos
    m_tk = valid[:, None]
    # the pointers hold the chunk's first row (int64), the tiles' rows are int32 offsets from there (the API copies
    # a tensor whose token stride is MAX_ROW_STRIDE or more)
    i_r = o_t[:, None]

    # ---- beta and the row norms of q and k over the whole head dim (q and k are read again per slice
    # below, mostly from L2: holding the full tiles instead spilled and halved the speed, docs/perf-notes.md)
    b_b = tl.load(beta + i_b * s_bb + i_hv * s_bh + t0 * s_bt + o_t * s_bt, mask=valid, other=0.0).to(tl.float32)
    if BETA_MODE == 1:
        b_b = sigmoid_fast(b_b, INTERPRET)
    elif BETA_MODE == 2:
        b_b = 2.0 * sigmoid_fast(b_b, INTERPRET)
    b_b = tl.where(valid, b_b, 0.0)
    k += i_b * s_kb + i_h * s_kh + t0 * s_kt
    q += i_b * s_qb + i_h * s_qh + t0 * s_qt
    g += i_b * s_gb + i_hv * s_gh + t0 * s_gt
    # the first slice of g is loaded now, each next one a slice ahead; g is read once (evict_first: -1%, v13)
    g_next = tl.load(g + i_r * s_gt + tl.arange(0, KS)[None, :], mask=m_tk, other=0.0,
                     eviction_policy="evict_first")
    if L2NORM:
        kk = tl.load(k + i_r * s_kt + o_k[None, :], mask=m_tk, other=0.0).to(tl.float32)
        k_norm = tl.rsqrt(tl.sum(kk * kk, axis=1) + 1e-6)[:, None]
        qq = tl.load(q + i_r * s_qt + o_k[None, :], mask=m_tk, other=0.0).to(tl.float32)
        q_norm = tl.rsqrt(tl.sum(qq * qq, axis=1) + 1e-6)[:, None] * scale
    else:
        k_norm = 1.0
        q_norm = scale
    if HAS_A:
        A_scale = tl.exp(tl.load(A_log + i_hv).to(tl.float32))
    else:
        A_scale = 1.0
    out = (slot * HV + i_hv).to(tl.int64)

    # ---- decay scores, one KS-wide slice of the head dim at a time (keeps the fp32 tiles small)
    AK = tl.zeros([BT, BT], dtype=tl.float32)
    AQ = tl.zeros([BT, BT], dtype=tl.float32)
    i_c = o_t[None, :]
    cross16 = ((i_r % 32) >= 16) & ((i_c % 32) < 16) & (i_r // 32 == i_c // 32)
    diag16 = (i_r // 16) == (i_c // 16)
    late = i_r >= 32
    for h in range(K // KS):  # a loop, not unrolled: one slice of tiles live at a time
        o_h = h * KS + tl.arange(0, KS)
        b_g = g_next.to(tl.float32)
        g_next = tl.load(g + i_r * s_gt + KS + o_h[None, :], mask=m_tk & (KS + o_h < K)[None, :], other=0.0,
                         eviction_policy="evict_first")
        if BOUNDED:  # the slice's keys and queries are requested before the gate's running sum, which hides
            # their latency; the other gates' longer loop has no registers to spare for that
            kraw = tl.load(k + i_r * s_kt + o_h[None, :], mask=m_tk, other=0.0)
            qraw = tl.load(q + i_r * s_qt + o_h[None, :], mask=m_tk, other=0.0)
        if HAS_BIAS:
            bias = tl.load(dt_bias + i_hv * K + o_h).to(tl.float32)[None, :]
        else:
            bias = tl.zeros([1, KS], dtype=tl.float32)
        a = tl.where(m_tk, gate_log2(b_g, A_scale, bias, lower_bound, GATE, INTERPRET), 0.0)   # log2 units
        gam = tl.cumsum(a, axis=0)                                                 # decay through row i
        a31, G = row_pair(gam, o_t, 31, 63, INTERPRET)         # anchors; G: the decay over the chunk
        if not BOUNDED:
            kraw = tl.load(k + i_r * s_kt + o_h[None, :], mask=m_tk, other=0.0)
            qraw = tl.load(q + i_r * s_qt + o_h[None, :], mask=m_tk, other=0.0)
        b_k = kraw.to(tl.float32) * k_norm
        b_q = qraw.to(tl.float32) * q_norm
        eg = tl.exp2(gam)
        # what this program writes for the state kernel is not read again here: streamed past L2 (evict_first),
        # which keeps the q, k and g lines of the programs in flight there (-4% at H=96, docs/perf-notes.md v9)
        tl.store(ws_qg + out * BT * K + o_t[:, None] * K + o_h[None, :], bf16(b_q * eg, INTERPRET),
                 eviction_policy="evict_first")                                       # q exp(gamma)
        tl.store(ws_kg + out * BT * K + o_t[:, None] * K + o_h[None, :], bf16(b_k * eg, INTERPRET),
                 eviction_policy="evict_first")                                       # k exp(gamma)
        tl.store(ws_eg + out * K + o_h[None, :], tl.exp2(G))
        # k exp(G - gamma) is parked in the Ku slot until T is known
        p_kd = ws_ku + out * BT * K + o_t[:, None] * K + o_h[None, :]
        # steps of at most exp(-BOUNDED_STEP) always fit the 32-token halves; other gates are checked per slice
        if BOUNDED or tl.max(tl.maximum(-a31, a31 - G)) <= 2 * HALF_SHIFT:
            AK, AQ = levels_halves(b_k, b_q, gam, a31, G, late, AK, AQ, p_kd, HALF_SHIFT, INTERPRET)
        else:
            AK, AQ = levels_quarters(a, b_k, b_q, gam, a31, G, late, cross16, diag16, AK, AQ, p_kd, DIAG_FLOOR,
                                     INTERPRET)
    p_m = ws_mu + out * BT * BT + o_t[:, None] * BT + o_t[None, :]
    tl.store(p_m, bf16(tl.where(o_t[:, None] >= o_t[None, :], AQ, 0.0), INTERPRET))  # M, parked likewise

    # ---- T = (I + A_kk)^-1, with fp16 products; in the rare chunk where those overflow (a transition that
    # grows by 2^16 within 64 tokens), again with tf32 products. The second solve rebuilds A_kk in another order
    # (select, then scale): built from the first one's values, its fp32 operand tiles were staged in shared memory
    # ahead of the branch and held through the first solve (112 instead of 32 KB per program, -3% time)
    Akk = tl.where(o_t[:, None] > o_t[None, :], AK * b_b[:, None], 0.0)
    Tm = invert_unit_lower(Akk, True, INTERPRET)
    if tl.sum(tl.where(tl.abs(Tm) <= 3.0e38, 0, 1)) != 0:  # inf or NaN
        Tm = invert_unit_lower(tl.where(o_t[:, None] > o_t[None, :], AK, 0.0) * b_b[:, None], False, INTERPRET)
    Tb = bf16(Tm * b_b[None, :], INTERPRET)                                  # T diag(beta)

    # ---- the solve folded into the parked rows: Ku = Tb^T Kd, Mu = M Tb
    tl.debug_barrier()  # the parked rows were written by other threads of this program
    p_ku = ws_ku + out * BT * K + o_t[:, None] * K + o_k[None, :]
    Ku = mm(tl.trans(Tb), tl.load(p_ku), INTERPRET)
    Mu = mm(tl.load(p_m), Tb, INTERPRET)
    tl.debug_barrier()
    tl.store(p_ku, bf16(Ku, INTERPRET), eviction_policy="evict_first")
    tl.store(p_m, bf16(Mu, INTERPRET), eviction_policy="evict_first")
