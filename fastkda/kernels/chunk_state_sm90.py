"""Stage 2 of the KDA forward on sm_90, in Gluon, for the overlapped launch: the state chains run beside the prepare
kernel rather than after it (forward.overlaps_prepare). Each program waits, chunk by chunk, for the ready flag that
the chunk's prepare program sets once its outputs are stored, so the chain follows the prepare kernel through the
chunks instead of waiting for all of them (perf-notes v18); it reads a head's flags 16 at a time, since an acquire
load holds its warp until it returns (one a chunk cost 0.2-0.5 us a step, perf-notes v21). Where the lanes (a
fixed-length batch's (sequence, head) pairs, a varlen batch's heads) are more than fit beside the prepare kernel,
the programs walk them by groups, one after the other, in the order the prepare kernel produces them (perf-notes
v20).

The math is the Triton state kernel's (chunk_state.py), with the state carried transposed, S^T [64, K], so that
the chain's left operands come from registers and nothing is staged in shared memory per chunk:
    X^T = S^T Kg^T,  R^T = v^T - X^T,  S^T <- S^T diag(exp(G)) + R^T Ku      (the chain)
    O^T = S^T Qg^T + R^T Mu^T                                                (off the chain)
with the same bf16 operands and fp32 accumulation, so the outputs equal the Triton kernel's to the bit. The
workspace tiles, exp(G) and v arrive by TMA into a ring of STAGES slots; o leaves by TMA from a transposed store into
one of two shared-memory buffers, and (beside a prepare program) a walk's final state by TMA from the ring slot its
last step has read: stored through pointers, the next step's fence waited for the stores (perf-notes v45). Two slots
and the next walk's initial state take 181 KB of shared memory at K = 128: room for a prepare program on the same
multiprocessor. Three slots take 214 KB, the whole multiprocessor:
the chain then shares it with no prepare program (forward.overlap_groups takes that where the chains bound the call,
perf-notes v21), and a producer warp checks the flags and requests the tiles (_produce), so the chain's warpgroup
(_consume) only waits for them. Issued by the chain's warps, each request is followed by a barrier of the whole
program (the compiler orders requests that signal one mbarrier), and a step's seven took 811 of its 2650 cycles
(clock stamps, perf-notes v28); with the producer warp a step takes 1.13 us instead of 1.33. A program beside a
prepare program keeps the requests in its own warps: the producer's warps and registers would not leave room for the
prepare program (under a register cap the chain spills), and those calls are bound by the prepare kernel.

The shared programs drop each chunk's workspace lines from L2 once the lane's programs have read them
(discard.global.L2, _discard_chunk): nothing reads them again, and their write-back was the prepare kernel's
writes a second time (896 of about 2190 bytes of DRAM traffic per token and head, counted; T=8192 H=96 -1.8%,
varlen6 -2.3%, perf-notes v30). The lane's two column programs read the same tiles, so the first publishes how
many steps' tiles it has and the second drops only chunks both have.

A narrow program (BV = 32) carries the state as it is, S [K, 32]: a wgmma's rows are then the key dims and the
tokens, and its B operand, S or R in bf16, is staged in shared memory each step (8 + 4 KB, two barriers):
    X = Kg S,  R = v - X,  S <- diag(exp(G)) S + Ku^T R,  O = Qg S + Mu R
Half a 64-column program's products, so a shorter step where the chains bound the call (T=8192 H=12: 0.201 ->
0.172 ms with 48 narrow programs on whole multiprocessors, perf-notes v24), at twice the programs.
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                             warpgroup_mma_wait)

from fastkda.kernels.common import FLAG_GROUP, STEP_WORDS, flag_row, sequence_bounds

LANE_WORD = gl.constexpr(gl.BlockedLayout([1], [32], [4], [0]))   # a value per thread of the 4 warps
# the steps of a walk over which the programs spread their requests of the next walk's initial state (_walk)
H0_SPREAD = gl.constexpr(8)


@gluon.jit
def _acquire16(p):
    """The 16 flag bytes at p (16-byte aligned) as four words, by one acquire load: an acquire holds its warp until
    the load returns, so the chain takes one for 16 chunks, not one a chunk (perf-notes v21)."""
    return gl.inline_asm_elementwise("ld.acquire.gpu.global.v4.b32 {$0, $1, $2, $3}, [$4];", "=r,=r,=r,=r,l", [p],
                                     dtype=(gl.int32, gl.int32, gl.int32, gl.int32), is_pure=False, pack=1)


@gluon.jit
def _set_bits(w):
    """The four flag bytes of w (each 0 or 1) as bits 0-3."""
    return (w & 1) | ((w >> 7) & 2) | ((w >> 14) & 4) | ((w >> 21) & 8)


@gluon.jit
def _first_unset(w0, w1, w2, w3, p):
    """Index of the first unset flag at or after p (0 <= p < 16) among the 16 bytes w0..w3; 16 if none."""
    unset = ~(_set_bits(w0) | (_set_bits(w1) << 4) | (_set_bits(w2) << 8) | (_set_bits(w3) << 12))
    z = (unset & (0xFFFF << p)) | 0x10000
    return gl.inline_asm_elementwise("{ .reg .b32 t; brev.b32 t, $1; bfind.shiftamt.u32 $0, t; }", "=r,r", [z],
                                     dtype=gl.int32, is_pure=True, pack=1)


@gluon.jit
def _wait_ready(row, s, known):
    """Waits until the flag of workspace slot s in the head's flag row is set, unless s < known (slots below known,
    from where the walk's checks began, are known set); returns the new bound: s + 1 or further, up to the end of
    s's aligned group of 16 where its next flags are set too. Then orders this program's TMA reads after the flags."""
    gl.static_assert(FLAG_GROUP == 16, "_acquire16 and _first_unset read 16 flags")
    if s >= known:
        base = s - s % FLAG_GROUP
        p = s - base
        off = p
        while off == p:
            w0, w1, w2, w3 = _acquire16(row + base)
            off = _first_unset(w0, w1, w2, w3, p)
        gl.inline_asm_elementwise("fence.proxy.async.global; mov.u32 $0, 0;", "=r", [], dtype=gl.int32,
                                  is_pure=False, pack=1)
        known = base + off
    return known


@gluon.jit
def _seen(words):
    """The step count the lane's first program has published (_publish), each thread from its own copy in the
    lane's 128 words, by a relaxed load (an acquire would hold the warp until it returns, a weak load may hit a stale
    line in L1). One word for all, ptxas took the value for uniform and moved it to a uniform register right after
    the load, so the chain waited for the load's round trip there (late, behind the drops: T=8192 H=96 0.88 ->
    1.2 ms); a thread's own copy stays in its register until the drops' predicate at the step's end. Loaded right
    after the step's fence (_o_flush): loaded at a step's end, the next step's fence (MEMBAR.ALL.CTA, which waits
    for the thread's loads in flight) waited for its round trip (perf-notes v44: T=8192 H=96 with the chains
    bounding the call, 24 lanes x 4 groups, 1.25 -> 1.11 ms)."""
    return gl.inline_asm_elementwise("ld.relaxed.gpu.global.b32 $0, [$1];", "=r,l",
                                     [words + gl.arange(0, STEP_WORDS, layout=LANE_WORD)], dtype=gl.int32,
                                     is_pure=False, pack=1)


@gluon.jit
def _publish(words, steps):
    """Stores `steps` in the lane's 128 words, a word a thread (one 128-byte store a warp; relaxed: nothing is read on
    the strength of it but that the steps' tiles have arrived in this program's shared memory)."""
    return gl.inline_asm_elementwise("st.relaxed.gpu.global.b32 [$1], $2; mov.u32 $0, 0;", "=r,l,r",
                                     [words + gl.arange(0, STEP_WORDS, layout=LANE_WORD),
                                      steps + gl.zeros([STEP_WORDS], gl.int32, LANE_WORD)], dtype=gl.int32,
                                     is_pure=False, pack=1)


@gluon.jit
def _discard_chunk(drop, chunk_row, K: gl.constexpr, BT: gl.constexpr, margin):
    """Drops the L2 lines of a chunk's Kg, Ku, Qg and Mu tiles (workspace row chunk_row = slot HV + head) without
    writing them back: nothing reads them again, and their write-back was 896 of the call's about 2190 bytes of DRAM
    traffic per token and head (counted). One 128-byte line per thread and tile (a [64, D] bf16 tile has D lines);
    only where margin >= 0."""
    line = gl.arange(0, 128, layout=LANE_WORD) * 64          # 64 bf16 a line
    row = chunk_row.to(gl.int64) * BT
    _discard_tile(drop[0] + row * K, line, K, margin)
    _discard_tile(drop[1] + row * K, line, K, margin)
    _discard_tile(drop[2] + row * K, line, K, margin)
    _discard_tile(drop[3] + row * BT, line, BT, margin)


@gluon.jit
def _discard_tile(p, line, D: gl.constexpr, margin):
    """Drops the D lines of the [64, D] bf16 tile at p (line: a thread's line offset; past the tile's, its last) if
    margin >= 0."""
    gl.inline_asm_elementwise(
        "{ .reg .pred p; setp.ge.s32 p, $2, 0; @p discard.global.L2 [$1], 128; mov.b32 $0, 0; }", "=r,l,r",
        [p + gl.minimum(line, (D - 1) * 64), margin + gl.zeros_like(line)], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def _kg_tile(kgku_s, slot):
    """Ring slot `slot`'s Kg tile: the first half of the slot's Kg and Ku."""
    return kgku_s.index(slot).slice(0, kgku_s.shape[1] // 2)


@gluon.jit
def _ku_tile(kgku_s, slot):
    """Ring slot `slot`'s Ku tile: the second half of the slot's Kg and Ku."""
    return kgku_s.index(slot).slice(kgku_s.shape[1] // 2, kgku_s.shape[1] // 2)


@gluon.jit
def _issue(c, slot, slot0, i_hv, v_row, v_col, kg_d, ku_d, qg_d, mu_d, v_d, eg_d, kgku_s, qg_s, mu_s, v_s, eg_s,
           bars, HV, BT: gl.constexpr):
    """Requests chunk c's tiles into ring slot `slot` (its ready flag already waited for)."""
    bar = bars.index(slot)
    mbarrier.expect(bar, kg_d.block_type.nbytes * 3 + mu_d.block_type.nbytes + v_d.block_type.nbytes
                    + eg_d.block_type.nbytes)
    row = ((slot0 + c) * HV + i_hv) * BT
    tma.async_copy_global_to_shared(kg_d, [row, 0], bar, _kg_tile(kgku_s, slot))
    tma.async_copy_global_to_shared(ku_d, [row, 0], bar, _ku_tile(kgku_s, slot))
    tma.async_copy_global_to_shared(qg_d, [row, 0], bar, qg_s.index(slot))
    tma.async_copy_global_to_shared(mu_d, [row, 0], bar, mu_s.index(slot))
    tma.async_copy_global_to_shared(v_d, [v_row + c * BT, v_col], bar, v_s.index(slot))
    tma.async_copy_global_to_shared(eg_d, [(slot0 + c) * HV + i_hv, 0], bar, eg_s.index(slot))


@gluon.jit
def _step_wide(S, c, T_n, slot, step, o_tc, zero_t, kgku_s, qg_s, mu_s, v_s, eg_s, bars, MMA_K: gl.constexpr,
               MMA_T: gl.constexpr, BT: gl.constexpr, STAGES: gl.constexpr):
    """One chunk step with the state transposed, S^T [64, K]: X^T = S^T Kg^T, R^T = v^T - X^T,
    S^T <- S^T diag(exp(G)) + R^T Ku, O^T = S^T Qg^T + R^T Mu^T, the left operands from registers. Returns (S, O),
    both products in flight."""
    OPA_T: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=MMA_T, k_width=2)
    OPA_K: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=MMA_K, k_width=2)
    Sa = gl.convert_layout(S.to(gl.bfloat16), OPA_T)
    mbarrier.wait(bars.index(slot), (step // STAGES) & 1)
    X = warpgroup_mma(Sa, _kg_tile(kgku_s, slot).permute((1, 0)), zero_t, use_acc=False, is_async=True)
    O = warpgroup_mma(Sa, qg_s.index(slot).permute((1, 0)), zero_t, use_acc=False, is_async=True)
    eg = eg_s.index(slot).load(MMA_K)
    vt = v_s.index(slot).permute((1, 0)).load(MMA_T).to(gl.float32)
    X = warpgroup_mma_wait(1, deps=(X,))
    if (c + 1) * BT > T_n:      # rows past the sequence (Ku and Mu zero them already, but v there may be inf)
        R = gl.where(gl.expand_dims(c * BT + o_tc < T_n, 0), vt - X, 0.0).to(gl.bfloat16)
    else:
        R = (vt - X).to(gl.bfloat16)
    S = warpgroup_mma(gl.convert_layout(R, OPA_K), _ku_tile(kgku_s, slot), S * eg, is_async=True)
    O = warpgroup_mma(gl.convert_layout(R, OPA_T), mu_s.index(slot).permute((1, 0)), O, is_async=True)
    return S, O


@gluon.jit
def _step_narrow(S, c, T_n, slot, step, o_tc, zero_t, kgku_s, qg_s, mu_s, v_s, eg_s, s_sm, r_sm, bars,
                 MMA: gl.constexpr, BT: gl.constexpr, STAGES: gl.constexpr):
    """One chunk step with the state as it is, S [K, BV] (BV = 32): X = Kg S, R = v - X, S <- diag(exp(G)) S + Ku^T R,
    O = Qg S + Mu R, the bf16 S and R staged in shared memory for the products (the tensor cores read B there).
    Returns (S, O), both products in flight."""
    s_sm.store(S.to(gl.bfloat16))
    fence_async_shared()
    gl.thread_barrier()
    mbarrier.wait(bars.index(slot), (step // STAGES) & 1)
    X = warpgroup_mma(_kg_tile(kgku_s, slot), s_sm, zero_t, use_acc=False, is_async=True)
    O = warpgroup_mma(qg_s.index(slot), s_sm, zero_t, use_acc=False, is_async=True)
    eg = eg_s.index(slot).permute((1, 0)).load(MMA)
    vt = v_s.index(slot).load(MMA).to(gl.float32)
    X = warpgroup_mma_wait(1, deps=(X,))
    if (c + 1) * BT > T_n:      # rows past the sequence (Ku and Mu zero them already, but v there may be inf)
        R = gl.where(gl.expand_dims(c * BT + o_tc < T_n, 1), vt - X, 0.0).to(gl.bfloat16)
    else:
        R = (vt - X).to(gl.bfloat16)
    r_sm.store(R)
    fence_async_shared()
    gl.thread_barrier()
    S = warpgroup_mma(_ku_tile(kgku_s, slot).permute((1, 0)), r_sm, S * eg, is_async=True)
    O = warpgroup_mma(mu_s.index(slot), r_sm, O, is_async=True)
    return S, O


@gluon.jit
def _step(S, c, T_n, slot, step, o_tc, zero_t, kgku_s, qg_s, mu_s, v_s, eg_s, s_sm, r_sm, bars,
          MMA_K: gl.constexpr, MMA_T: gl.constexpr, BT: gl.constexpr, STAGES: gl.constexpr, NARROW: gl.constexpr):
    """Chunk step c of the program's kind (_step_narrow or _step_wide): (S, O), both products in flight."""
    if NARROW:
        S, O = _step_narrow(S, c, T_n, slot, step, o_tc, zero_t, kgku_s, qg_s, mu_s, v_s, eg_s, s_sm, r_sm, bars,
                            MMA_K, BT, STAGES)
    else:
        S, O = _step_wide(S, c, T_n, slot, step, o_tc, zero_t, kgku_s, qg_s, mu_s, v_s, eg_s, bars, MMA_K, MMA_T,
                          BT, STAGES)
    return S, O


@gluon.jit
def _o_flush(o_d, o_s, tok0, o_col, c, BT: gl.constexpr):
    """The start of step c: the store of chunk c - 2 has read o_s[c % 2] (the issuing thread waits, the barrier tells
    the others); every warp is done with chunk c - 1 and has written its rows of that o tile, which leaves by TMA."""
    tma.store_wait(0)
    fence_async_shared()
    gl.thread_barrier()
    if c > 0:
        tma.async_copy_shared_to_global(o_d, [tok0 + (c - 1) * BT, o_col], o_s.index((c - 1) % 2))


@gluon.jit
def _o_stash(O, o_s, c, NARROW: gl.constexpr):
    """Chunk c's outputs into o_s[c % 2] (O^T where the state is carried transposed)."""
    if NARROW:
        o_s.index(c % 2).store(O.to(o_s.dtype))
    else:
        o_s.index(c % 2).permute((1, 0)).store(O.to(o_s.dtype))


@gluon.jit
def _o_last(o_d, o_s, tok0, o_col, n_chunks, BT: gl.constexpr):
    """A walk's end: every warp has written its rows of the last o tile (the next walk's first step waits for its
    store), which leaves by TMA."""
    fence_async_shared()
    gl.thread_barrier()
    if n_chunks > 0:
        tma.async_copy_shared_to_global(o_d, [tok0 + (n_chunks - 1) * BT, o_col], o_s.index((n_chunks - 1) % 2))


@gluon.jit
def _token_rows(BT: gl.constexpr, BV: gl.constexpr, MMA_T: gl.constexpr, NARROW: gl.constexpr):
    """The chunk's token indices along the outputs' token dim, and a zero [tokens, BV] accumulator (transposed where
    the state is)."""
    if NARROW:
        o_tc = gl.arange(0, BT, layout=gl.SliceLayout(1, MMA_T))
        zero_t = gl.zeros([BT, BV], gl.float32, MMA_T)
    else:
        o_tc = gl.arange(0, BT, layout=gl.SliceLayout(0, MMA_T))
        zero_t = gl.zeros([BV, BT], gl.float32, MMA_T)
    return o_tc, zero_t


@gluon.jit
def _initial_state(h0, st_base, st_off, K: gl.constexpr, BV: gl.constexpr, MMA_K: gl.constexpr,
                   HAS_H0: gl.constexpr, NARROW: gl.constexpr):
    """A walk's initial state through pointers (h0 + st_base + st_off), or zero without HAS_H0: S [K, BV] (narrow) or
    S^T [BV, K], in fp32."""
    if HAS_H0:
        S = gl.load(h0 + st_base + st_off).to(gl.float32)
    elif NARROW:
        S = gl.zeros([K, BV], gl.float32, MMA_K)
    else:
        S = gl.zeros([BV, K], gl.float32, MMA_K)
    return S


@gluon.jit
def _walk_at(w, lane0, n_walks, lanes_step, cu_seqlens, chunk_offsets, T, N, NT, NSLOTS, HV, BT: gl.constexpr,
             IS_VARLEN: gl.constexpr):
    """(sequence, head, first workspace slot, first token row, tokens, chunks) of the program's walk w: a
    fixed-length batch's lane lane0 + w lanes_step (lane = sequence HV + head); with IS_VARLEN, sequence w % N of
    head lane0 + (w // N) lanes_step. Chunks are clamped to the workspace's end (a malformed cu_seqlens can ask for
    more than there are slots, whose flags no program sets); a walk at or past n_walks has none."""
    if IS_VARLEN:
        n = w % N
        i_hv = lane0 + (w // N) * lanes_step
        bos, eos = sequence_bounds(cu_seqlens, n, T, IS_VARLEN)
        slot0 = gl.load(chunk_offsets + n)
        T_n = (eos - bos).to(gl.int32)
        tok0 = bos.to(gl.int32)
        n_chunks = gl.minimum(gl.cdiv(T_n, BT), NSLOTS - slot0)
    else:
        lane = lane0 + w * lanes_step
        n = lane // HV
        i_hv = lane % HV
        slot0 = (n * NT).to(gl.int32)
        tok0 = (n * T).to(gl.int32)
        T_n = T
        n_chunks = NT
    n_chunks = gl.where(w < n_walks, gl.maximum(n_chunks, 0), 0)
    return n, i_hv, slot0, tok0, T_n, n_chunks


@gluon.jit
def _wait_at(j, n_chunks, n_next, row, row_n, slot0, slot0_n, known, known_n):
    """Waits for the flag of chunk j of the walk, or past its end, of chunk j - n_chunks of the next walk (row, slot0,
    known: this walk's flag row, first slot and _wait_ready bound; row_n, slot0_n, known_n: the next walk's). The
    walk is chosen by selects, so the chain's loop holds one copy of the wait."""
    own = j < n_chunks
    jj = gl.where(own, j, j - n_chunks)
    if own | (jj < n_next):
        kn = _wait_ready(gl.where(own, row, row_n), gl.where(own, slot0, slot0_n) + jj, gl.where(own, known, known_n))
        known = gl.where(own, kn, known)
        known_n = gl.where(own, known_n, kn)
    return known, known_n


@gluon.jit
def _issue_at(j, step, n_chunks, n_next, slot0, i_hv, tok0, v_col, slot0_n, hv_n, tok0_n, v_col_n, kg_d, ku_d,
              qg_d, mu_d, v_d, eg_d, kgku_s, qg_s, mu_s, v_s, eg_s, bars, HV, BT: gl.constexpr,
              STAGES: gl.constexpr):
    """Requests the tiles of chunk j of the walk, or past its end, of chunk j - n_chunks of the next walk, into the
    ring slot of the program's step `step` (its flag already waited for)."""
    own = j < n_chunks
    jj = gl.where(own, j, j - n_chunks)
    if own | (jj < n_next):
        _issue(jj, step % STAGES, gl.where(own, slot0, slot0_n), gl.where(own, i_hv, hv_n),
               gl.where(own, tok0, tok0_n), gl.where(own, v_col, v_col_n), kg_d, ku_d, qg_d, mu_d, v_d, eg_d, kgku_s,
               qg_s, mu_s, v_s, eg_s, bars, HV, BT)


@gluon.jit
def _chunk(c, S, done, n_chunks, n_next, known, known_n, T_n, tok0, o_col, slot0, i_hv, v_col, row, slot0_n,
           hv_n, tok0_n, v_col_n, row_n, HV, kg_d, ku_d, qg_d, mu_d, v_d, eg_d, o_d, kgku_s, qg_s,
           mu_s, v_s, eg_s, o_s, s_sm, r_sm, bars, o_tc, zero_t, K: gl.constexpr, V: gl.constexpr, BT: gl.constexpr,
           MMA_K: gl.constexpr, MMA_T: gl.constexpr, STAGES: gl.constexpr, NARROW: gl.constexpr,
           CROSS: gl.constexpr, drop, DISCARD: gl.constexpr):
    """Step c of a walk. CROSS: one of its last STAGES steps, whose requests and flag checks may be the next walk's
    (the others' are the walk's own: no selects in the chain's loop). DISCARD: drop = (the workspace's Kg, Ku, Qg and
    Mu pointers, the step word of the lane's programs, i_v): the last of a lane's column programs drops a read
    chunk's workspace lines from L2 once every program of the lane has its tiles (_discard_chunk). With two, each
    step starts, after its fence, with the first publishing how many of its steps' tiles have arrived (step) and the
    second loading that count; at the step's end the second drops chunk c - 2 where the first had the tiles of
    step - 2 by then (a predicate of the drops, so nothing waits for the load). Both after the fence, so that the
    next step's fence does not wait for them (_seen)."""
    step = done + c
    slot = step % STAGES
    NCOL: gl.constexpr = V // 64
    _o_flush(o_d, o_s, tok0, o_col, c, BT)         # slot (step - 1) % STAGES is free: it takes chunk c + STAGES - 1
    seen = gl.zeros([STEP_WORDS], gl.int32, LANE_WORD)
    if DISCARD:
        if NCOL > 1:
            if drop[5] == 0:
                _publish(drop[4], step)
            elif drop[5] == NCOL - 1:
                seen = _seen(drop[4])
    if CROSS:
        _issue_at(c + STAGES - 1, step + STAGES - 1, n_chunks, n_next, slot0, i_hv, tok0, v_col, slot0_n, hv_n,
                  tok0_n, v_col_n, kg_d, ku_d, qg_d, mu_d, v_d, eg_d, kgku_s, qg_s, mu_s, v_s, eg_s, bars, HV, BT,
                  STAGES)
    else:
        _issue(c + STAGES - 1, (step + STAGES - 1) % STAGES, slot0, i_hv, tok0, v_col, kg_d, ku_d, qg_d, mu_d, v_d,
               eg_d, kgku_s, qg_s, mu_s, v_s, eg_s, bars, HV, BT)
    S, O = _step(S, c, T_n, slot, step, o_tc, zero_t, kgku_s, qg_s, mu_s, v_s, eg_s, s_sm, r_sm, bars, MMA_K, MMA_T,
                 BT, STAGES, NARROW)
    if DISCARD:     # this step's tiles have arrived (_step waited for them)
        if NCOL == 1:
            if c > 0:
                _discard_chunk(drop, (slot0 + c - 1) * HV + i_hv, K, BT, step * 0)
        elif drop[5] == NCOL - 1:
            if c > 1:
                _discard_chunk(drop, (slot0 + c - 2) * HV + i_hv, K, BT, seen - (step - 1))
    # the flag of the chunk the next step requests, while these products run: waited for where the request is made,
    # its load's round trip to L2 stood in the chain (1.65-1.85 us a step beside the prepare kernel)
    if CROSS:
        known, known_n = _wait_at(c + STAGES, n_chunks, n_next, row, row_n, slot0, slot0_n, known, known_n)
    else:
        known = _wait_ready(row, slot0 + c + STAGES, known)
    O, S = warpgroup_mma_wait(0, deps=(O, S))
    _o_stash(O, o_s, c, NARROW)
    return S, known, known_n


@gluon.jit
def _state_tile(n, i_hv, i_v, HV, K: gl.constexpr, V: gl.constexpr, BV: gl.constexpr, STATE_V_FIRST: gl.constexpr):
    """Coordinates of state columns i_v BV.. of (sequence n, head i_hv) in a state descriptor: the state [N, HV, K, V]
    as rows of V in [K, BV] tiles, or [N, HV, V, K] as rows of K in [BV, K] tiles."""
    if STATE_V_FIRST:
        return ((n * HV + i_hv) * V + i_v * BV).to(gl.int32), i_v * 0
    else:
        return ((n * HV + i_hv) * K).to(gl.int32), i_v * BV


@gluon.jit
def _h0_request(h0_d, h0_s, h0_bar, n, i_hv, i_v, HV, K: gl.constexpr, V: gl.constexpr, BV: gl.constexpr,
                STATE_V_FIRST: gl.constexpr):
    """Requests state columns i_v BV.. of (sequence n, head i_hv)'s initial state into h0_s by TMA."""
    mbarrier.expect(h0_bar, h0_d.block_type.nbytes)
    r, c = _state_tile(n, i_hv, i_v, HV, K, V, BV, STATE_V_FIRST)
    tma.async_copy_global_to_shared(h0_d, [r, c], h0_bar, h0_s)


@gluon.jit
def _ht_stash(S, ht_d, kgku_s, slot, n_chunks, STATE_V_FIRST: gl.constexpr):
    """A walk's final state into the ring's slot `slot` (the walk's last step's: every product that read it is waited
    for, and the next request into it follows the next step's store_wait), for a TMA store. After a walk of no
    chunks, that slot may be the one the walk before stored its final state from: its store must have read it."""
    if n_chunks == 0:
        tma.store_wait(0)
    buf = kgku_s.index(slot)._reinterpret(ht_d.dtype, ht_d.block_type.shape, ht_d.layout)
    if STATE_V_FIRST:
        buf.store(S.to(ht_d.dtype))
    else:
        buf.permute((1, 0)).store(S.to(ht_d.dtype))
    return buf


@gluon.jit
def _walk(w, lane0, n_walks, lanes_step, i_v, cur, done, known, h0, h0_d, h0_s, h0_bar, ht, ht_d, ready,
          cu_seqlens, chunk_offsets, T, N, NT, NSLOTS, HV, s_vh, st_off, kg_d, ku_d, qg_d, mu_d, v_d, eg_d, o_d,
          kgku_s, qg_s, mu_s, v_s, eg_s, o_s, s_sm, r_sm, bars, K: gl.constexpr, V: gl.constexpr, BV: gl.constexpr,
          BT: gl.constexpr, HAS_H0: gl.constexpr, H0_TMA: gl.constexpr, STORE_HT: gl.constexpr,
          STATE_V_FIRST: gl.constexpr, IS_VARLEN: gl.constexpr, MMA_K: gl.constexpr, MMA_T: gl.constexpr,
          STAGES: gl.constexpr, NARROW: gl.constexpr, drop, DISCARD: gl.constexpr, HT_TMA: gl.constexpr):
    """The program's walk w: the chain of one (sequence, head, BV columns), cur = _walk_at(w); done: chunks the
    program walked before (the ring's position); known: the _wait_ready bound of its flag row. The ring runs on into
    the next walk: its first chunks' flags are waited for and their tiles requested during this walk's last steps,
    and (H0_TMA) its initial state is requested into shared memory once this walk has read its own, so a walk starts
    with its tiles and its state in place (perf-notes v27): at step (program id) % H0_SPREAD of the walk, or after its
    last own step where it has fewer. The programs' walks start together where the lanes' sequences are alike, and
    requested at a walk's start, 64 programs' 32 KB went out at once (perf-notes v49: -0.4 to -0.7% at 8 to 64
    sequences a head). Returns (the next walk's params, done + this walk's
    chunks, the next walk's known bound). A partial last chunk's o tile covers rows past the sequence: clipped at the
    end of o, and otherwise rewritten later by this program (varlen: the next sequences of the head; fixed length has
    whole chunks where it has several sequences)."""
    i_n, i_hv, slot0, tok0, T_n, n_chunks = cur
    nxt = _walk_at(w + 1, lane0, n_walks, lanes_step, cu_seqlens, chunk_offsets, T, N, NT, NSLOTS, HV, BT, IS_VARLEN)
    n_n, hv_n, slot0_n, tok0_n, T_nn, n_next = nxt
    v_col = (i_hv * s_vh + i_v * BV).to(gl.int32)
    v_col_n = (hv_n * s_vh + i_v * BV).to(gl.int32)
    o_col = (i_hv * V + i_v * BV).to(gl.int32)
    st_base = ((i_n * HV + i_hv) * K).to(gl.int64) * V
    h0_step = gl.program_id(0) % H0_SPREAD            # the step of this walk that requests the next one's state
    if H0_TMA:
        mbarrier.wait(h0_bar, w & 1)
        if STATE_V_FIRST:
            S = h0_s.load(MMA_K).to(gl.float32)
        else:
            S = h0_s.permute((1, 0)).load(MMA_K).to(gl.float32)
        gl.thread_barrier()                          # every warp has read h0_s: it may take the next walk's
    else:           # requested before the flags are waited for: the caller's input, not the prepare kernel's output
        S = _initial_state(h0, st_base, st_off, K, BV, MMA_K, HAS_H0, NARROW)
    row = ready + i_hv * flag_row(NSLOTS)            # the heads' flags, one byte per slot
    row_n = ready + hv_n * flag_row(NSLOTS)
    known_n = slot0_n                                # nothing known set yet in the next walk
    # the walk before requested this one's first min(STAGES - 1, n_chunks) chunks (the program's first: none)
    pre = gl.where(w > 0, gl.minimum(n_chunks, STAGES - 1), 0)
    for j in gl.static_range(STAGES):
        known, known_n = _wait_at(j, n_chunks, n_next, row, row_n, slot0, slot0_n, known, known_n)
        if j < STAGES - 1:
            if j >= pre:
                _issue_at(j, done + j, n_chunks, n_next, slot0, i_hv, tok0, v_col, slot0_n, hv_n, tok0_n, v_col_n,
                          kg_d, ku_d, qg_d, mu_d, v_d, eg_d, kgku_s, qg_s, mu_s, v_s, eg_s, bars, HV, BT, STAGES)
    o_tc, zero_t = _token_rows(BT, BV, MMA_T, NARROW)
    n_own = gl.maximum(n_chunks - STAGES, 0)          # steps whose requests and checks are all this walk's
    for c in range(n_own):
        S, known, known_n = _chunk(c, S, done, n_chunks, n_next, known, known_n, T_n, tok0, o_col,
                                   slot0, i_hv, v_col, row, slot0_n, hv_n, tok0_n, v_col_n, row_n, HV, kg_d,
                                   ku_d, qg_d, mu_d, v_d, eg_d, o_d, kgku_s, qg_s, mu_s, v_s, eg_s, o_s,
                                   s_sm, r_sm, bars, o_tc, zero_t, K, V, BT, MMA_K, MMA_T, STAGES, NARROW,
                                   False, drop, DISCARD)
        if H0_TMA:
            if (c == h0_step) & (w + 1 < n_walks):
                _h0_request(h0_d, h0_s, h0_bar, n_n, hv_n, i_v, HV, K, V, BV, STATE_V_FIRST)
    if H0_TMA:
        if (n_own <= h0_step) & (w + 1 < n_walks):     # a walk of fewer own steps: after the last of them
            _h0_request(h0_d, h0_s, h0_bar, n_n, hv_n, i_v, HV, K, V, BV, STATE_V_FIRST)
    for c in range(n_own, n_chunks):
        S, known, known_n = _chunk(c, S, done, n_chunks, n_next, known, known_n, T_n, tok0, o_col,
                                   slot0, i_hv, v_col, row, slot0_n, hv_n, tok0_n, v_col_n, row_n, HV, kg_d,
                                   ku_d, qg_d, mu_d, v_d, eg_d, o_d, kgku_s, qg_s, mu_s, v_s, eg_s, o_s,
                                   s_sm, r_sm, bars, o_tc, zero_t, K, V, BT, MMA_K, MMA_T, STAGES, NARROW,
                                   True, drop, DISCARD)
    if HT_TMA:      # the final state leaves by TMA from the ring slot the walk's last step has read (_ht_stash)
        ht_buf = _ht_stash(S, ht_d, kgku_s, (done + n_chunks + STAGES - 1) % STAGES, n_chunks, STATE_V_FIRST)
    _o_last(o_d, o_s, tok0, o_col, n_chunks, BT)    # its fence and barrier cover the final state's tile too
    if HT_TMA:
        r, cc = _state_tile(i_n, i_hv, i_v, HV, K, V, BV, STATE_V_FIRST)
        tma.async_copy_shared_to_global(ht_d, [r, cc], ht_buf)
    elif STORE_HT:
        gl.store(ht + st_base + st_off, S.to(ht.dtype.element_ty))
    return nxt, done + n_chunks, known_n


@gluon.jit
def _state_offsets(i_v, BV: gl.constexpr, K: gl.constexpr, V: gl.constexpr, STATE_V_FIRST: gl.constexpr,
                   LAYOUT: gl.constexpr, COL_DIM: gl.constexpr):
    """Offsets of state columns i_v * BV .. + BV of a [K, V] state ([V, K] with STATE_V_FIRST) in a tile of layout
    LAYOUT whose dim COL_DIM holds the columns and whose other dim holds the key dims."""
    cols = gl.expand_dims(i_v * BV + gl.arange(0, BV, layout=gl.SliceLayout(1 - COL_DIM, LAYOUT)), 1 - COL_DIM)
    o_k = gl.expand_dims(gl.arange(0, K, layout=gl.SliceLayout(COL_DIM, LAYOUT)), COL_DIM)
    if STATE_V_FIRST:
        return cols * K + o_k
    else:
        return o_k * V + cols


@gluon.jit
def _produce(lane0, n_walks, group_lanes, ready, cu_seqlens, chunk_offsets, T, N, NT, NSLOTS, HV, s_vh, i_v, kg_d,
             ku_d, qg_d, mu_d, v_d, eg_d, kgku_s, qg_s, mu_s, v_s, eg_s, full, empty, BV: gl.constexpr,
             BT: gl.constexpr, IS_VARLEN: gl.constexpr, STAGES: gl.constexpr):
    """The producer warp of a whole-multiprocessor program: walks the program's chunks in the chain's order and, for
    each, waits until its ring slot is free (empty) and its ready flag is set, then requests its tiles into the slot
    (full). The chain's warpgroup (_consume) then neither checks flags nor requests tiles."""
    done = lane0 * 0
    for w in range(n_walks):
        i_n, i_hv, slot0, tok0, T_n, n_chunks = _walk_at(w, lane0, n_walks, group_lanes, cu_seqlens, chunk_offsets, T,
                                                         N, NT, NSLOTS, HV, BT, IS_VARLEN)
        v_col = (i_hv * s_vh + i_v * BV).to(gl.int32)
        row = ready + i_hv * flag_row(NSLOTS)
        known = slot0
        for c in range(n_chunks):
            step = done + c
            slot = step % STAGES
            mbarrier.wait(empty.index(slot), ((step // STAGES) & 1) ^ 1)
            known = _wait_ready(row, slot0 + c, known)
            _issue(c, slot, slot0, i_hv, tok0, v_col, kg_d, ku_d, qg_d, mu_d, v_d, eg_d, kgku_s, qg_s, mu_s, v_s,
                   eg_s, full, HV, BT)
        done += n_chunks


@gluon.jit
def _consume(lane0, n_walks, group_lanes, i_v, h0, ht, cu_seqlens, chunk_offsets, T, N, NT, NSLOTS, HV, st_off, o_d,
             kgku_s, qg_s, mu_s, v_s, eg_s, o_s, s_sm, r_sm, full, empty, K: gl.constexpr, V: gl.constexpr,
             BV: gl.constexpr, BT: gl.constexpr, HAS_H0: gl.constexpr, STORE_HT: gl.constexpr,
             STATE_V_FIRST: gl.constexpr, IS_VARLEN: gl.constexpr, MMA_K: gl.constexpr, MMA_T: gl.constexpr,
             STAGES: gl.constexpr, NARROW: gl.constexpr):
    """The chain's warpgroup beside a producer warp (_produce): the program's walks one after the other, each chunk's
    tiles waited for in the ring (full), its slot handed back (empty) once every warp is done with it."""
    o_tc, zero_t = _token_rows(BT, BV, MMA_T, NARROW)
    done = lane0 * 0
    for w in range(n_walks):
        i_n, i_hv, slot0, tok0, T_n, n_chunks = _walk_at(w, lane0, n_walks, group_lanes, cu_seqlens, chunk_offsets, T,
                                                         N, NT, NSLOTS, HV, BT, IS_VARLEN)
        o_col = (i_hv * V + i_v * BV).to(gl.int32)
        st_base = ((i_n * HV + i_hv) * K).to(gl.int64) * V
        S = _initial_state(h0, st_base, st_off, K, BV, MMA_K, HAS_H0, NARROW)
        for c in range(n_chunks):
            step = done + c
            _o_flush(o_d, o_s, tok0, o_col, c, BT)
            if c > 0:   # every warp is done with chunk c - 1: its slot goes back to the producer
                mbarrier.arrive(empty.index((step - 1) % STAGES))
            S, O = _step(S, c, T_n, step % STAGES, step, o_tc, zero_t, kgku_s, qg_s, mu_s, v_s, eg_s, s_sm, r_sm,
                         full, MMA_K, MMA_T, BT, STAGES, NARROW)
            O, S = warpgroup_mma_wait(0, deps=(O, S))
            _o_stash(O, o_s, c, NARROW)
        _o_last(o_d, o_s, tok0, o_col, n_chunks, BT)
        if n_chunks > 0:    # and with the last chunk's slot
            mbarrier.arrive(empty.index((done + n_chunks - 1) % STAGES))
        if STORE_HT:
            gl.store(ht + st_base + st_off, S.to(ht.dtype.element_ty))
        done += n_chunks
    tma.store_wait(0)


@gluon.jit(do_not_specialize=["HV", "N", "NSLOTS", "lanes", "group_lanes"])
def kda_chunk_state_sm90_kernel(
    kg_d, ku_d, qg_d, mu_d, v_d, eg_d, o_d, h0, h0_d, ht, ht_d, ready, cu_seqlens, chunk_offsets, T, N, NT, NSLOTS,
    HV, s_vh, lanes, group_lanes, K: gl.constexpr, V: gl.constexpr, BV: gl.constexpr, BT: gl.constexpr,
    HAS_H0: gl.constexpr, STORE_HT: gl.constexpr, STATE_V_FIRST: gl.constexpr, IS_VARLEN: gl.constexpr,
    STAGES: gl.constexpr, H0_TMA: gl.constexpr = False, PRODUCER: gl.constexpr = False, ws_kg=None, ws_ku=None,
    ws_qg=None, ws_mu=None, DISCARD: gl.constexpr = False, HT_TMA: gl.constexpr = False,
):
    """Grid: group_lanes x V / BV programs. Program p takes BV state columns (64, or 32: narrow), p % (V / BV), of lanes
    p // (V / BV), that + group_lanes, ..., one after the other: group by group, the order in which the prepare kernel
    produces the chunks (chunk_prepare_sm90._grouped_chunk), so that no more programs than fit beside the prepare kernel
    wait on it. A lane is a (sequence, head) of a fixed-length batch of N sequences of T tokens (lane = sequence HV +
    head; B = 1 or T a multiple of 64, so that o's tiles cross no sequence but at the end of o), or with IS_VARLEN a
    head, whose N sequences (cu_seqlens; their chunks from workspace slot chunk_offsets[n], none at NSLOTS or past it)
    the program walks in turn.
    kg_d, ku_d, qg_d, mu_d: tensor descriptors over the workspace [slots, HV, 64, D] as rows, one chunk a [64, D]
    tile; eg_d over exp(G) [slots HV, K] in [1, K] tiles; v_d and o_d over v and o [B T, HV s_h] as token rows in
    [64, BV] tiles; ready: a row of common.flag_row(NSLOTS) bytes per head, byte `slot` nonzero once the prepare
    program of that (chunk slot, head) has stored its outputs. h0, ht [N, HV, K, V] (or [N, HV, V, K] with
    STATE_V_FIRST). STAGES: slots of the ring (2 or 3, above). PRODUCER: a producer warp checks the flags and
    requests the tiles (_produce), for programs that take a whole multiprocessor (its warps and registers leave no
    room for a prepare program); H0_TMA: the next walk's initial state requested into shared memory while a walk runs
    (programs beside a prepare program). DISCARD (64-column programs without a producer): the workspace lines of each
    chunk (ws_kg, ws_ku, ws_qg, ws_mu: the workspace's pointers) are dropped from L2 once the lane's programs have read
    them (_chunk), so that they are never written back to DRAM; a lane's first program publishes its steps to the
    second in 128 int32 words a lane (of a group) after the flag rows, zeroed with them. HT_TMA (programs beside a
    prepare program): ht_d, a descriptor over ht as h0_d over h0, takes each walk's final state from shared memory
    (_ht_stash): stored through pointers, the next step's fence waited for the stores (perf-notes v45)."""
    gl.static_assert(not (PRODUCER and H0_TMA), "the initial state's tile fits only beside a two-slot ring")
    gl.static_assert(not DISCARD or (BV == 64 and not PRODUCER), "dropped lines: 64-column programs beside prepare")
    gl.static_assert(not HT_TMA or (BV == 64 and STAGES == 2), "the final state's tile: a two-slot ring's Kg and Ku")
    gl.static_assert((BV == 64) | (BV == 32), "64 columns (the transposed state fills a warpgroup's rows) or 32")
    NARROW: gl.constexpr = BV == 32     # the state as it is, [K, 32]
    NCOL: gl.constexpr = V // BV
    pid = gl.program_id(0)
    i_v = pid % NCOL

    if NARROW:
        MMA_K: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BV, 16])
        MMA_T: gl.constexpr = MMA_K
    else:
        MMA_K: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, K, 16])
        MMA_T: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BT, 16])

    # a slot's Kg and Ku tiles side by side: a walk's final state leaves from them (HT_TMA)
    kgku_s = gl.allocate_shared_memory(gl.bfloat16, [STAGES, 2 * BT, K], kg_d.layout)
    qg_s = gl.allocate_shared_memory(gl.bfloat16, [STAGES, BT, K], qg_d.layout)
    mu_s = gl.allocate_shared_memory(gl.bfloat16, [STAGES, BT, BT], mu_d.layout)
    v_s = gl.allocate_shared_memory(v_d.dtype, [STAGES, BT, BV], v_d.layout)
    eg_s = gl.allocate_shared_memory(gl.float32, [STAGES, 1, K], eg_d.layout)
    o_s = gl.allocate_shared_memory(o_d.dtype, [2, BT, BV], o_d.layout)
    if NARROW:      # the products' B operands, S and R in bf16
        SB: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=2 * BV, element_bitwidth=16, rank=2)
        s_sm = gl.allocate_shared_memory(gl.bfloat16, [K, BV], SB)
        r_sm = gl.allocate_shared_memory(gl.bfloat16, [BT, BV], SB)
    else:
        s_sm = o_s
        r_sm = o_s
    bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(bars.index(i), count=1)
    if PRODUCER:    # the ring's slots handed back to the producer warp
        empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(STAGES):
            mbarrier.init(empty.index(i), count=1)
    else:
        empty = bars
    if H0_TMA:      # the next walk's initial state, requested while this walk runs
        h0_s = gl.allocate_shared_memory(h0_d.dtype, h0_d.block_type.shape, h0_d.layout)
        h0_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        mbarrier.init(h0_bar, count=1)
    else:
        h0_s = o_s
        h0_bar = bars
    fence_async_shared()

    # narrow: S, row k is key dim k, column j is state column i_v * BV + j; else S^T, the other way round
    st_off = _state_offsets(i_v, BV, K, V, STATE_V_FIRST, MMA_K, 1 if NARROW else 0)
    # the program's walks, one after the other: lanes lane0, lane0 + group_lanes, ... (a varlen lane: each sequence
    # of the head in turn)
    lane0 = pid // NCOL
    n_walks = gl.cdiv(lanes - lane0, group_lanes)
    if IS_VARLEN:
        n_walks *= N
    if PRODUCER:
        gl.warp_specialize([
            (_consume, (lane0, n_walks, group_lanes, i_v, h0, ht, cu_seqlens, chunk_offsets, T, N, NT, NSLOTS, HV,
                        st_off, o_d, kgku_s, qg_s, mu_s, v_s, eg_s, o_s, s_sm, r_sm, bars, empty, K, V, BV, BT,
                        HAS_H0, STORE_HT, STATE_V_FIRST, IS_VARLEN, MMA_K, MMA_T, STAGES, NARROW)),
            (_produce, (lane0, n_walks, group_lanes, ready, cu_seqlens, chunk_offsets, T, N, NT, NSLOTS, HV, s_vh, i_v,
                        kg_d, ku_d, qg_d, mu_d, v_d, eg_d, kgku_s, qg_s, mu_s, v_s, eg_s, bars, empty, BV, BT,
                        IS_VARLEN, STAGES)),
        ], [1], [48])
    else:
        cur = _walk_at(lane0 * 0, lane0, n_walks, group_lanes, cu_seqlens, chunk_offsets, T, N, NT, NSLOTS, HV, BT,
                       IS_VARLEN)
        done = pid * 0                               # chunks this program has walked: the ring's position
        known = cur[2]                               # nothing known set yet in the first walk's flag row
        if H0_TMA:
            if n_walks > 0:
                _h0_request(h0_d, h0_s, h0_bar, cur[0], cur[1], i_v, HV, K, V, BV, STATE_V_FIRST)
        words = (ready + HV * flag_row(NSLOTS)).to(gl.pointer_type(gl.int32)) + lane0 * STEP_WORDS  # the lane's words
        drop = (ws_kg, ws_ku, ws_qg, ws_mu, words, i_v)
        for w in range(n_walks):
            cur, done, known = _walk(w, lane0, n_walks, group_lanes, i_v, cur, done, known, h0, h0_d, h0_s, h0_bar,
                                     ht, ht_d, ready, cu_seqlens, chunk_offsets, T, N, NT, NSLOTS, HV, s_vh,
                                     st_off, kg_d, ku_d, qg_d, mu_d, v_d, eg_d, o_d, kgku_s, qg_s, mu_s, v_s, eg_s,
                                     o_s, s_sm, r_sm, bars, K, V, BV, BT, HAS_H0, H0_TMA, STORE_HT, STATE_V_FIRST,
                                     IS_VARLEN, MMA_K, MMA_T, STAGES, NARROW, drop, DISCARD, HT_TMA)
        tma.store_wait(0)
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(bars.index(i))
        if PRODUCER:
            mbarrier.invalidate(empty.index(i))
    if H0_TMA:
        mbarrier.invalidate(h0_bar)
