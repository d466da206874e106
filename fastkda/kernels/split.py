"""Kernels of the split-sequence path that are not the chunk kernel: the device-side schedule of a
variable-length batch, and the combine that chains the segment maps S_end = P S_start + B (docs/split.md).
"""

from __future__ import annotations

import triton
import triton.language as tl

from fastkda.kernels.common import (initial_state, mm_f32, segments_per_sequence, sequence_bounds,
                                    wait_for_prior_grid)


@triton.jit
def _max(a, b):
    return tl.maximum(a, b)


@triton.jit
def kda_schedule_kernel(cu_seqlens, seg_offsets, chunk_offsets, chunk_rows, long_seqs, N, T, NCS, NSLOTS, NLONG,
                        BLOCK: tl.constexpr, zeroed=None, NZERO=0):
    """Exclusive prefix sums over the N sequences of cu_seqlens, each of length N + 1:
    seg_offsets of the segment counts (at least one a sequence) and chunk_offsets of the 64-token chunk
    counts; chunk_rows [NSLOTS, 2], each chunk slot's first token row and the end of its sequence's rows (slots past
    the last chunk: an empty range), so that a prepare program finds its rows with one load (common.varlen_chunk_rows)
    instead of a search; and long_seqs [NLONG + 1], the sequences of more than one segment in order (the combine's,
    at most NLONG of them: the host's bound), then their count. One program; reads cu_seqlens on the device, so the
    host never waits. zeroed: NZERO int32 words it also zeroes (the overlapped call's ready flags: one launch less
    in front of the prepare kernel than a fill of their own, perf-notes v46)."""
    if zeroed is not None:
        for start in range(0, NZERO, BLOCK):
            idx = start + tl.arange(0, BLOCK)
            tl.store(zeroed + idx, tl.zeros([BLOCK], dtype=tl.int32), mask=idx < NZERO)
    for start in range(0, NSLOTS, BLOCK):
        idx = start + tl.arange(0, BLOCK)
        tl.store(chunk_rows + 2 * idx, tl.zeros([BLOCK], dtype=tl.int32), mask=idx < NSLOTS)
    tl.debug_barrier()  # the zeros are in place before any thread marks a slot
    seg_carry = tl.zeros([], dtype=tl.int32)
    chunk_carry = tl.zeros([], dtype=tl.int32)
    long_carry = tl.zeros([], dtype=tl.int32)
    for start in range(0, N + 1, BLOCK):
        idx = start + tl.arange(0, BLOCK)
        inside = idx < N
        bos, eos = sequence_bounds(cu_seqlens, tl.where(inside, idx, 0), T, True)
        n_chunks = tl.where(inside, tl.cdiv(eos - bos, 64).to(tl.int32), 0)
        n_segs = tl.where(inside, tl.maximum(tl.cdiv(n_chunks, NCS), 1), 0)
        first_chunk = chunk_carry + tl.cumsum(n_chunks, 0) - n_chunks
        tl.store(seg_offsets + idx, seg_carry + tl.cumsum(n_segs, 0) - n_segs, mask=idx <= N)
        tl.store(chunk_offsets + idx, first_chunk, mask=idx <= N)
        # each non-empty sequence marks its first slot (no two share one); a running maximum fills the rest
        tl.store(chunk_rows + 2 * first_chunk, idx, mask=inside & (n_chunks > 0) & (first_chunk < NSLOTS))
        if NLONG > 0:   # a split call (NLONG = 0 else): its list, whose running sum costs a microsecond
            multi = (n_segs > 1).to(tl.int32)
            at = long_carry + tl.cumsum(multi, 0) - multi
            tl.store(long_seqs + at, idx, mask=(multi > 0) & (at < NLONG))
            long_carry += tl.sum(multi, 0)
        seg_carry += tl.sum(n_segs, 0)
        chunk_carry += tl.sum(n_chunks, 0)
    tl.debug_barrier()  # the marks and chunk_offsets were written by other threads of this program
    seq_carry = tl.zeros([], dtype=tl.int32)
    for start in range(0, NSLOTS, BLOCK):
        idx = start + tl.arange(0, BLOCK)
        inside = idx < NSLOTS
        marks = tl.load(chunk_rows + 2 * idx, mask=inside, other=0)
        tl.debug_barrier()  # every thread has read its marks before any is overwritten
        seq = tl.maximum(tl.associative_scan(marks, 0, _max), seq_carry)
        bos, eos = sequence_bounds(cu_seqlens, seq, T, True)
        first = bos + (idx - tl.load(chunk_offsets + seq, mask=inside, other=0)) * 64
        tl.store(chunk_rows + 2 * idx, first.to(tl.int32), mask=inside)
        tl.store(chunk_rows + 2 * idx + 1, eos.to(tl.int32), mask=inside)
        seq_carry = tl.maximum(seq_carry, tl.max(marks, 0))
    tl.store(long_seqs + NLONG, tl.minimum(long_carry, NLONG))


@triton.jit(do_not_specialize=["HV"])  # one compilation for every head count
def kda_combine_kernel(
    h0, trans_p, trans_b, seg_start, seg_offsets, long_seqs, T, NCS, NSEG, NLONG,
    HV, K: tl.constexpr, V: tl.constexpr, BV: tl.constexpr, HAS_H0: tl.constexpr,
    STATE_V_FIRST: tl.constexpr, IS_VARLEN: tl.constexpr, PDL: tl.constexpr, INTERPRET: tl.constexpr,
):
    """For one sequence of more than one segment, value head and BV state columns: walks the segments in order
    from the initial state, advancing it by each segment's map from seg_trans [S, HV, K, V + K] (columns :V hold B,
    columns V: hold P), read through two tensor descriptors over its rows of V + K: trans_p in [K, K] tiles (P),
    trans_b in [K, BV] tiles (B), and writing the state at the start of every segment but the first (which the
    output pass takes from the initial state) to seg_start [S, HV, K, V]. Programs: a fixed-length batch's
    sequences, or a varlen batch's listed in long_seqs (kda_schedule_kernel: at most NLONG, then their count), so that
    short sequences cost no program. Segments past NSEG (the workspace) are not touched, whatever cu_seqlens says.
    PDL: as kda_chunk_state_kernel's (long_seqs, written before the prepare kernel, is read before the wait)."""
    NCOL: tl.constexpr = V // BV
    pid = tl.program_id(0)
    i_v = pid % NCOL
    i_hv = (pid // NCOL) % HV
    i_n = pid // (NCOL * HV)
    if IS_VARLEN:
        if i_n >= tl.load(long_seqs + NLONG):
            return
        i_n = tl.load(long_seqs + i_n)
    o_k = tl.arange(0, K)
    cols = i_v * BV + tl.arange(0, BV)
    S = initial_state(h0, i_n, i_hv, HV, o_k, cols, K, V, BV, HAS_H0, STATE_V_FIRST)
    wait_for_prior_grid(PDL)
    if IS_VARLEN:
        s_begin = tl.load(seg_offsets + i_n)
        s_end = tl.load(seg_offsets + i_n + 1)
    else:
        sps = segments_per_sequence(T, NCS)
        s_begin = i_n * sps
        s_end = s_begin + sps
    for s in range(s_begin, tl.minimum(s_end, NSEG) - 1):
        base = ((s * HV + i_hv) * K).to(tl.int64)
        P = trans_p.load([base.to(tl.int32), V])
        B = trans_b.load([base.to(tl.int32), i_v * BV])
        # tf32 (2^-11 relative rounding of P and S) is 8x finer than the bf16 operands of every chunk step, and
        # P is a contraction, so the error does not grow along the chain; tf32x3 took 1.5x as long (perf-notes v10)
        S = mm_f32(P, S, "tf32", INTERPRET) + B
        tl.store(seg_start + (base + HV * K) * V + o_k[:, None] * V + cols[None, :], S)
