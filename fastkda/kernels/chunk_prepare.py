"""Stage 1 of the KDA forward: everything that does not depend on the state, for all chunks in parallel.

One program per (64-token chunk, value head). It reads q, k, v, g and beta of its chunk once and writes, in
bf16 (KDA.md section 2, with T = (I + A_kk)^-1):
    W  = T diag(beta) (k * exp(gamma))        [BT, K]
    U  = T diag(beta) v                       [BT, V]
    Kd = k * exp(G - gamma)                   [BT, K]    (G: the decay over the whole chunk)
    Qg = scale * q * exp(gamma)               [BT, K]
    M  = scale * the query-key decay scores   [BT, BT]   (lower triangle, diagonal included)
and exp(G) [K] in fp32. Stage 2 (chunk_state.py) runs the state through them.

Decay factors (docs/numerics.md). A chunk is split into four 16-token sub-chunks. With lam the cumulative
log-decay inside a sub-chunk and R_I, E_I the cumulative decay before and after sub-chunk I, each product
exp(gamma_i - gamma_j), i in sub-chunk I and j in J, is formed as
    exp(lam_i) * exp(E_J - gamma_j) * exp(R_I - E_J)          (row factor, column factor, pair factor)
where all three are <= 1 when J < I. For J == I the pair factor exp(-s_I) is >= 1 but at most exp(16 * 5)
for a lower-bounded gate (BOUNDED); other gates factor the diagonal blocks around the sub-chunk midpoint
with the per-step decay floored at exp(-10) (the only approximation; its effect is below 4.5e-5).
"""

from __future__ import annotations

import triton
import triton.language as tl

from fastkda.kernels.common import bf16, find_sequence, gate_log2, mm, mm_acc, mm_f32, sequence_bounds

CHUNK = 64


@triton.jit
def rows_of(x4, NS: tl.constexpr, K: tl.constexpr):
    """[NS, K] per-sub-chunk values broadcast to the 16 * NS rows of a chunk: [16 * NS, K]."""
    return tl.reshape(tl.broadcast_to(x4[:, None, :], [NS, 16, K]), [NS * 16, K])


@triton.jit
def decay_scores(rows, kc, F, blk, i_sub, NS: tl.constexpr, K: tl.constexpr, INTERPRET: tl.constexpr):
    """sum_k rows_ik kc_jk F[I(i), J(j), k] for all row/column pairs of a chunk: [BT, BT].

    rows: [BT, K] (q or k times exp(gamma_i - R_I)); kc: [BT, K] (k times exp(E_J - gamma_j)); F: pair factors
    [NS, NS, K]. One product per column block J, with each row scaled by its pair factor for J."""
    acc = tl.zeros([NS * 16, NS * 16], dtype=tl.float32)
    for J in tl.static_range(NS):
        F_J = rows_of(tl.sum(tl.where(i_sub[None, :, None] == J, F, 0.0), axis=1), NS, K)
        col = tl.trans(bf16(tl.where(blk[:, None] == J, kc, 0.0), INTERPRET))       # [K, BT]
        acc = mm_acc(bf16(rows * F_J, INTERPRET), col, acc, INTERPRET)
    return acc


@triton.jit
def diag_scores(rows, lc, cD, blk, INTERPRET: tl.constexpr):
    """The 16x16 diagonal blocks of the decay scores, factored around each sub-chunk midpoint: [BT, BT].

    lc: floored log2-decay relative to the midpoint [BT, K]; cD: [K, BT] k * exp(-lc), transposed."""
    return tl.where(blk[:, None] == blk[None, :], mm(bf16(rows * tl.exp2(lc), INTERPRET), cD, INTERPRET), 0.0)


@triton.jit
def kda_chunk_prepare_kernel(
    q, k, v, g, beta, A_log, dt_bias, ws_w, ws_u, ws_kd, ws_qg, ws_m, ws_eg, cu_seqlens, chunk_offsets,
    s_qb, s_qt, s_qh, s_kb, s_kt, s_kh, s_vb, s_vt, s_vh, s_gb, s_gt, s_gh, s_bb, s_bt, s_bh,
    T, N, NT, NSLOTS, NSEARCH, scale, lower_bound,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BT: tl.constexpr,
    GATE: tl.constexpr, BOUNDED: tl.constexpr, HAS_A: tl.constexpr, HAS_BIAS: tl.constexpr,
    L2NORM: tl.constexpr, BETA_MODE: tl.constexpr, IS_VARLEN: tl.constexpr, DIAG_FLOOR: tl.constexpr,
    INTERPRET: tl.constexpr,
):
    """Grid: one program per (chunk slot, value head). Fixed length: slot = b * NT + chunk; varlen: slots
    number the chunks of all sequences in order (chunk_offsets), and programs past the last chunk, or past
    the NSLOTS slots of the workspace (a malformed cu_seqlens), exit."""
    pid = tl.program_id(0)
    i_hv = pid % HV
    slot = pid // HV
    i_h = i_hv // (HV // H)
    if IS_VARLEN:
        if slot >= tl.minimum(tl.load(chunk_offsets + N), NSLOTS):
            return
        i_n = find_sequence(chunk_offsets, slot, N, NSEARCH)
        i_c = slot - tl.load(chunk_offsets + i_n)
        i_b = tl.zeros([], dtype=tl.int64)
    else:
        i_n = slot // NT
        i_c = slot % NT
        i_b = i_n.to(tl.int64)
    bos, eos = sequence_bounds(cu_seqlens, i_n, T, IS_VARLEN)
    t0 = (bos + i_c * BT).to(tl.int64)
    NS: tl.constexpr = BT // 16
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, K)
    o_v = tl.arange(0, V)
    valid = (t0 + o_t) < eos
    m_tk = valid[:, None]
    rows = (t0 + o_t).to(tl.int64)[:, None]
    i_sub = tl.arange(0, NS)
    i16 = tl.arange(0, 16)
    same_blk = i_sub[:, None, None, None] == i_sub[None, None, :, None]        # [NS, 1, NS, 1]
    r16 = i16[None, :, None]
    c16 = i16[None, None, :]
    blk = o_t // 16

    # ---- beta and the row norms of q and k over the whole head dim
    b_b = tl.load(beta + i_b * s_bb + i_hv * s_bh + (t0 + o_t) * s_bt, mask=valid, other=0.0).to(tl.float32)
    if BETA_MODE == 1:
        b_b = tl.sigmoid(b_b)
    elif BETA_MODE == 2:
        b_b = 2.0 * tl.sigmoid(b_b)
    b_b = tl.where(valid, b_b, 0.0)
    k += i_b * s_kb + i_h * s_kh
    q += i_b * s_qb + i_h * s_qh
    g += i_b * s_gb + i_hv * s_gh
    if L2NORM:
        kk = tl.load(k + rows * s_kt + o_k[None, :], mask=m_tk, other=0.0).to(tl.float32)
        k_norm = tl.rsqrt(tl.sum(kk * kk, axis=1) + 1e-6)[:, None]
        qq = tl.load(q + rows * s_qt + o_k[None, :], mask=m_tk, other=0.0).to(tl.float32)
        q_norm = tl.rsqrt(tl.sum(qq * qq, axis=1) + 1e-6)[:, None] * scale
    else:
        k_norm = 1.0
        q_norm = scale
    if HAS_A:
        A_scale = tl.exp(tl.load(A_log + i_hv).to(tl.float32))
    else:
        A_scale = 1.0
    out = (slot * HV + i_hv).to(tl.int64)

    # ---- decay scores, one 64-wide slice of the head dim at a time (keeps the fp32 tiles small)
    AK = tl.zeros([BT, BT], dtype=tl.float32)
    AQ = tl.zeros([BT, BT], dtype=tl.float32)
    for h in range(K // 64):  # a loop, not unrolled: one slice of tiles live at a time
        o_h = h * 64 + tl.arange(0, 64)
        b_k = tl.load(k + rows * s_kt + o_h[None, :], mask=m_tk, other=0.0).to(tl.float32) * k_norm
        b_g = tl.load(g + rows * s_gt + o_h[None, :], mask=m_tk, other=0.0).to(tl.float32)
        if HAS_BIAS:
            bias = tl.load(dt_bias + i_hv * K + o_h).to(tl.float32)[None, :]
        else:
            bias = tl.zeros([1, 64], dtype=tl.float32)
        a = tl.where(m_tk, gate_log2(b_g, A_scale, bias, lower_bound, GATE), 0.0)   # log2 units
        a3 = tl.reshape(a, [NS, 16, 64])
        s4 = tl.sum(a3, axis=1)                           # [NS, 64] decay over each sub-chunk
        R = tl.cumsum(s4, axis=0) - s4                    # decay before sub-chunk I
        E = R + s4                                        # decay through sub-chunk I
        G = tl.sum(s4, axis=0)                            # decay over the chunk
        lam = tl.reshape(tl.cumsum(a3, axis=1), [BT, 64])  # decay since the sub-chunk start
        Er = tl.exp2(lam)                                 # exp(gamma_i - R_I) <= 1
        kc = b_k * tl.exp2(rows_of(s4, NS, 64) - lam)     # k * exp(E_J - gamma_j), <= 1 factor
        eR = rows_of(tl.exp2(R), NS, 64)
        # pair factors exp(R_I - E_J), [NS (I), NS (J), 64]; J == I only on the bounded path
        if BOUNDED:
            keep = i_sub[None, :, None] <= i_sub[:, None, None]
        else:
            keep = i_sub[None, :, None] < i_sub[:, None, None]
        F = tl.where(keep, tl.exp2(tl.where(keep, R[:, None, :] - E[None, :, :], 0.0)), 0.0)
        tl.store(ws_kd + out * BT * K + o_t[:, None] * K + o_h[None, :],
                 bf16(kc * rows_of(tl.exp2(G[None, :] - E), NS, 64), INTERPRET))          # k * exp(G - gamma)
        tl.store(ws_eg + out * K + o_h, tl.exp2(G))
        kr = b_k * Er
        # k * exp(gamma), parked in the W slot until T is known
        tl.store(ws_w + out * BT * K + o_t[:, None] * K + o_h[None, :], bf16(kr * eR, INTERPRET))
        AK += decay_scores(kr, kc, F, blk, i_sub, NS, 64, INTERPRET)
        b_q = tl.load(q + rows * s_qt + o_h[None, :], mask=m_tk, other=0.0).to(tl.float32) * q_norm
        qr = b_q * Er
        tl.store(ws_qg + out * BT * K + o_t[:, None] * K + o_h[None, :], bf16(qr * eR, INTERPRET))  # q * exp(gamma)
        AQ += decay_scores(qr, kc, F, blk, i_sub, NS, 64, INTERPRET)
        if not BOUNDED:
            # diagonal blocks around the sub-chunk midpoint, per-step decay floored (module docstring)
            lc = tl.cumsum(tl.maximum(a3, -DIAG_FLOOR * 1.4426950408889634), axis=1)
            lc = tl.reshape(lc - tl.sum(tl.where(r16 == 7, lc, 0.0), axis=1)[:, None, :], [BT, 64])
            cD = tl.trans(bf16(b_k * tl.exp2(-lc), INTERPRET))
            AK += diag_scores(b_k, lc, cD, blk, INTERPRET)
            AQ += diag_scores(b_q, lc, cD, blk, INTERPRET)
    tl.store(ws_m + out * BT * BT + o_t[:, None] * BT + o_t[None, :],
             bf16(tl.where(o_t[:, None] >= o_t[None, :], AQ, 0.0), INTERPRET))

    # ---- T = (I + A_kk)^-1: 16x16 diagonal blocks by forward substitution, then exact merges
    Akk = tl.where(o_t[:, None] > o_t[None, :], AK * b_b[:, None], 0.0)
    Ad = tl.sum(tl.where(same_blk, tl.reshape(Akk, [NS, 16, NS, 16]), 0.0), axis=2)  # [NS, 16, 16]
    Td = tl.where(r16 == c16, 1.0, 0.0) + Ad * 0.0
    for r in tl.static_range(1, 16):
        a_r = tl.sum(tl.where(r16 == r, Ad, 0.0), axis=1)                   # [NS, 16]
        upd = tl.sum(a_r[:, :, None] * Td, axis=1)                           # [NS, 16]
        Td = tl.where(r16 == r, Td - upd[:, None, :], Td)
    Tm = tl.reshape(tl.where(same_blk, Td[:, :, None, :], 0.0), [BT, BT])
    A1 = tl.where((blk[:, None] % 2 == 1) & (blk[None, :] == blk[:, None] - 1), Akk, 0.0)
    Tm = Tm - mm_f32(mm_f32(Tm, A1, "tf32", INTERPRET), Tm, "tf32", INTERPRET)
    if BT == 64:
        A2 = tl.where((o_t[:, None] >= 32) & (o_t[None, :] < 32), Akk, 0.0)
        Tm = Tm - mm_f32(mm_f32(Tm, A2, "tf32", INTERPRET), Tm, "tf32", INTERPRET)
    Tb = bf16(Tm * b_b[None, :], INTERPRET)                                  # T diag(beta)

    # ---- W = T diag(beta) k exp(gamma) over the parked rows, and U = T diag(beta) v
    tl.debug_barrier()  # the parked rows were written by other threads of this program
    p_w = ws_w + out * BT * K + o_t[:, None] * K + o_k[None, :]
    W = mm(Tb, tl.load(p_w), INTERPRET)
    tl.debug_barrier()
    tl.store(p_w, bf16(W, INTERPRET))
    b_v = tl.load(v + i_b * s_vb + i_hv * s_vh + rows * s_vt + o_v[None, :], mask=m_tk, other=0.0)
    tl.store(ws_u + out * BT * V + o_t[:, None] * V + o_v[None, :], bf16(mm(Tb, bf16(b_v, INTERPRET), INTERPRET), INTERPRET))
