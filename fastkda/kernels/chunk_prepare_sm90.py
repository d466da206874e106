"""Stage 1 of the KDA forward on Hopper (sm_90) at K = 64 and 128, in Gluon (Triton's layout-explicit dialect).

The same program as `kda_chunk_prepare_kernel` (chunk_prepare.py: one program per (64-token chunk, value head),
the same outputs, the halves' anchoring of the scores, the same inverse). What Triton's block-level language
cannot express is where each tile lives (docs/design.md):
  - the gate's running sum runs in a layout where each warp owns all 64 tokens of 8 key dims (L below), so the
    sum and the anchors take shuffles inside a warp instead of shared memory and barriers; the slice is loaded
    and stored in a coalesced layout (C) and converted twice;
  - the score products take their left operands (the factored k and q rows) from the registers that computed
    them, read as wgmma's operand layout with the tokens and the key dims relabeled (_operand_rows): only the
    right operand, k exp2(-t) of the slice, goes to shared memory, and the products are of 32 columns (early and
    late tokens), so none reads zeros. They are issued asynchronously and waited for at the end of the slice,
    after its stores; the scores keep the relabeled row order (below);
  - k exp(G - gamma) and the scores M stay in shared memory until the inverse is known, instead of a round
    trip through global memory;
  - a slice's global loads and stores are issued after its fence, which would otherwise wait for them; q, k and g
    are read two slices ahead, 16-bit values as int32 pairs (4-byte aligned data and even strides; other 16-bit
    views take the portable kernel), fp32 as they are. At K = 128 the 16-bit slices 2 and 3 come by cp.async into
    shared memory, requested in slice 0 and waited for at the end of slice 1: a fence waits for the thread's
    loads in flight but not for its async copies, so no slice's fence waits for the next slices' rows;
  - after its score loop a program asks L2 for the rows of the program `ahead` programs on, so that the loads a fence
    waits for come from L2, not DRAM;
  - the inverse runs in the scores' order (_operand_rows' rows, the columns relabeled to match in registers), where
    each natural 8-token block is 8 rows of one warp: its 8 x 8 diagonal blocks come from a forward substitution
    inside each warp, by register shuffles; the three doubling levels after them take their products' left operands
    (T, then T (-A) masked) from registers where ptxas keeps the kernel's wgmma products asynchronous with them, and
    from shared memory in the variants where it serialized them (forward.prepare_inverse_form, checked by
    tools/compile_report.py --check-wgmma). Nothing is reordered to token order: M, Tb and Kd stay in the scores'
    order, and Mu's and Ku's rows are stored at their tokens' addresses.
Unbounded gates keep the halves' factoring where it fits; a chunk where it does not takes the portable kernel's
16-token levels in the same program (_scores_quarters, a called function so that it costs the common path no
registers), so every chunk is done in one launch. The key dims run as K / 32 slices of 32 columns. The portable
kernel remains the path for other GPUs and the interpreter (which cannot run Gluon); the GPU tests run both against
the float64 reference.
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import async_copy, mma_v2
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, tma, warpgroup_mma,
                                                             warpgroup_mma_init, warpgroup_mma_wait)
from triton.language import PropagateNan

from fastkda.kernels.common import (LOG2E, after_prior_grid, flag_row, halves_operands, mark_ready, prefetch_l2,
                                    varlen_chunk_rows)


@gluon.jit
def _add(a, b):
    return a + b


NAN_PROPAGATES = gl.constexpr(PropagateNan.ALL)


@gluon.jit
def _max_nan(a, b):
    """max that returns NaN if either is NaN (max.NaN: one instruction a pair)."""
    return gl.maximum(a, b, propagate_nan=NAN_PROPAGATES)


@gluon.jit
def _rcp(x):
    """1 / x on the special-function unit (as common.rcp_fast)."""
    return gl.inline_asm_elementwise("rcp.approx.ftz.f32 $0, $1;", "=r,r", [x], dtype=gl.float32, is_pure=True,
                                     pack=1)


@gluon.jit
def _lg2(x):
    """log2 on the special-function unit (as common.log2_fast)."""
    return gl.inline_asm_elementwise("lg2.approx.f32 $0, $1;", "=r,r", [x], dtype=gl.float32, is_pure=True, pack=1)


@gluon.jit
def _div(x, magic):
    """x // d for 0 <= x < 2^30 by a multiply-high and a shift, magic = forward.divisor_magic(d): a division by a
    runtime value takes some 30 instructions, on the path to a program's first loads."""
    m = (magic & 0xFFFFFFFF).to(gl.int32)
    hi = gl.inline_asm_elementwise("mul.hi.u32 $0, $1, $2;", "=r,r,r", [x << 2, m], dtype=gl.int32, is_pure=True,
                                   pack=1)
    return hi >> ((magic >> 32).to(gl.int32) - 1)


@gluon.jit
def _grouped_chunk(pid, group_lanes, NT, HV, div_span, div_group, div_heads):
    """(sequence, chunk, head, lane) of program pid where a fixed-length batch's lanes (sequence, head: lane =
    sequence HV + head) go by groups of group_lanes, each group chunk by chunk: the order in which the overlapped
    state kernel's programs walk them (chunk_state_sm90.py). The last group is padded to group_lanes: a lane past
    the batch's is no program's. div_*: divisor_magic of group_lanes NT, group_lanes and HV."""
    group = _div(pid, div_span)
    r = pid - group * group_lanes * NT
    chunk = _div(r, div_group)
    lane = group * group_lanes + r - chunk * group_lanes
    b = _div(lane, div_heads)
    return b, chunk, lane - b * HV, lane


@gluon.jit
def _slot_rows(slot, chunk_rows, NT, T, div_nt, BT: gl.constexpr, IS_VARLEN: gl.constexpr):
    """(batch row as int64, first token row, end of its sequence's rows) of a workspace slot: varlen, from the pairs
    of kda_schedule_kernel (common.varlen_chunk_rows); fixed length, slot = b NT + chunk, divided by NT through its
    magic number div_nt."""
    if IS_VARLEN:
        t0, eos = varlen_chunk_rows(chunk_rows, slot)
        return t0 * 0, t0, eos
    else:
        i_n = _div(slot, div_nt)
        t0 = ((slot - i_n * NT) * BT).to(gl.int64)
        return i_n.to(gl.int64), t0, t0 * 0 + T


@gluon.jit
def _gate_log2(b_g, bias, A_scale, s_gate, lower_bound, GATE: gl.constexpr):
    """Per-step log-decay in log2 units of a slice of g (common.gate_log2)."""
    if GATE == 0:
        a = b_g * LOG2E
    elif GATE == 1:
        x = b_g * LOG2E + bias * LOG2E
        a = -A_scale * gl.where(x > 28.0, x, _lg2(1.0 + gl.exp2(x)))
    else:
        a = lower_bound * LOG2E * _rcp(1.0 + gl.exp2(b_g * s_gate + bias * s_gate))
    return a


@gluon.jit
def _row_norms(first, second, p, s_t, valid, dep, K: gl.constexpr, C: gl.constexpr):
    """rsqrt(sum of squares + 1e-6) of the 64 rows of a [64, K] tile, SliceLayout(1, C): its first two slices from
    the score loop's own loads of them (first, second: _load_slice's), the key dims past 64 read at p (row stride
    s_t) in the slices' layout C, so the norms need no conversion to scale the slices' rows. Built from the slices,
    the norms wait for the loads the first slice waits for: read whole on their own, ptxas issued the slices' loads
    only once the norms were summed, two round trips to L2 before the loop instead of one. dep is added to the sums:
    the caller's exact zero that ties other start loads to the norms."""
    F16: gl.constexpr = p.dtype.element_ty == gl.float16
    x = _unpack_slice(first, C, F16)
    y = _unpack_slice(second, C, F16)
    ss = gl.sum(x * x + y * y, axis=1)
    if K > 64:
        o_t = gl.arange(0, 64, layout=gl.SliceLayout(1, C))
        o_k = 64 + gl.arange(0, K - 64, layout=gl.SliceLayout(0, C))
        z = gl.load(p + gl.expand_dims(o_t * s_t, 1) + gl.expand_dims(o_k, 0), mask=gl.expand_dims(valid, 1),
                    other=0.0).to(gl.float32)
        ss += gl.sum(z * z, axis=1)
    return gl.rsqrt(ss + dep + 1e-6)


@gluon.jit
def _slice_pointers(p, s_t, n_valid, C: gl.constexpr, C2: gl.constexpr):
    """Pointers and mask of the first [64, 32] slice of the [64, K] tile at p (row stride s_t): 16-bit values as
    [64, 16] int32 pairs in layout C2, so that a slice carried to a later iteration stays packed and nothing
    reads its registers before the slice uses them (a bf16 tile carried through a loop is unpacked right after
    its load, which waits for it); fp32 values as they are, in layout C."""
    if p.dtype.element_ty == gl.float32:
        t = gl.arange(0, 64, layout=gl.SliceLayout(1, C))
        c = gl.arange(0, 32, layout=gl.SliceLayout(0, C))
        return p + gl.expand_dims(t * s_t, 1) + gl.expand_dims(c, 0), gl.expand_dims(t < n_valid, 1)
    else:
        t = gl.arange(0, 64, layout=gl.SliceLayout(1, C2))
        c = gl.arange(0, 16, layout=gl.SliceLayout(0, C2))
        return (p.to(gl.pointer_type(gl.int32)) + gl.expand_dims(t * (s_t // 2), 1) + gl.expand_dims(c, 0),
                gl.expand_dims(t < n_valid, 1))


@gluon.jit
def _load_slice(ptrs, mask, h):
    """Slice h of _slice_pointers' tile (32 columns: 16 int32 pairs or 32 fp32 values)."""
    if ptrs.dtype.element_ty == gl.int32:
        return gl.load(ptrs + h * 16, mask=mask, other=0)
    else:
        return gl.load(ptrs + h * 32, mask=mask, other=0.0)


# the async-copied slices' tiles: [64, 16] int32 pairs, a thread's 16 bytes where its loads would put them
LATE_TILE = gl.constexpr(gl.SwizzledSharedLayout(1, 1, 1, order=[1, 0]))


@gluon.jit
def _score_tiles(NS: gl.constexpr, SH32: gl.constexpr):
    """The score loop's shared memory: the slice's right operand and k exp(G - gamma) of all slices (Kd)."""
    cols_s = gl.allocate_shared_memory(gl.bfloat16, [64, 32], SH32)
    kd_s = gl.allocate_shared_memory(gl.bfloat16, [NS, 64, 32], SH32)
    return cols_s, kd_s


@gluon.jit
def _late_tiles(kd_s):
    """The tiles slices 2 and 3 are copied into: g2, g3, k2, k3 and q2 as int32 pairs; q3 in Kd's slice-3 tile,
    unused until slice 3 stores its Kd (beside a state program a prepare program has 48 KB of shared memory: a sixth
    tile would not fit)."""
    late_s = gl.allocate_shared_memory(gl.int32, [5, 64, 16], LATE_TILE)
    return late_s, kd_s.index(3)._reinterpret(gl.int32, [64, 16], LATE_TILE)


@gluon.jit
def _copy_slice(g_s, k_s, q_s, p_g, m_g, p_k, m_k, p_q, m_q, col: gl.constexpr):
    """One slice of g, k and q (pairs from column `col`) by cp.async: each thread copies the pieces it loads in C2."""
    async_copy.async_copy_global_to_shared(g_s, p_g + col, mask=m_g)
    async_copy.async_copy_global_to_shared(k_s, p_k + col, mask=m_k)
    async_copy.async_copy_global_to_shared(q_s, p_q + col, mask=m_q)


@gluon.jit
def _unpack_slice(x, C: gl.constexpr, F16: gl.constexpr):
    """A loaded slice -> [64, 32] fp32 in layout C: fp32 as is; int32 pairs of bf16 (F16: fp16), element 2j in
    the low half."""
    if x.dtype == gl.float32:
        return gl.convert_layout(x, C)
    else:
        if F16:
            lo, hi = gl.inline_asm_elementwise(
                "{ .reg .b16 l, h; mov.b32 {l, h}, $2; cvt.f32.f16 $0, l; cvt.f32.f16 $1, h; }", "=r,=r,r", [x],
                dtype=(gl.float32, gl.float32), is_pure=True, pack=1)
        else:
            lo = (x << 16).to(gl.float32, bitcast=True)
            hi = (x & -65536).to(gl.float32, bitcast=True)
        return gl.convert_layout(gl.reshape(gl.join(lo, hi), [64, 32]), C)


@gluon.jit
def _prefetch_rows(p, rows, K: gl.constexpr, PF: gl.constexpr):
    """Asks L2 for the [64, K] rows at p + rows (offsets in SliceLayout(1, PF)), one request per 128-byte line."""
    LINE: gl.constexpr = 1024 // p.dtype.element_ty.primitive_bitwidth        # elements per 128-byte line
    c = gl.arange(0, K // LINE, layout=gl.SliceLayout(0, PF)) * LINE
    prefetch_l2(p + gl.expand_dims(rows, 1) + gl.expand_dims(c, 0))


@gluon.jit
def _sum_first_rows(x, n: gl.constexpr, L: gl.constexpr, COL: gl.constexpr):
    """Sum over the first n rows of x (layout L: a warp's column sums stay in the warp), as a [1, 32] row of COL."""
    t = gl.expand_dims(gl.arange(0, 64, layout=gl.SliceLayout(1, L)), 1)
    return gl.expand_dims(gl.convert_layout(gl.sum(gl.where(t < n, x, 0.0), axis=0), COL), 0)


@gluon.jit
def _add_product(rows, cols, acc):
    """acc += rows cols^T for [64, 32] fp32 operands, rounded to bf16, on the tensor cores from registers (mma.sync,
    acc in the layout V2 of _invert_unit_lower_tf32)."""
    OA: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=acc.type.layout, k_width=2)
    OB: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=acc.type.layout, k_width=2)
    return mma_v2(gl.convert_layout(rows.to(gl.bfloat16), OA),
                  gl.convert_layout(gl.permute(cols.to(gl.bfloat16), (1, 0)), OB), acc)


@gluon.jit
def _operand_rows(x, OA: gl.constexpr):
    """A [64, 32] slice in layout C as wgmma's left operand in the registers that hold it: the operand's row
    r = 32 t4 + 16 t3 + 8 t5 + t mod 8 holds token t (bits t5..t0) and its column 16 d2 + 8 d1 + 4 d4 + 2 d3 + d0
    holds key dim d. Both are relabelings of C's bits, so the conversion moves no data: the operand needs no tile in
    shared memory (_dims_permuted gives the right operand the same column order; _rows_reordered undoes the rows)."""
    y = gl.permute(gl.reshape(x, [2, 2, 2, 8, 2, 2, 2, 2, 2]), (1, 2, 0, 3, 6, 7, 4, 5, 8))
    return gl.convert_layout(gl.reshape(y, [64, 32]), OA)


@gluon.jit
def _dims_permuted(x):
    """A [64, 32] slice with its key dims in _operand_rows' column order (tokens unchanged)."""
    return gl.reshape(gl.permute(gl.reshape(x, [64, 2, 2, 2, 2, 2]), (0, 3, 4, 1, 2, 5)), [64, 32])


@gluon.jit
def _row_token(r):
    """The token of _operand_rows' row r."""
    return 32 * ((r >> 3) & 1) + 16 * ((r >> 5) & 1) + 8 * ((r >> 4) & 1) + (r & 7)


@gluon.jit
def _relabel_rows(x, TO_TOKENS: gl.constexpr):
    """[64, N] whose row r holds token _row_token(r) relabeled so that row t holds token t (TO_TOKENS), or back: no
    data moves, only which register, lane and warp bits name which row."""
    N: gl.constexpr = x.shape[1]
    y = gl.reshape(x, [2, 2, 2, 8, N])
    if TO_TOKENS:
        y = gl.permute(y, (2, 0, 1, 3, 4))
    else:
        y = gl.permute(y, (1, 2, 0, 3, 4))
    return gl.reshape(y, [64, N])


@gluon.jit
def _rows_reordered(x, MMA: gl.constexpr, TO_TOKENS: gl.constexpr):
    """[64, 64] whose rows are _operand_rows' rows -> rows in token order (TO_TOKENS), or back, in layout MMA: a
    conversion through shared memory (row bits move between the warps and the registers)."""
    return gl.convert_layout(_relabel_rows(x, TO_TOKENS), MMA)


@gluon.jit
def _cols_reordered(x, MMA: gl.constexpr, TO_TOKENS: gl.constexpr):
    """The same for the columns of a [64, 64] tile in layout MMA. The column bits that move are registers of the
    accumulator layout: no data leaves its thread."""
    return gl.convert_layout(gl.permute(_relabel_rows(gl.permute(x, (1, 0)), TO_TOKENS), (1, 0)), MMA)


@gluon.jit
def _reordered(x, MMA: gl.constexpr, TO_TOKENS: gl.constexpr):
    """A [64, 64] score or inverse tile with rows and columns in _operand_rows' order -> token order (TO_TOKENS), or
    back (only the rare paths: the 16-token levels and the tf32 inverse work in token order)."""
    return _cols_reordered(_rows_reordered(x, MMA, TO_TOKENS), MMA, TO_TOKENS)


@gluon.jit
def _scores_quarters(p_g, m_g, p_rows, m_rows, p_k, m_k, r_norm, k_norm, dt_bias, i_hv, n_valid, A_scale, s_gate,
                     lower_bound, kd_s, K: gl.constexpr, GATE: gl.constexpr, HAS_BIAS: gl.constexpr,
                     G16: gl.constexpr, R16: gl.constexpr, K16: gl.constexpr, DIAG_FLOOR: gl.constexpr,
                     STORE_KD: gl.constexpr, C: gl.constexpr, L: gl.constexpr, MMA: gl.constexpr):
    """The scores of a chunk whose decays do not fit the halves' factoring, for any decay: the portable kernel's
    16-token levels (chunk_prepare.levels_quarters) for every slice, rows r (the slices at p_rows times r_norm: k for
    AK, q for AQ) against columns k. Each product is confined to its pairs by zeros in its operands, so none needs a
    mask tile. STORE_KD: also rewrites kd_s (k exp(G - gamma)), which the halves' factors may have overflowed.
    Rare (a few chunks in a thousand of a softplus gate on random inputs), so it reloads the chunk's slices (from
    L2) through the main loop's pointers, and it is built for few registers: one score matrix per call, products
    on mma.sync from registers. With wgmma here, or both accumulators at once, ptxas ran short of registers for
    the main loop's asynchronous products and serialized them. The floored 16-token sums are differences of one
    running sum."""
    COL_C: gl.constexpr = gl.SliceLayout(0, C)
    c_t = gl.arange(0, 64, layout=gl.SliceLayout(1, C))
    c_h = gl.arange(0, 32, layout=COL_C)
    r_c = gl.expand_dims(c_t, 1)
    valid_c = gl.expand_dims(c_t < n_valid, 1)
    late = r_c >= 32
    late16 = r_c % 32 >= 16
    SHIFT: gl.constexpr = 7.5 * DIAG_FLOOR * LOG2E
    V2: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[4, 1], instr_shape=[16, 8])
    acc = gl.zeros([64, 64], gl.float32, V2)
    for h in range(K // 32):
        if HAS_BIAS:
            bias = gl.expand_dims(gl.load(dt_bias + i_hv * K + h * 32 + c_h).to(gl.float32), 0)
        else:
            bias = gl.zeros([1, 32], gl.float32, C)
        a = _gate_log2(_unpack_slice(_load_slice(p_g, m_g, h), C, G16), bias, A_scale, s_gate, lower_bound, GATE)
        a_l = gl.convert_layout(gl.where(valid_c, a, 0.0), L)
        gam = gl.convert_layout(gl.associative_scan(a_l, 0, _add), C)
        b_k = _unpack_slice(_load_slice(p_k, m_k, h), C, K16) * k_norm
        if STORE_KD:
            kd_s.index(h).store(_relabel_rows((b_k * gl.exp2(_sum_first_rows(a_l, 64, L, COL_C) - gam)).to(
                gl.bfloat16), False))
        b_r = _unpack_slice(_load_slice(p_rows, m_rows, h), C, R16) * r_norm
        # late rows with early columns around token 31; rows 16-31 of each half with its columns 0-15 around token
        # 15 (47): both factors <= 1
        a31 = _sum_first_rows(a_l, 32, L, COL_C)
        e = gl.exp2(gl.minimum(gl.where(late, gam - a31, a31 - gam), 0.0))
        acc = _add_product(b_r * gl.where(late, e, 0.0), b_k * gl.where(late, 0.0, e), acc)
        anc = gl.where(late, _sum_first_rows(a_l, 48, L, COL_C), _sum_first_rows(a_l, 16, L, COL_C))
        e = gl.exp2(gl.minimum(gl.where(late16, gam - anc, anc - gam), 0.0))
        for half in gl.static_range(2):
            acc = _add_product(b_r * gl.where((r_c // 32 == half) & late16, e, 0.0),
                               b_k * gl.where((r_c // 32 == half) & (r_c % 32 < 16), e, 0.0), acc)
        # the 16-token diagonal blocks, steps floored at exp(-DIAG_FLOOR): d = (floored decay from the token to its
        # block's end) - SHIFT, factors within 2^+-SHIFT (above the diagonal the products may overflow; the caller
        # keeps the lower triangle)
        af_l = gl.maximum(a_l, -DIAG_FLOOR * LOG2E)
        af_end = gl.where(r_c < 32, gl.where(r_c < 16, _sum_first_rows(af_l, 16, L, COL_C),
                                             _sum_first_rows(af_l, 32, L, COL_C)),
                          gl.where(r_c < 48, _sum_first_rows(af_l, 48, L, COL_C), _sum_first_rows(af_l, 64, L, COL_C)))
        d = gl.convert_layout(gl.associative_scan(af_l, 0, _add), C) - af_end - SHIFT
        for blk in gl.static_range(4):
            acc = _add_product(b_r * gl.where(r_c // 16 == blk, gl.exp2(d), 0.0),
                               b_k * gl.where(r_c // 16 == blk, gl.exp2(-d), 0.0), acc)
    return gl.convert_layout(acc, MMA)


@gluon.jit
def _shfl(x, src):
    """x of lane src (a tensor of lane ids in x's layout): each register of x from the same register of lane src."""
    return gl.inline_asm_elementwise("shfl.sync.idx.b32 $0, $1, $2, 31, -1;", "=r,r,r", [x, src], dtype=gl.float32,
                                     is_pure=True, pack=1)


@gluon.jit
def _join_columns(left, right):
    """[64, 32] tiles of the same layout -> [64, 64], left's columns first (the halves are registers of the same
    threads)."""
    return gl.reshape(gl.permute(gl.join(left, right), (0, 2, 1)), [64, 64])


@gluon.jit
def _invert_blocks8(A, MMA: gl.constexpr):
    """The 8 x 8 diagonal blocks of (I + A)^-1 (zero elsewhere) for a [64, 64] fp32 A in the MMA layout whose 8 x 8
    diagonal blocks are strictly lower triangular, by forward substitution in fp32 inside each warp:
    X[i] -= A[i, k] X[k] for k = 0..6. In MMA, lane 4 i + q of warp w holds rows 16 w + 8 h + i and columns
    8 j + 2 q + p, so a block's 8 rows are one warp's (no barrier or shared memory): the block of rows (w, h) has
    j = 2 w + h, and each (h, p) becomes a tensor of its own; row k reaches every lane by a shuffle from lane 4 k + q,
    A[i, k] from the row's own quad. 42 shuffles and 28 FMAs (the 16 x 16 blocks took 72 and 88)."""
    i_r = gl.expand_dims(gl.arange(0, 64, layout=gl.SliceLayout(1, MMA)), 1)
    i_c = gl.expand_dims(gl.arange(0, 64, layout=gl.SliceLayout(0, MMA)), 0)
    diag = i_c // 8 == i_r // 8
    A7 = gl.reshape(gl.where(diag, A, 0.0), [4, 2, 8, 4, 2, 4, 2])              # [w, h, i, b, jj, q, p]
    L7: gl.constexpr = A7.type.layout
    A5 = gl.sum(gl.sum(A7, axis=3), axis=3)                                        # [w, h, i, q, p]: b = w, jj = h
    e, o = gl.split(gl.permute(A5, (0, 2, 3, 1, 4)))                               # [w, i, q, h] by p
    a00, a10 = gl.split(e)                                                         # a_hp: [w, i, q]
    a01, a11 = gl.split(o)
    R3: gl.constexpr = a00.type.layout
    i = gl.expand_dims(gl.expand_dims(gl.arange(0, 8, layout=gl.SliceLayout(0, gl.SliceLayout(2, R3))), 0), 2)
    q = gl.expand_dims(gl.expand_dims(gl.arange(0, 4, layout=gl.SliceLayout(0, gl.SliceLayout(1, R3))), 0), 1)
    zero = gl.zeros([4, 8, 4], gl.int32, R3)
    # X = I: row i, column 2 q + p of each block
    x00 = gl.where(zero + i == 2 * q, 1.0, 0.0)
    x01 = gl.where(zero + i == 2 * q + 1, 1.0, 0.0)
    x10 = x00
    x11 = x01
    for k in gl.static_range(7):
        src_a = zero + 4 * i + k // 2                       # the lane of A[i, k]
        if k % 2 == 0:
            a0 = _shfl(a00, src_a)
            a1 = _shfl(a10, src_a)
        else:
            a0 = _shfl(a01, src_a)
            a1 = _shfl(a11, src_a)
        src = zero + 4 * k + q                              # the lane of row k with the same columns
        s00 = _shfl(x00, src)
        s01 = _shfl(x01, src)
        s10 = _shfl(x10, src)
        s11 = _shfl(x11, src)
        x00 = x00 - a0 * s00
        x01 = x01 - a0 * s01
        x10 = x10 - a1 * s10
        x11 = x11 - a1 * s11
    X5 = gl.permute(gl.join(gl.join(x00, x01), gl.join(x10, x11)), (0, 4, 1, 2, 3))    # [w, h, i, q, p]
    L6: gl.constexpr = gl.SliceLayout(3, L7)
    X6 = gl.expand_dims(gl.convert_layout(X5, gl.SliceLayout(3, L6)), 3) + gl.zeros([4, 2, 8, 2, 4, 2], gl.float32, L6)
    X7 = gl.expand_dims(X6, 3) + gl.zeros(A7.shape, gl.float32, L7)
    return gl.where(diag, gl.convert_layout(gl.reshape(X7, [64, 64]), MMA), 0.0)


@gluon.jit
def _invert_operand_order(A, t_r, t_c, scratch_a, scratch_t, scratch_p, MMA: gl.constexpr,
                          REG_OPERANDS: gl.constexpr):
    """(I + A_kk)^-1 with rows and columns in _operand_rows' order, for A = A_kk so ordered (t_r, t_c: the tokens of
    its rows and columns, _row_token's, [64, 1] and [1, 64] in MMA): there each natural 8-token block is 8
    consecutive rows of one warp, so the 8 x 8 diagonal blocks come by substitution
    (_invert_blocks8) and three doubling levels 8 -> 16 -> 32 -> 64 with fp16 products, T <- T + (T (-A)) T on the
    level's blocks, which masks on the rows' and columns' tokens keep (T is block diagonal: T (-A) equals T (-A_off)
    there). No reorder to token order: the scores come out of the score loop in this order.
    REG_OPERANDS: T and the masked product enter the products as wgmma's register operand, T stored for the second
    product's right operand into scratch_t and scratch_p in turn (one barrier a level). Else every operand comes from
    shared memory (three barriers a level): with register operands ptxas serializes every wgmma of the kernel in some
    variants (insufficient register resources for the wgmma pipeline; the varlen ones among them, perf-notes v38), so
    the launcher takes them only where tools/compile_report.py --check-wgmma finds the products asynchronous
    (forward.prepare_inverse_form; perf-notes v47)."""
    scratch_a.store((-A).to(gl.float16))
    Tm = _invert_blocks8(A, MMA)
    OPA: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=MMA, k_width=2)
    for lv in gl.static_range(3):
        Tm16 = Tm.to(gl.float16)
        if REG_OPERANDS:
            if lv % 2 == 0:     # two tiles in turn: a level's store needs no barrier before it
                t_s = scratch_t
            else:
                t_s = scratch_p
        else:
            t_s = scratch_t
            if lv > 0:          # the previous level's product may still read both tiles in other warps
                gl.thread_barrier()
        t_s.store(Tm16)
        fence_async_shared()
        gl.thread_barrier()
        if REG_OPERANDS:
            t_a = gl.convert_layout(Tm16, OPA)
        else:
            t_a = t_s
        P = warpgroup_mma(t_a, scratch_a, gl.zeros([64, 64], gl.float32, MMA), use_acc=False)
        P = gl.where(((t_r >> (3 + lv)) % 2 == 1) & (t_c >> (3 + lv) == (t_r >> (3 + lv)) - 1), P, 0.0)   # -T A_off
        if REG_OPERANDS:
            p_a = gl.convert_layout(P.to(gl.float16), OPA)
        else:
            scratch_p.store(P.to(gl.float16))
            fence_async_shared()
            gl.thread_barrier()
            p_a = scratch_p
        Tm = warpgroup_mma(p_a, t_s, Tm)
    return Tm


@gluon.jit
def _invert_unit_lower_tf32(A, MMA: gl.constexpr):
    """The same inverse with tf32 products (mma.sync on registers): for the rare chunk whose T overflows fp16."""
    V2: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[4, 1], instr_shape=[16, 8])
    OA: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=V2, k_width=1)
    OB: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=V2, k_width=1)
    i_r = gl.expand_dims(gl.arange(0, 64, layout=gl.SliceLayout(1, MMA)), 1)
    i_c = gl.expand_dims(gl.arange(0, 64, layout=gl.SliceLayout(0, MMA)), 0)
    Tm = gl.where(i_r == i_c, 1.0, 0.0) - gl.where((i_r % 2 == 1) & (i_c == i_r - 1), A, 0.0)
    for lv in gl.static_range(1, 6):
        A_off = gl.where(((i_r >> lv) % 2 == 1) & (i_c >> lv == (i_r >> lv) - 1), A, 0.0)
        zero = gl.zeros([64, 64], gl.float32, V2)
        P = mma_v2(gl.convert_layout(Tm, OA), gl.convert_layout(A_off, OB), zero, input_precision="tf32")
        Q = mma_v2(gl.convert_layout(P, OA), gl.convert_layout(Tm, OB), zero, input_precision="tf32")
        Tm = Tm - gl.convert_layout(Q, MMA)
    return Tm


@gluon.jit
def _product_out(x, tile, desc, row0, col, ptr, offs, LAYOUT: gl.constexpr, TMA_OUT: gl.constexpr):
    """A finished Ku slice or Mu (bf16, columns in token order, rows in the scores' order) on its way to the workspace.
    TMA_OUT: staged in token order in `tile`, the shared tile its own product read, and sent by TMA at once to
    [row0, col] of desc (the caller waits for the stores: _tma_written). Stored through registers instead, each took a
    conversion through shared memory, its barriers and 16-byte stores from every thread; staged and sent all at the
    end, the ready flag came later, and the varlen calls lost what the others gained (perf-notes v46). Else stored at
    ptr + offs (rows at their tokens' addresses) from the coalesced LAYOUT (straight from the accumulator layout the
    stores are 4 bytes per thread)."""
    if TMA_OUT:
        tile.store(_relabel_rows(x, True))
        fence_async_shared()
        gl.thread_barrier()
        tma.async_copy_shared_to_global(desc, [row0, col], tile)
    else:
        gl.store(ptr + offs, gl.convert_layout(x, LAYOUT), eviction_policy="evict_first")


@gluon.jit
def _tma_written():
    """Waits until this thread's TMA stores are written, not only read out of shared memory (all that
    tma.store_wait waits for), so that a flag set after them orders them for the readers."""
    gl.inline_asm_elementwise("cp.async.bulk.wait_group 0; fence.proxy.async.global; mov.u32 $0, 0;", "=r", [],
                              dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit(do_not_specialize=["T", "NT", "N", "NSLOTS", "s_bb", "s_bt", "s_bh", "H", "HV", "ahead", "group_lanes",
                               "div_span", "div_group", "div_heads", "div_gva", "div_nt"])
def kda_chunk_prepare_sm90_kernel(
    q, k, g, beta, A_log, dt_bias, ws_kg, ws_ku, ws_qg, ws_mu, ws_eg, chunk_rows,
    s_qb, s_qt, s_qh, s_kb, s_kt, s_kh, s_gb, s_gt, s_gh, s_bb, s_bt, s_bh,
    T, NT, scale, lower_bound, N, NSLOTS,
    H, HV, K: gl.constexpr, BT: gl.constexpr,
    GATE: gl.constexpr, BOUNDED: gl.constexpr, HAS_A: gl.constexpr, HAS_BIAS: gl.constexpr,
    L2NORM: gl.constexpr, BETA_MODE: gl.constexpr, IS_VARLEN: gl.constexpr, DIAG_FLOOR: gl.constexpr,
    HALF_SHIFT: gl.constexpr, INTERPRET: gl.constexpr, KS: gl.constexpr = 32,
    PREFETCH: gl.constexpr = False, ahead=0, ready=None, READY: gl.constexpr = False, group_lanes=0, div_span=0,
    div_group=0, div_heads=0, div_gva=0, div_nt=0, TMA_OUT: gl.constexpr = False, ku_d=None, mu_d=None,
    REG_INVERSE: gl.constexpr = False, BETA_COLS_LATE: gl.constexpr = False, PDL: gl.constexpr = False,
    LATE_AT_START: gl.constexpr = False,
):
    """Arguments as kda_chunk_prepare_kernel's (KS is fixed at 32, INTERPRET is unused), and N sequences and NSLOTS
    chunk slots (the flag rows' length, the bound of the grouped order and of the prefetch).
    Without BOUNDED the halves' factors fit only where no token decays by more than 2^-(2 HALF_SHIFT) to the end
    of its half: a program whose chunk fails that check in some slice computes its scores again with the 16-token
    levels (_scores_quarters) before the inverse. READY: each program sets the flag byte ready[head, slot] (rows
    of common.flag_row(NSLOTS) bytes) after its stores, and the programs take the chunks in the order of the
    overlapped state kernel (forward.overlaps_prepare; _grouped_chunk): lanes by groups of group_lanes, each group
    chunk by chunk (a lane: a fixed-length batch's (sequence, head); with IS_VARLEN a head, its chunks the slots in
    order); div_*: its divisors' magic numbers (div_heads: HV's, div_gva: HV / H's and div_nt: NT's on every path,
    where a division by a runtime value held a program's first loads back by some 60 instructions). PREFETCH: the
    L2 request for the program `ahead` programs on (a runtime value, so that a new distance compiles nothing:
    forward.prefetch_ahead). TMA_OUT: Ku and Mu leave by TMA (_product_out; ku_d: ws_ku as rows in [64, 32] tiles,
    mu_d: ws_mu in [64, 64] tiles). REG_INVERSE: the inverse's products take T and their masked product from
    registers (_invert_operand_order); BETA_COLS_LATE: beta goes to the product layout's columns after the inverse,
    not before it (forward.prepare_inverse_form chooses both). PDL: launched as a programmatic dependent of the
    call's own kernel before it (the flags' zeroing, or a varlen call's schedule kernel): a fixed-length program
    waits for it only before its flag, a varlen one before it reads its slot's rows (the inputs come from the
    caller's kernels, which that kernel's launch already followed). LATE_AT_START (16-bit inputs at K = 128): the
    cp.async request of slices 2 and 3 goes out with the first slices' loads, not after slice 0's products
    (forward.late_slices_at_start chooses it). The sizes and beta's strides are not specialized (a value of 1 or a
    multiple of 16 would compile a variant of its own): B = 1 (N = 1) with beta's unit head stride made ptxas
    serialize the register-operand products of a variant that it keeps asynchronous otherwise, so the variants the
    launcher builds are the ones tools/compile_report.py checks."""
    gl.static_assert(K == 64 or K == 128, "the sm_90 prepare kernel takes K = 64 or 128")
    NS: gl.constexpr = K // KS                                              # slices of the key dims
    gl.static_assert(BT == 64, "the anchoring levels assume 64-token chunks")
    gl.static_assert(KS == 32, "the layouts below assume 32-column slices")
    # C: a [64, 32] slice, 16 contiguous bytes per thread (coalesced loads and stores)
    C: gl.constexpr = gl.BlockedLayout([1, 8], [8, 4], [4, 1], [1, 0])
    # L: each warp owns all 64 tokens of 8 key dims (8 tokens x 2 dims per thread): the running sum stays in a warp
    L: gl.constexpr = gl.BlockedLayout([8, 2], [8, 4], [1, 4], [0, 1])
    MMA: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, 64, 16])
    MMA32: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, 32, 16])
    SH32: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=64, element_bitwidth=16, rank=2)
    SH64: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)
    ROW_C: gl.constexpr = gl.SliceLayout(1, C)
    COL_C: gl.constexpr = gl.SliceLayout(0, C)

    pid = gl.program_id(0)
    if PDL and IS_VARLEN:   # every read of the schedule kernel's slot rows after the wait
        chunk_rows += after_prior_grid(pid * 0)
    if READY and not IS_VARLEN:
        i_n, i_chunk, i_hv, lane = _grouped_chunk(pid, group_lanes, NT, HV, div_span, div_group, div_heads)
        if lane >= N * HV:
            return
        slot = i_n * NT + i_chunk
        i_b = i_n.to(gl.int64)
        t0 = (i_chunk * BT).to(gl.int64)
        eos = t0 * 0 + T
    else:
        if READY:   # varlen: the lanes are the heads, each walking the chunk slots in order
            _, slot, i_hv, lane = _grouped_chunk(pid, group_lanes, NSLOTS, HV, div_span, div_group, div_heads)
            if lane >= HV:
                return
        else:
            slot = _div(pid, div_heads)
            i_hv = pid - slot * HV
        i_b, t0, eos = _slot_rows(slot, chunk_rows, NT, T, div_nt, BT, IS_VARLEN)
        if IS_VARLEN:
            if t0 >= eos:   # past the last chunk
                return
    i_h = _div(i_hv, div_gva)
    n_valid = eos - t0                      # tokens of the chunk inside its sequence
    if PREFETCH:
        # the program `ahead` programs on (one that starts while this one runs its inverse or soon after): its rows
        # are requested into L2 after the score loop, so that its loads and row norms wait for L2, not DRAM. In the
        # grouped order of a fixed-length batch they are computed there; else its slot is found now and a varlen
        # slot's rows loaded now, as int32, and turned into rows after the loop (fewer registers live through it:
        # with the rows held as int64 ptxas serialized the varlen variants' products with the register inverse)
        if IS_VARLEN or not READY:
            if READY:
                _, pf_slot, pf_hv, pf_lane = _grouped_chunk(pid + ahead, group_lanes, NSLOTS, HV, div_span,
                                                            div_group, div_heads)
                pf_live = pf_lane < HV
            else:
                pf_slot = _div(pid + ahead, div_heads)
                pf_live = pf_slot < NSLOTS
            pf_slot = gl.minimum(pf_slot, NSLOTS - 1)
            if IS_VARLEN:
                pf_first = gl.load(chunk_rows + 2 * pf_slot)
                pf_end = gl.load(chunk_rows + 2 * pf_slot + 1)

    k_c = k + i_b * s_kb + i_h * s_kh + t0 * s_kt      # this chunk's rows (k, q and g stay the tensors' starts)
    q_c = q + i_b * s_qb + i_h * s_qh + t0 * s_qt
    g_c = g + i_b * s_gb + i_hv * s_gh + t0 * s_gt
    beta += i_b * s_bb + i_hv * s_bh + t0 * s_bt
    out = (slot * HV + i_hv).to(gl.int64)
    ws_kg += out * BT * K
    ws_qg += out * BT * K
    ws_ku += out * BT * K
    ws_mu += out * BT * BT
    ws_eg += out * K

    # ---- index tiles of the slice layout C
    c_t = gl.arange(0, 64, layout=ROW_C)
    c_h = gl.arange(0, 32, layout=COL_C)
    r_c = gl.expand_dims(c_t, 1)
    valid_c = gl.expand_dims(c_t < n_valid, 1)
    late = r_c >= 32
    offs_c = gl.expand_dims(c_t * K, 1) + gl.expand_dims(c_h, 0)           # rows of the workspace
    C2: gl.constexpr = gl.BlockedLayout([1, 4], [8, 4], [4, 1], [1, 0])       # a slice as int32 pairs
    p_g, m_g = _slice_pointers(g_c, s_gt, n_valid, C, C2)
    p_k, m_k = _slice_pointers(k_c, s_kt, n_valid, C, C2)
    p_q, m_q = _slice_pointers(q_c, s_qt, n_valid, C, C2)
    # a slice's loads are issued two slices ahead, after a fence (a fence waits for the memory operations in
    # flight, loads included), so that a whole slice's work hides them; the first two slices are requested here
    g_next = _load_slice(p_g, m_g, 0)
    k_next = _load_slice(p_k, m_k, 0)
    q_next = _load_slice(p_q, m_q, 0)
    g_next2 = _load_slice(p_g, m_g, 1)
    k_next2 = _load_slice(p_k, m_k, 1)
    q_next2 = _load_slice(p_q, m_q, 1)
    LATE_ASYNC: gl.constexpr = (NS == 4) and (p_g.dtype.element_ty == gl.int32) and \
        (p_k.dtype.element_ty == gl.int32) and (p_q.dtype.element_ty == gl.int32)    # slices 2 and 3 by cp.async
    gl.static_assert(LATE_ASYNC or not LATE_AT_START, "LATE_AT_START needs the cp.async slices")
    if LATE_AT_START:   # slices 2 and 3 requested with the first two's loads (forward.late_slices_at_start)
        cols_s, kd_s = _score_tiles(NS, SH32)
        late_s, q3_s = _late_tiles(kd_s)
        _copy_slice(late_s.index(0), late_s.index(2), late_s.index(4), p_g, m_g, p_k, m_k, p_q, m_q, 32)
        _copy_slice(late_s.index(1), late_s.index(3), q3_s, p_g, m_g, p_k, m_k, p_q, m_q, 48)
        async_copy.commit_group()
    if HAS_BIAS:
        bias_next = gl.load(dt_bias + i_hv * K + c_h)

    if L2NORM:
        if BOUNDED:
            # the gate's first slice and dt_bias's enter the norms as an exact +0.0 (their bits and-ed with a
            # runtime zero): ptxas then requests them with the rows, not after the norms, a second round trip to L2
            # that the score loop's first instruction waited for (-0.3 to -1.4%; +0.8% in the other gates' program)
            zero = T >> 31
            dep = gl.sum(g_next.to(gl.int32, bitcast=True) & zero, axis=1)
            if HAS_BIAS:
                dep += gl.sum(bias_next.to(gl.float32).to(gl.int32, bitcast=True) & zero, axis=0)
            dep = gl.convert_layout(dep, ROW_C).to(gl.float32, bitcast=True)
        else:
            dep = 0.0
        k_norm = gl.expand_dims(_row_norms(k_next, k_next2, k_c, s_kt, c_t < n_valid, dep, K, C), 1)
        q_norm = gl.expand_dims(_row_norms(q_next, q_next2, q_c, s_qt, c_t < n_valid, dep, K, C), 1) * scale
    else:
        k_norm = gl.full([64, 1], 1.0, gl.float32, C)
        q_norm = gl.full([64, 1], 1.0, gl.float32, C) * scale
    if HAS_A:
        A_scale = gl.exp(gl.load(A_log + i_hv).to(gl.float32))
    else:
        A_scale = 1.0
    s_gate = A_scale * -LOG2E

    # beta once per token (a thread per token), requested now: loaded before the inverse, it held that fence up
    B1: gl.constexpr = gl.BlockedLayout([1], [32], [4], [0])
    b_t = gl.arange(0, 64, layout=B1)
    b_b = gl.load(beta + b_t * s_bt, mask=b_t < n_valid, other=0.0)

    if not LATE_AT_START:
        cols_s, kd_s = _score_tiles(NS, SH32)
        if LATE_ASYNC:
            late_s, q3_s = _late_tiles(kd_s)

    # the scores by column halves (early tokens j < 32, late ones), rows in _operand_rows' order
    OA32: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=MMA32, k_width=2)
    AKe = gl.zeros([64, 32], gl.float32, MMA32)
    AQe = gl.zeros([64, 32], gl.float32, MMA32)
    AKl = gl.zeros([64, 32], gl.float32, MMA32)
    AQl = gl.zeros([64, 32], gl.float32, MMA32)
    l_t = gl.expand_dims(gl.arange(0, 64, layout=gl.SliceLayout(1, L)), 1)
    col_l = gl.arange(0, 32, layout=gl.SliceLayout(0, L))
    bad = pid * 0
    for h in range(NS):
        b_g = _unpack_slice(g_next, C, g.dtype.element_ty == gl.float16)
        kraw = k_next
        qraw = q_next
        if HAS_BIAS:
            bias = gl.expand_dims(bias_next.to(gl.float32), 0)
        else:
            bias = gl.zeros([1, 32], gl.float32, C)
        a = gl.where(valid_c, _gate_log2(b_g, bias, A_scale, s_gate, lower_bound, GATE), 0.0)   # zero past the end
        a_l = gl.convert_layout(a, L)
        gam_l = gl.associative_scan(a_l, 0, _add)       # decay through each token
        # the anchors as sums of the steps, beside the running sum rather than after it
        a31 = gl.sum(gl.where(l_t < 32, a_l, 0.0), axis=0)
        G = gl.sum(a_l, axis=0)
        if BOUNDED:
            # what is per column is computed where a thread holds 2 columns (8 in C): exp(G) and the shifted ends
            # of the halves (in the other gates' program, exp(G) stored from here made ptxas spill)
            gl.store(ws_eg + h * KS + col_l, gl.exp2(G))
            ENDS: gl.constexpr = gl.BlockedLayout([8, 2], [32, 1], [4, 1], [1, 0])
            end_e, end_l = gl.split(gl.convert_layout(gl.join(a31 + HALF_SHIFT, G + HALF_SHIFT), ENDS))
            end_e = gl.expand_dims(gl.convert_layout(end_e, COL_C), 0)
            end_l = gl.expand_dims(gl.convert_layout(end_l, COL_C), 0)
        else:
            a31 = gl.expand_dims(gl.convert_layout(a31, COL_C), 0)
            G = gl.expand_dims(gl.convert_layout(G, COL_C), 0)
            span = gl.max(gl.max(gl.maximum(-a31, a31 - G), axis=1), axis=0)
            bad = gl.maximum(bad, gl.where(span <= 2 * HALF_SHIFT, 0, 1))     # (NaN fails it too)
            gl.store(ws_eg + h * KS + gl.expand_dims(c_h, 0), gl.exp2(G))
            end_e = a31 + HALF_SHIFT
            end_l = G + HALF_SHIFT
        gam = gl.convert_layout(gam_l, C)
        b_k = _unpack_slice(kraw, C, k.dtype.element_ty == gl.float16) * k_norm
        b_q = _unpack_slice(qraw, C, q.dtype.element_ty == gl.float16) * q_norm
        eg = gl.exp2(gam)
        qg = (b_q * eg).to(gl.bfloat16)
        kg = (b_k * eg).to(gl.bfloat16)
        # the two products of chunk_prepare.levels_halves: factors around the end of each 32-token half
        kf, qf, kr, c = halves_operands(b_k, b_q, gam, end_e, end_l, late, False)
        # the left operands from registers; the right one, k exp2(-t) of all 64 tokens, is the only tile stored
        rows_kc = _operand_rows((kf * c * c).to(gl.bfloat16), OA32)
        rows_qc = _operand_rows((qf * c * c).to(gl.bfloat16), OA32)
        rows_k = _operand_rows(kf.to(gl.bfloat16), OA32)
        rows_q = _operand_rows(qf.to(gl.bfloat16), OA32)
        cols_s.store(_dims_permuted(kr.to(gl.bfloat16)))
        # k exp(gamma_end - gamma) (exp(a31 - gamma) early, exp(G - gamma) late), early rows times exp(G - a31)
        # (exp2(G - a31) as the square of the late rows' factor c: one exponential a column less)
        c_late = gl.exp2((end_l - end_e) * 0.5)
        kd_s.index(h).store(_relabel_rows((kr * gl.exp2(-HALF_SHIFT) * gl.where(late, 1.0, c_late * c_late)).to(
            gl.bfloat16), False))     # Kd's rows in the scores' order, as Tb's
        fence_async_shared()
        gl.thread_barrier()
        cols_e = cols_s.slice(0, 32).permute((1, 0))
        cols_l = cols_s.slice(32, 32).permute((1, 0))
        AKe = warpgroup_mma(rows_kc, cols_e, AKe, is_async=True)
        AQe = warpgroup_mma(rows_qc, cols_e, AQe, is_async=True)
        AKl = warpgroup_mma(rows_k, cols_l, AKl, is_async=True)
        AQl = warpgroup_mma(rows_q, cols_l, AQl, is_async=True)
        # the next slice: slice 1 from registers, then slices 2 and 3 from the async copies. Each request is written
        # as compiled and checked (--check-wgmma): here through helper functions ptxas serialized the softplus
        # variants' products (perf-notes v53, v54); at the start, through one helper for all six copies, the
        # fixed-length variant's
        if LATE_ASYNC:
            if h == 0 and not LATE_AT_START:
                async_copy.async_copy_global_to_shared(late_s.index(0), p_g + 32, mask=m_g)
                async_copy.async_copy_global_to_shared(late_s.index(2), p_k + 32, mask=m_k)
                async_copy.async_copy_global_to_shared(late_s.index(4), p_q + 32, mask=m_q)
                async_copy.async_copy_global_to_shared(late_s.index(1), p_g + 48, mask=m_g)
                async_copy.async_copy_global_to_shared(late_s.index(3), p_k + 48, mask=m_k)
                async_copy.async_copy_global_to_shared(q3_s, p_q + 48, mask=m_q)
                async_copy.commit_group()
            if h == 0:
                g_next = g_next2
                k_next = k_next2
                q_next = q_next2
            elif h == 1:
                async_copy.wait_group(0)
                g_next = late_s.index(0).load(C2)
                k_next = late_s.index(2).load(C2)
                q_next = late_s.index(4).load(C2)
            elif h == 2:
                g_next = late_s.index(1).load(C2)
                k_next = late_s.index(3).load(C2)
                q_next = q3_s.load(C2)
        else:
            g_next = g_next2
            k_next = k_next2
            q_next = q_next2
            if h < NS - 2:
                g_next2 = _load_slice(p_g, m_g, h + 2)
                k_next2 = _load_slice(p_k, m_k, h + 2)
                q_next2 = _load_slice(p_q, m_q, h + 2)
        if h < NS - 1:
            if HAS_BIAS:
                bias_next = gl.load(dt_bias + i_hv * K + (h + 1) * KS + c_h)
        gl.store(ws_qg + offs_c + h * KS, qg, eviction_policy="evict_first")
        gl.store(ws_kg + offs_c + h * KS, kg, eviction_policy="evict_first")
        # the operands' registers and tile are rewritten by the next slice
        done = warpgroup_mma_wait(0, deps=(AKe, AQe, AKl, AQl, rows_kc, rows_qc, rows_k, rows_q, cols_s))
        AKe = done[0]
        AQe = done[1]
        AKl = done[2]
        AQl = done[3]
    # A_kk and M keep _operand_rows' order, their columns relabeled to it in registers (the inverse runs in that
    # order; Mu's and Ku's rows are stored where they belong)
    AK = _cols_reordered(_join_columns(AKe, AKl), MMA, False)
    AQ = _cols_reordered(_join_columns(AQe, AQl), MMA, False)
    if PREFETCH:
        if READY and not IS_VARLEN:
            pf_n, pf_chunk, pf_hv, pf_lane = _grouped_chunk(gl.program_id(0) + ahead, group_lanes, NT, HV,
                                                            div_span, div_group, div_heads)
            pf_live = pf_lane < N * HV
            pf_b = pf_n.to(gl.int64)
            pf_t0 = pf_chunk * BT
            pf_valid = T - pf_t0
        else:
            if IS_VARLEN:
                pf_b = pf_first.to(gl.int64) * 0
                pf_t0 = pf_first.to(gl.int64)
                pf_valid = pf_end - pf_first
            else:
                pf_b, pf_t0, pf_eos = _slot_rows(pf_slot, chunk_rows, NT, T, div_nt, BT, IS_VARLEN)
                pf_valid = pf_eos - pf_t0
            pf_live = pf_live & (pf_valid > 0)      # past the last chunk: nothing to ask for
            if not READY:
                pf_hv = pid + ahead - pf_slot * HV
        if pf_live:
            pf_h = _div(pf_hv, div_gva)
            PF: gl.constexpr = gl.BlockedLayout([1, 1], [32, 1], [2, 2], [1, 0])
            pf_t = gl.arange(0, 64, layout=gl.SliceLayout(1, PF))
            pf_t = pf_t0 + gl.where(pf_t < pf_valid, pf_t, 0)      # rows past the sequence: its first row
            _prefetch_rows(q + pf_b * s_qb + pf_h * s_qh, pf_t * s_qt, K, PF)
            _prefetch_rows(k + pf_b * s_kb + pf_h * s_kh, pf_t * s_kt, K, PF)
            _prefetch_rows(g + pf_b * s_gb + pf_hv * s_gh, pf_t * s_gt, K, PF)
    if not BOUNDED:   # a chunk the halves do not fit: its scores again, by the 16-token levels
        if bad != 0:
            G16: gl.constexpr = g.dtype.element_ty == gl.float16
            K16: gl.constexpr = k.dtype.element_ty == gl.float16
            Q16: gl.constexpr = q.dtype.element_ty == gl.float16
            AK = _scores_quarters(p_g, m_g, p_k, m_k, p_k, m_k, k_norm, k_norm, dt_bias, i_hv, n_valid, A_scale,
                                  s_gate, lower_bound, kd_s, K, GATE, HAS_BIAS, G16, K16, K16,
                                  DIAG_FLOOR, True, C, L, MMA)
            AQ = _scores_quarters(p_g, m_g, p_q, m_q, p_k, m_k, q_norm, k_norm, dt_bias, i_hv, n_valid, A_scale,
                                  s_gate, lower_bound, kd_s, K, GATE, HAS_BIAS, G16, Q16, K16,
                                  DIAG_FLOOR, False, C, L, MMA)
            AK = _reordered(AK, MMA, False)
            AQ = _reordered(AQ, MMA, False)

    # ---- M (query-key scores with the diagonal) to shared memory; T = (I + A_kk)^-1
    m_r = gl.expand_dims(gl.arange(0, 64, layout=gl.SliceLayout(1, MMA)), 1)
    m_c = gl.expand_dims(gl.arange(0, 64, layout=gl.SliceLayout(0, MMA)), 0)
    m_s = gl.allocate_shared_memory(gl.bfloat16, [64, 64], SH64)
    m_tr = _row_token(m_r)
    m_tc = _row_token(m_c)
    m_s.store(gl.where(m_tr >= m_tc, AQ, 0.0).to(gl.bfloat16))
    # beta, activated, as the rows and the columns of the MMA layout
    b_b = b_b.to(gl.float32)
    if BETA_MODE == 1:
        b_b = _rcp(1.0 + gl.exp2(b_b * -LOG2E))
    elif BETA_MODE == 2:
        b_b = 2.0 * _rcp(1.0 + gl.exp2(b_b * -LOG2E))
    b_b = gl.where(b_t < n_valid, b_b, 0.0)
    b_op = gl.reshape(_relabel_rows(gl.reshape(b_b, [64, 1]), False), [64])          # beta of _row_token(r)
    b_row = gl.convert_layout(b_op, gl.SliceLayout(1, MMA))
    if not BETA_COLS_LATE:
        b_col = gl.convert_layout(b_op, gl.SliceLayout(0, MMA))
    Akk = gl.where(m_tr > m_tc, AK * gl.expand_dims(b_row, 1), 0.0)
    s_a = gl.allocate_shared_memory(gl.float16, [64, 64], SH64)
    s_t = gl.allocate_shared_memory(gl.float16, [64, 64], SH64)
    s_p = gl.allocate_shared_memory(gl.float16, [64, 64], SH64)
    Tm = _invert_operand_order(Akk, m_tr, m_tc, s_a, s_t, s_p, MMA, REG_INVERSE)
    if not (gl.reduce(gl.reduce(gl.abs(Tm), 1, _max_nan), 0, _max_nan) <= 3.0e38):   # inf or NaN: tf32, in token order
        Tm = _reordered(_invert_unit_lower_tf32(_reordered(Akk, MMA, True), MMA), MMA, False)

    # ---- the solve folded into the rows: Ku = Tb^T Kd, Mu = M Tb, with Tb = T diag(beta); Tb^T is Tb's tile read
    # transposed by the tensor cores (a transposed copy took a store of its own)
    tb_s = gl.allocate_shared_memory(gl.bfloat16, [64, 64], SH64)
    if BETA_COLS_LATE:      # its 16 registers a thread not live through the inverse (forward.prepare_inverse_form)
        b_col = gl.convert_layout(b_op, gl.SliceLayout(0, MMA))
    Tb = (Tm * gl.expand_dims(b_col, 0)).to(gl.bfloat16)
    tb_s.store(Tb)
    fence_async_shared()
    gl.thread_barrier()
    # the products in flight two at a time, each on its way out while the next runs (their operand tiles kept alive
    # until they complete: a layout conversion's scratch must not take them over)
    Mu = warpgroup_mma(m_s, tb_s, gl.zeros([64, 64], gl.float32, MMA), use_acc=False, is_async=True)
    C64: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [4, 1], [1, 0])
    mu_t = gl.expand_dims(gl.arange(0, 64, layout=gl.SliceLayout(1, C64)), 1)
    mu_c = gl.expand_dims(gl.arange(0, 64, layout=gl.SliceLayout(0, C64)), 0)
    zero32 = gl.zeros([64, 32], gl.float32, MMA32)
    offs_ku = gl.expand_dims(_row_token(c_t) * K, 1) + gl.expand_dims(c_h, 0)      # Ku's rows: Tb's columns' tokens
    row0 = (out * BT).to(gl.int32)                                                  # the chunk's workspace rows
    for hh in gl.static_range(NS // 2):
        Ka = warpgroup_mma(tb_s.permute((1, 0)), kd_s.index(2 * hh), zero32, use_acc=False, is_async=True)
        Kb = warpgroup_mma(tb_s.permute((1, 0)), kd_s.index(2 * hh + 1), zero32, use_acc=False, is_async=True)
        if hh == 0:
            Mu, _, _ = warpgroup_mma_wait(2, deps=(Mu, m_s, tb_s))
            _product_out(_cols_reordered(Mu, MMA, True).to(gl.bfloat16), m_s, mu_d, row0, 0, ws_mu,
                         _row_token(mu_t) * BT + mu_c, C64, TMA_OUT)
        Ka, _, _ = warpgroup_mma_wait(1, deps=(Ka, tb_s, kd_s))
        _product_out(Ka.to(gl.bfloat16), kd_s.index(2 * hh), ku_d, row0, 2 * hh * KS, ws_ku + 2 * hh * KS, offs_ku,
                     C, TMA_OUT)
        Kb, _, _ = warpgroup_mma_wait(0, deps=(Kb, tb_s, kd_s))
        _product_out(Kb.to(gl.bfloat16), kd_s.index(2 * hh + 1), ku_d, row0, (2 * hh + 1) * KS,
                     ws_ku + (2 * hh + 1) * KS, offs_ku, C, TMA_OUT)
    if TMA_OUT:
        _tma_written()
    if READY:
        flag = i_hv * flag_row(NSLOTS) + slot
        if PDL and not IS_VARLEN:   # only the flag needs the kernel before (the flags' zeroing) done
            flag = after_prior_grid(flag)
        mark_ready(ready, flag)
