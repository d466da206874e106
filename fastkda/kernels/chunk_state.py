"""Stage 2 of the KDA forward: the state chain. One program walks the chunks of one segment of one sequence
for one value head and BV state columns, keeping the state S [K, BV] in fp32 registers; per chunk it reads
what stage 1 wrote (chunk_prepare.py) and the chunk's values, and computes
    R = v - Kg S,    o = Qg S + Mu R,    S <- diag(exp(G)) S + Ku^T R.
Only this chain is sequential.

The split-sequence path (docs/split.md) runs it twice: with TRANSITION, for each segment but the last of a
sequence, from S = [0 | I] over the columns [V | K], giving the segment's map S_end = P S_start + B (no
output); then, after the combine kernel has chained those maps, from each segment's true starting state (a
sequence's first segment from its initial state).
"""

from __future__ import annotations

import triton
import triton.language as tl

from fastkda.kernels.common import (bf16, cast, initial_state, mm, segment_chunks, segment_of, sequence_bounds,
                                    state_ptrs, wait_for_prior_grid)


@triton.jit(do_not_specialize=["HV"])  # one compilation for every head count
def kda_chunk_state_kernel(
    v, ws_kg, ws_ku, ws_qg, ws_mu, ws_eg, o, h0, ht, hi, seg_start, seg_trans,
    cu_seqlens, seg_offsets, chunk_offsets, s_vb, s_vt, s_vh,
    T, N, NT, NSLOTS, NT_ALLOC, NCS, NSEARCH,
    HV, K: tl.constexpr, V: tl.constexpr, BV: tl.constexpr, NCOL: tl.constexpr,
    BT: tl.constexpr, HAS_H0: tl.constexpr, STORE_HT: tl.constexpr, STORE_HI: tl.constexpr,
    STATE_V_FIRST: tl.constexpr, IS_VARLEN: tl.constexpr, SPLIT: tl.constexpr, TRANSITION: tl.constexpr,
    V_DESC: tl.constexpr, PDL: tl.constexpr, INTERPRET: tl.constexpr,
):
    """Grid: one program per (segment, value head, block of BV state columns); without SPLIT a segment is a
    whole sequence. ws_kg, ws_ku, ws_qg, ws_mu: tensor descriptors over the workspace as rows (one chunk of a head
    is 64 consecutive rows, one tile), so that on sm_90 its tiles arrive by the tensor memory accelerator without
    per-element addresses (forward.tile_desc). V_DESC: v is a tensor descriptor over its tokens as rows
    (forward.v_tile_desc) rather than a pointer. NCS: 64-token chunks per segment. NT: chunk slots per sequence of a fixed-length batch;
    NSLOTS: slots of the workspace (no chunk past them is read, whatever cu_seqlens says). PDL: launched as a
    programmatic dependent of the previous kernel, whose outputs (and everything of the call before it) are read
    only past wait_for_prior_grid."""
    pid = tl.program_id(0)
    i_v = pid % NCOL
    i_hv = (pid // NCOL) % HV
    i_g = pid // (NCOL * HV)
    o_k = tl.arange(0, K)
    o_t = tl.arange(0, BT)
    cols = i_v * BV + tl.arange(0, BV)
    m_u = cols < V
    if not SPLIT:
        # the caller's initial state: read while the previous kernel finishes
        S0 = initial_state(h0, i_g, i_hv, HV, o_k, cols, K, V, BV, HAS_H0, STATE_V_FIRST)
    wait_for_prior_grid(PDL)

    # ---- which sequence and which chunks this program walks
    if SPLIT:
        i_n, i_s, live = segment_of(i_g, seg_offsets, N, T, NCS, NSEARCH, IS_VARLEN)
        if not live:
            return
    else:
        i_n = i_g
        i_s = i_g * 0
    bos, eos = sequence_bounds(cu_seqlens, i_n, T, IS_VARLEN)
    i_b, slot0, c_begin, c_end, is_last = segment_chunks(i_n, i_s, chunk_offsets, bos, eos, NT, NSLOTS, NCS, BT,
                                                          IS_VARLEN)
    seq_len = eos - bos
    if TRANSITION:
        if is_last:
            return

    # ---- the state entering the first chunk, [K, BV] fp32
    if TRANSITION:
        S = tl.where(o_k[:, None] == cols[None, :] - V, 1.0, 0.0)
    elif SPLIT:
        if i_s > 0:
            S = tl.load(seg_start + ((i_g * HV + i_hv) * K).to(tl.int64) * V + o_k[:, None] * V + cols[None, :])
        else:
            S = initial_state(h0, i_n, i_hv, HV, o_k, cols, K, V, BV, HAS_H0, STATE_V_FIRST)
    else:
        S = S0

    o += ((i_b * T + bos) * HV + i_hv) * V
    if not V_DESC:
        p_v = v + i_b * s_vb + i_hv * s_vh + o_t[:, None] * s_vt + cols[None, :]
    # exp(G) is loaded a step ahead, after the step's last product: Triton does not pipeline it (no product reads
    # it), and a load still in flight at a product's fence (a MEMBAR) holds the step there (-3% state kernel, v15)
    eg = tl.load(ws_eg + ((slot0 + c_begin) * HV + i_hv) * K + o_k, mask=(c_begin < c_end) & (o_k < K), other=0.0)
    for c in range(c_begin, c_end):
        ws = (((slot0 + c) * HV + i_hv) * BT).to(tl.int32)   # the tiles' first row
        in_seq = ((c * BT + o_t) < seq_len)[:, None]
        b_kg = ws_kg.load([ws, 0])
        b_ku = ws_ku.load([ws, 0])
        if V_DESC:   # v as rows of tokens (forward.v_tile_desc)
            b_v = v.load([(i_b * T + bos + c * BT).to(tl.int32), i_hv * s_vh + i_v * BV])
            b_v = tl.where(in_seq & m_u[None, :], b_v, 0.0)
        else:
            b_v = tl.load(p_v + (bos + c * BT) * s_vt, mask=in_seq & m_u[None, :], other=0.0)  # bos: int64
        Sb = bf16(S, INTERPRET)
        Rb = bf16(b_v.to(tl.float32) - mm(b_kg, Sb, INTERPRET), INTERPRET)
        if not TRANSITION:
            if STORE_HI:
                tl.store(state_ptrs(hi, slot0 + c, i_hv, HV, o_k, cols, K, V, STATE_V_FIRST),
                         cast(S, hi.dtype.element_ty, INTERPRET), mask=(slot0 + c < NT_ALLOC * (i_b + 1)) & (o_k[:, None] < K))
            b_qg = ws_qg.load([ws, 0])
            b_mu = ws_mu.load([ws, 0])
            b_o = mm(b_qg, Sb, INTERPRET) + mm(b_mu, Rb, INTERPRET)
            tl.store(o + (c * BT + o_t)[:, None].to(tl.int64) * (HV * V) + cols[None, :],
                     cast(b_o, o.dtype.element_ty, INTERPRET), mask=in_seq)
        S = S * eg[:, None] + mm(tl.trans(b_ku), Rb, INTERPRET)
        eg = tl.load(ws_eg + ((slot0 + c + 1) * HV + i_hv) * K + o_k, mask=(c + 1 < c_end) & (o_k < K), other=0.0)

    if TRANSITION:
        tl.store(seg_trans + ((i_g * HV + i_hv) * K).to(tl.int64) * (V + K) + o_k[:, None] * (V + K) + cols[None, :], S)
    elif STORE_HT:
        if is_last:
            tl.store(state_ptrs(ht, i_n, i_hv, HV, o_k, cols, K, V, STATE_V_FIRST),
                     cast(S, ht.dtype.element_ty, INTERPRET))
