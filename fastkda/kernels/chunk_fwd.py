"""The fused chunk kernel of the KDA forward: one program walks the 64-token chunks of one segment of one
sequence for one value head and one block of BV state columns, keeping the state in fp32 registers.

Per chunk it reads q, k, v, g and beta once and does everything on chip: in-kernel l2norm, gate and beta
activations, the in-chunk cumulative decay, the decay-weighted key-key and query-key matrices, the
inverse (I + A)^-1 by blockwise forward substitution, W and U, the state-dependent products, the output
and the state update (KDA.md section 2). Nothing but the output (and states on request) goes to memory.

The same kernel serves the split-sequence path (docs/split.md): with TRANSITION it computes, for one
segment, the affine map S_end = P S_start + B as a run from S = [0 | I] over the columns [V | K], and
without TRANSITION it starts each segment from a state the combine kernel wrote.

Decay factors (docs/numerics.md). Chunks are split into four 16-token sub-chunks. With lam the cumsum of
the log-decay inside a sub-chunk and R_I, E_I the cumulative decay before and after sub-chunk I, every
product exp(gamma_i - gamma_j), i in I, j in J, is formed as
    exp(lam_i) * exp(E_J - gamma_j) * exp(R_I - E_J)          (row factor, column factor, pair factor)
where all three are <= 1 for J < I. For J == I the pair factor exp(-s_I) is >= 1 but at most
exp(16 * 5) for a lower-bounded gate (BOUNDED); other gates compute the diagonal blocks separately
around the sub-chunk midpoint with the per-step decay floored at exp(-10).
"""

from __future__ import annotations

import triton
import triton.language as tl

from fastkda.kernels.common import bf16, cast, gate_log2, mm, mm_acc, mm_f32

CHUNK = 64


@triton.jit
def sequence_bounds(cu_seqlens, i_n, T, IS_VARLEN: tl.constexpr):
    """(bos, eos) of sequence i_n in its batch row; a malformed cu_seqlens is clamped into [0, T]."""
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
        bos = tl.minimum(tl.maximum(bos, 0), T)
        eos = tl.minimum(tl.maximum(eos, bos), T)
    else:
        bos = tl.zeros([], dtype=tl.int64)
        eos = bos + T
    return bos, eos


@triton.jit
def segments_per_sequence(T, NCS):
    """Segments of each sequence of a fixed-length batch (at least one, for empty sequences)."""
    return tl.maximum(tl.cdiv(tl.cdiv(T, 64), NCS), 1)


@triton.jit
def state_offsets(o_k, cols, K: tl.constexpr, V: tl.constexpr, STATE_V_FIRST: tl.constexpr):
    """Offsets of a [K, BV] block of a [K, V] state stored K-first, or of a [V, K] state stored V-first."""
    if STATE_V_FIRST:
        return cols[None, :] * K + o_k[:, None]
    return o_k[:, None] * V + cols[None, :]


@triton.jit
def rows_of(x4, NS: tl.constexpr, K: tl.constexpr):
    """[NS, K] per-sub-chunk values broadcast to the 16 * NS rows of a chunk: [16 * NS, K]."""
    return tl.reshape(tl.broadcast_to(x4[:, None, :], [NS, 16, K]), [NS * 16, K])


@triton.jit
def decay_scores(rows, kc, F, blk, i_s, NS: tl.constexpr, K: tl.constexpr, INTERPRET: tl.constexpr):
    """sum_k rows_ik kc_jk F[I(i), J(j), k] for all row/column pairs of a chunk: [BT, BT].

    rows: [BT, K] (q or k times exp(gamma_i - R_I)); kc: [BT, K] (k times exp(E_J - gamma_j)); F: pair factors
    [NS, NS, K]. One product per column block J, with each row scaled by its pair factor for J."""
    acc = tl.zeros([NS * 16, NS * 16], dtype=tl.float32)
    for J in tl.static_range(NS):
        F_J = rows_of(tl.sum(tl.where(i_s[None, :, None] == J, F, 0.0), axis=1), NS, K)
        col = tl.trans(bf16(tl.where(blk[:, None] == J, kc, 0.0), INTERPRET))       # [K, BT]
        acc = mm_acc(bf16(rows * F_J, INTERPRET), col, acc, INTERPRET)
    return acc


@triton.jit
def diag_scores(rows, lc, cD, blk, INTERPRET: tl.constexpr):
    """The 16x16 diagonal blocks of the decay scores, factored around each sub-chunk midpoint: [BT, BT].

    lc: floored log2-decay relative to the midpoint [BT, K]; cD: [K, BT] k * exp(-lc), transposed."""
    return tl.where(blk[:, None] == blk[None, :], mm(bf16(rows * tl.exp2(lc), INTERPRET), cD, INTERPRET), 0.0)


@triton.jit
def kda_chunk_fwd_kernel(
    q, k, v, g, beta, A_log, dt_bias, o, h0, ht, hi, seg_start, seg_trans,
    cu_seqlens, seg_offsets, chunk_offsets,
    s_qb, s_qt, s_qh, s_kb, s_kt, s_kh, s_vb, s_vt, s_vh, s_gb, s_gt, s_gh, s_bb, s_bt, s_bh,
    T, N, NT_ALLOC, NCS, NSEARCH, scale, lower_bound,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BV: tl.constexpr,
    NCOL: tl.constexpr, BT: tl.constexpr, GATE: tl.constexpr, BOUNDED: tl.constexpr, HAS_A: tl.constexpr,
    HAS_BIAS: tl.constexpr, L2NORM: tl.constexpr, BETA_MODE: tl.constexpr, HAS_H0: tl.constexpr,
    STORE_HT: tl.constexpr, STORE_HI: tl.constexpr, STATE_V_FIRST: tl.constexpr,
    IS_VARLEN: tl.constexpr, SPLIT: tl.constexpr, TRANSITION: tl.constexpr, DIAG_FLOOR: tl.constexpr,
    INTERPRET: tl.constexpr,
):
    pid = tl.program_id(0)
    i_v = pid % NCOL
    i_hv = (pid // NCOL) % HV
    i_g = pid // (NCOL * HV)
    i_h = i_hv // (HV // H)

    # ---- which sequence and which chunks this program walks
    if SPLIT:
        if IS_VARLEN:
            if i_g >= tl.load(seg_offsets + N):
                return
            lo = i_g * 0
            hi_ = lo + N - 1
            for _ in range(NSEARCH):
                mid = (lo + hi_ + 1) // 2
                ok = tl.load(seg_offsets + mid) <= i_g
                lo = tl.where(ok, mid, lo)
                hi_ = tl.where(ok, hi_, mid - 1)
            i_n = lo
            i_s = i_g - tl.load(seg_offsets + i_n)
        else:
            sps = segments_per_sequence(T, NCS)
            i_n = i_g // sps
            i_s = i_g % sps
    else:
        i_n = i_g
        i_s = i_g * 0
    bos, eos = sequence_bounds(cu_seqlens, i_n, T, IS_VARLEN)
    if IS_VARLEN:
        i_b = tl.zeros([], dtype=tl.int64)
    else:
        i_b = i_n.to(tl.int64)
    seq_len = eos - bos
    n_chunks = tl.cdiv(seq_len, BT).to(tl.int32)
    c_begin = i_s * NCS * (64 // BT)              # segments are NCS 64-token chunks long
    c_end = tl.minimum(c_begin + NCS * (64 // BT), n_chunks)
    is_last = c_end >= n_chunks
    if TRANSITION:
        if is_last:
            return

    q += i_b * s_qb + bos * s_qt + i_h * s_qh
    k += i_b * s_kb + bos * s_kt + i_h * s_kh
    v += i_b * s_vb + bos * s_vt + i_hv * s_vh
    g += i_b * s_gb + bos * s_gt + i_hv * s_gh
    beta += i_b * s_bb + bos * s_bt + i_hv * s_bh
    o += ((i_b * T + bos) * HV + i_hv) * V

    o_k = tl.arange(0, K)
    NS: tl.constexpr = BT // 16                   # 16-token sub-chunks per chunk
    o_t = tl.arange(0, BT)
    cols = i_v * BV + tl.arange(0, BV)
    m_v = cols < V
    i_sub = tl.arange(0, NS)
    i16 = tl.arange(0, 16)
    same_blk = i_sub[:, None, None, None] == i_sub[None, None, :, None]        # [NS, 1, NS, 1]
    r16 = i16[None, :, None]
    c16 = i16[None, None, :]

    if HAS_A:
        A_scale = tl.exp(tl.load(A_log + i_hv).to(tl.float32))
    else:
        A_scale = 1.0
    if HAS_BIAS:
        bias = tl.load(dt_bias + i_hv * K + o_k).to(tl.float32)[None, :]
    else:
        bias = tl.zeros([1, K], dtype=tl.float32)

    # ---- the state entering the first chunk, [K, BV] fp32
    if TRANSITION:
        S = tl.where(o_k[:, None] == cols[None, :] - V, 1.0, 0.0)
    elif SPLIT:
        S = tl.load(seg_start + ((i_g * HV + i_hv) * K).to(tl.int64) * V + o_k[:, None] * V + cols[None, :])
    elif HAS_H0:
        S = tl.load(h0 + ((i_n * HV + i_hv) * K).to(tl.int64) * V
                    + state_offsets(o_k, cols, K, V, STATE_V_FIRST)).to(tl.float32)
    else:
        S = tl.zeros([K, BV], dtype=tl.float32)

    if STORE_HI:
        if IS_VARLEN:
            hi_chunk0 = tl.load(chunk_offsets + i_n).to(tl.int64)
            hi_limit = NT_ALLOC
        else:
            hi_chunk0 = i_b * NT_ALLOC
            hi_limit = hi_chunk0 + NT_ALLOC

    for c in range(c_begin, c_end):
        t0 = c * BT
        valid = (t0 + o_t) < seq_len
        m_tk = valid[:, None]

        # ---- loads (rows past the sequence end read as zeros) and per-token activations
        b_k = tl.load(k + (t0 + o_t)[:, None].to(tl.int64) * s_kt + o_k[None, :], mask=m_tk, other=0.0).to(tl.float32)
        b_g = tl.load(g + (t0 + o_t)[:, None].to(tl.int64) * s_gt + o_k[None, :], mask=m_tk, other=0.0).to(tl.float32)
        b_b = tl.load(beta + (t0 + o_t).to(tl.int64) * s_bt, mask=valid, other=0.0).to(tl.float32)
        if BETA_MODE == 1:
            b_b = tl.sigmoid(b_b)
        elif BETA_MODE == 2:
            b_b = 2.0 * tl.sigmoid(b_b)
        b_b = tl.where(valid, b_b, 0.0)
        if L2NORM:
            b_k = b_k * tl.rsqrt(tl.sum(b_k * b_k, axis=1) + 1e-6)[:, None]
        a = tl.where(m_tk, gate_log2(b_g, A_scale, bias, lower_bound, GATE), 0.0)   # log2 units

        # ---- in-chunk cumulative decay, by 16-token sub-chunks
        a3 = tl.reshape(a, [NS, 16, K])
        s4 = tl.sum(a3, axis=1)                           # [NS, K] decay over each sub-chunk
        R = tl.cumsum(s4, axis=0) - s4                    # decay before sub-chunk I
        E = R + s4                                        # decay through sub-chunk I
        G = tl.sum(s4, axis=0)                            # decay over the chunk
        lam = tl.reshape(tl.cumsum(a3, axis=1), [BT, K])  # decay since the sub-chunk start
        Er = tl.exp2(lam)                                 # exp(gamma_i - R_I) <= 1
        blk = o_t // 16
        # pair factors exp(R_I - E_J), [NS (I), NS (J), K]; J == I only on the bounded path
        if BOUNDED:
            keep = i_sub[None, :, None] <= i_sub[:, None, None]
        else:
            keep = i_sub[None, :, None] < i_sub[:, None, None]
        F = tl.where(keep, tl.exp2(tl.where(keep, R[:, None, :] - E[None, :, :], 0.0)), 0.0)
        if not BOUNDED:
            lc = tl.cumsum(tl.maximum(a3, -DIAG_FLOOR * 1.4426950408889634), axis=1)
            lc = tl.reshape(lc - tl.sum(tl.where(r16 == 7, lc, 0.0), axis=1)[:, None, :], [BT, K])
            cD = tl.trans(bf16(b_k * tl.exp2(-lc), INTERPRET))
        kc = b_k * tl.exp2(rows_of(s4, NS, K) - lam)          # k * exp(E_J - gamma_j), <= 1 factor

        # ---- A_kk, then T = (I + A_kk)^-1
        AK = decay_scores(b_k * Er, kc, F, blk, i_sub, NS, K, INTERPRET)
        if not BOUNDED:
            AK += diag_scores(b_k, lc, cD, blk, INTERPRET)
        kg = bf16(b_k * Er * rows_of(tl.exp2(R), NS, K), INTERPRET)                      # k * exp(gamma)
        Akk = tl.where(o_t[:, None] > o_t[None, :], AK * b_b[:, None], 0.0)

        # ---- T = (I + A_kk)^-1: 16x16 diagonal blocks by forward substitution, then two exact merges
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

        # ---- W, U and the state-dependent products
        kd = bf16(kc * rows_of(tl.exp2(G[None, :] - E), NS, K), INTERPRET)              # k * exp(G - gamma)
        b_v = tl.load(v + (t0 + o_t)[:, None].to(tl.int64) * s_vt + cols[None, :],
                      mask=m_tk & m_v[None, :], other=0.0)
        U = mm(Tb, bf16(b_v, INTERPRET), INTERPRET)
        W = mm(Tb, kg, INTERPRET)
        Sb = bf16(S, INTERPRET)
        Vb = bf16(U - mm(bf16(W, INTERPRET), Sb, INTERPRET), INTERPRET)
        if not TRANSITION:
            if STORE_HI:
                i_hi = hi_chunk0 + t0 // 64
                tl.store(hi + ((i_hi * HV + i_hv) * K) * V + state_offsets(o_k, cols, K, V, STATE_V_FIRST),
                         cast(S, hi.dtype.element_ty, INTERPRET),
                         mask=(i_hi < hi_limit) & (t0 % 64 == 0) & (o_k[:, None] < K))
            b_q = tl.load(q + (t0 + o_t)[:, None].to(tl.int64) * s_qt + o_k[None, :], mask=m_tk, other=0.0).to(tl.float32)
            if L2NORM:
                b_q = b_q * tl.rsqrt(tl.sum(b_q * b_q, axis=1) + 1e-6)[:, None]
            AQ = decay_scores(b_q * Er, kc, F, blk, i_sub, NS, K, INTERPRET)
            if not BOUNDED:
                AQ += diag_scores(b_q, lc, cD, blk, INTERPRET)
            Mqk = bf16(tl.where(o_t[:, None] >= o_t[None, :], AQ, 0.0), INTERPRET)
            qg = bf16(b_q * Er * rows_of(tl.exp2(R), NS, K), INTERPRET)                  # q * exp(gamma)
            b_o = (mm(qg, Sb, INTERPRET) + mm(Mqk, Vb, INTERPRET)) * scale
            tl.store(o + (t0 + o_t)[:, None].to(tl.int64) * (HV * V) + cols[None, :],
                     cast(b_o, o.dtype.element_ty, INTERPRET), mask=m_tk)
        S = S * tl.exp2(G)[:, None] + mm(tl.trans(kd), Vb, INTERPRET)

    if TRANSITION:
        tl.store(seg_trans + ((i_g * HV + i_hv) * K).to(tl.int64) * (V + K) + o_k[:, None] * (V + K) + cols[None, :], S)
    elif STORE_HT:
        if is_last:
            tl.store(ht + ((i_n * HV + i_hv) * K).to(tl.int64) * V + state_offsets(o_k, cols, K, V, STATE_V_FIRST),
                     cast(S, ht.dtype.element_ty, INTERPRET))
