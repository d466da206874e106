"""The split path's transition pass on Hopper (sm_90), in Gluon: the TRANSITION mode of the Triton state kernel
(chunk_state.py; docs/split.md), each segment's map [B | P] from one run of the chunk recurrence over the columns
[V | K] started from [0 | I], with the state carried transposed, S^T [64, K], as in the overlapped state kernel
(chunk_state_sm90.py): the chain's left operands come from registers, so nothing is staged in shared memory per
chunk. The Triton kernel stores S and R to shared memory, fences and waits at a barrier before each product.
    X^T = S^T Kg^T,  R^T = v^T - X^T (P columns: -X^T),  S^T <- S^T diag(exp(G)) + R^T Ku
Same bf16 operands and fp32 accumulation as the Triton kernel. The tiles arrive by TMA into a ring of STAGES slots;
two slots take 81 KB of shared memory at K = 128, so two programs share a multiprocessor.
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma, warpgroup_mma

from fastkda.kernels.chunk_state_sm90 import _state_offsets
from fastkda.kernels.common import after_prior_grid, segment_chunks, segment_of, sequence_bounds


@gluon.jit
def _issue(c, slot, ws_chunk0, v_row0, v_col, has_v, HV, kg_d, ku_d, v_d, eg_d, kg_s, ku_s, v_s, eg_s, bars,
           BT: gl.constexpr):
    """Requests chunk c's tiles (c counted from the segment's first, whose workspace slot is ws_chunk0 for this
    head's rows) into ring slot `slot`; v only where has_v (the columns of B)."""
    bar = bars.index(slot)
    # one arrival a phase (an expect is an arrival): with v or without it
    mbarrier.expect(bar, kg_d.block_type.nbytes * 2 + eg_d.block_type.nbytes + v_d.block_type.nbytes, pred=has_v)
    mbarrier.expect(bar, kg_d.block_type.nbytes * 2 + eg_d.block_type.nbytes, pred=not has_v)
    row = (ws_chunk0 + c * HV) * BT
    tma.async_copy_global_to_shared(kg_d, [row, 0], bar, kg_s.index(slot))
    tma.async_copy_global_to_shared(ku_d, [row, 0], bar, ku_s.index(slot))
    tma.async_copy_global_to_shared(eg_d, [ws_chunk0 + c * HV, 0], bar, eg_s.index(slot))
    tma.async_copy_global_to_shared(v_d, [v_row0 + c * BT, v_col], bar, v_s.index(slot), pred=has_v)


@gluon.jit(do_not_specialize=["T", "N", "NT", "NSLOTS", "NCS", "NSEARCH", "HV", "s_vh"])
def kda_transition_sm90_kernel(
    kg_d, ku_d, v_d, eg_d, seg_trans, cu_seqlens, seg_offsets, chunk_offsets, T, N, NT, NSLOTS, NCS, NSEARCH, HV,
    s_vh, K: gl.constexpr, V: gl.constexpr, BV: gl.constexpr, BT: gl.constexpr, IS_VARLEN: gl.constexpr,
    PDL: gl.constexpr, STAGES: gl.constexpr,
):
    """Grid: one program per (segment, value head, 64 of the V + K columns), as the Triton state kernel's
    TRANSITION launch; the last segment of each sequence has no map and exits. kg_d, ku_d: tensor descriptors over
    the workspace [slots, HV, 64, K] as rows, one chunk a [64, K] tile; eg_d over exp(G) [slots HV, K] in [1, K]
    tiles; v_d over v [B T, HV s_vh] as token rows in [64, BV] tiles (forward.v_tile_desc). Writes seg_trans
    [segments, HV, K, V + K] (columns :V hold B, V: hold P). PDL: launched as a programmatic dependent of the
    prepare kernel, whose outputs are read only past the wait."""
    gl.static_assert(BV == 64, "the transposed state fills a warpgroup's 64 rows")
    NCOL: gl.constexpr = (V + K) // BV
    MMA_K: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, K, 16])
    MMA_T: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, BT, 16])
    OPA_T: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=MMA_T, k_width=2)
    OPA_K: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=MMA_K, k_width=2)
    pid = gl.program_id(0)
    i_v = pid % NCOL
    i_hv = (pid // NCOL) % HV
    i_g = pid // (NCOL * HV)

    kg_s = gl.allocate_shared_memory(gl.bfloat16, [STAGES, BT, K], kg_d.layout)
    ku_s = gl.allocate_shared_memory(gl.bfloat16, [STAGES, BT, K], ku_d.layout)
    v_s = gl.allocate_shared_memory(v_d.dtype, [STAGES, BT, BV], v_d.layout)
    eg_s = gl.allocate_shared_memory(gl.float32, [STAGES, 1, K], eg_d.layout)
    bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(bars.index(i), count=1)
    fence_async_shared()

    if PDL:
        i_g = after_prior_grid(i_g)
    i_n, i_s, live = segment_of(i_g, seg_offsets, N, T, NCS, NSEARCH, IS_VARLEN)
    if not live:
        return
    bos, eos = sequence_bounds(cu_seqlens, i_n, T, IS_VARLEN)
    i_b, slot0, c_begin, c_end, is_last = segment_chunks(i_n, i_s, chunk_offsets, bos, eos, NT, NSLOTS, NCS, BT,
                                                          IS_VARLEN)
    if is_last:       # a sequence's last segment: no map
        return
    seq_len = (eos - bos).to(gl.int32)
    n = (c_end - c_begin).to(gl.int32)

    # S^T: row j is column i_v BV + j of [B | P], column k is key dim k; P's columns start from the identity
    has_v = i_v * BV < V
    rows = gl.expand_dims(gl.arange(0, BV, layout=gl.SliceLayout(1, MMA_K)), 1)
    o_k = gl.expand_dims(gl.arange(0, K, layout=gl.SliceLayout(0, MMA_K)), 0)
    S = gl.where(o_k == i_v * BV - V + rows, 1.0, 0.0)
    ws_chunk0 = ((slot0 + c_begin) * HV + i_hv).to(gl.int32)
    v_row0 = (i_b * T + bos + c_begin * BT).to(gl.int32)
    v_col = (i_hv * s_vh + i_v * BV).to(gl.int32)
    for i in gl.static_range(STAGES - 1):
        if i < n:
            _issue(i, i, ws_chunk0, v_row0, v_col, has_v, HV, kg_d, ku_d, v_d, eg_d, kg_s, ku_s, v_s, eg_s, bars, BT)
    o_t = gl.expand_dims(gl.arange(0, BT, layout=gl.SliceLayout(0, MMA_T)), 0)
    zero_t = gl.zeros([BV, BT], gl.float32, MMA_T)
    for j in range(n):
        slot = j % STAGES
        # every warp is done with chunk j - 1: its slot takes chunk j + STAGES - 1
        gl.thread_barrier()
        if j + STAGES - 1 < n:
            _issue(j + STAGES - 1, (j + STAGES - 1) % STAGES, ws_chunk0, v_row0, v_col, has_v, HV, kg_d, ku_d, v_d,
                   eg_d, kg_s, ku_s, v_s, eg_s, bars, BT)
        Sa = gl.convert_layout(S.to(gl.bfloat16), OPA_T)
        mbarrier.wait(bars.index(slot), (j // STAGES) & 1)
        X = warpgroup_mma(Sa, kg_s.index(slot).permute((1, 0)), zero_t, use_acc=False)
        eg = eg_s.index(slot).load(MMA_K)
        if has_v:
            R = v_s.index(slot).permute((1, 0)).load(MMA_T).to(gl.float32) - X
        else:
            R = -X
        c = c_begin + j
        if (c + 1) * BT > seq_len:      # rows past the sequence (Ku zeroes them already, but v there may be inf)
            R = gl.where(c * BT + o_t < seq_len, R, 0.0)
        S = warpgroup_mma(gl.convert_layout(R.to(gl.bfloat16), OPA_K), ku_s.index(slot), S * eg)
    gl.store(seg_trans + ((i_g * HV + i_hv) * K).to(gl.int64) * (V + K) + _state_offsets(i_v, BV, K, V + K, False,
                                                                                        MMA_K, 0), S)
    for i in gl.static_range(STAGES):
        mbarrier.invalidate(bars.index(i))
