"""Host side of the KDA forward: allocates outputs and workspaces, plans the split, launches the kernels.

Arguments arrive validated and normalized by `fastkda.api`; nothing here reads device memory from the host,
so the forward can be captured in a CUDA graph.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import triton
from triton.tools.tensor_descriptor import TensorDescriptor

from fastkda.kernels.chunk_prepare import CHUNK, kda_chunk_prepare_kernel
from fastkda.kernels.chunk_state import kda_chunk_state_kernel
from fastkda.kernels.common import DIAG_DECAY_FLOOR, FLAG_GROUP, HALF_BLOCK_SHIFT, STEP_WORDS, interpreting
from fastkda.kernels.split import kda_combine_kernel, kda_schedule_kernel

GATE_PRE, GATE_SOFTPLUS, GATE_LOWER_BOUND = 0, 1, 2
BETA_RAW, BETA_SIGMOID, BETA_SIGMOID2 = 0, 1, 2
NO_SPLIT = 1 << 24  # chunks per segment that means "one segment per sequence"


@dataclass(frozen=True)
class LaunchConfig:
    """Launch parameters: state columns per program of the state kernel (None: state_block_v), its warps and pipeline
    depth (that of the split path's transition pass apart: it loads less per chunk, and two stages let two programs
    share a multiprocessor), and the warps, score-loop slice width and register cap (None: the compiler's choice) of
    the prepare kernel (the slice width for the portable kernel at K = 128; K = 64 runs there as one slice; measured
    on an H100, docs/perf-notes.md); prepare_sm90: on sm_90, the Gluon prepare kernel, every gate and head dim
    (chunk_prepare_sm90.py: 32-column slices and layouts for 4 warps; with other prepare_warps set it to False);
    prepare_prefetch: how many programs ahead the Gluon kernel asks L2 for the rows of q, k and g (None:
    `prefetch_ahead`, three quarters of the places the prepare programs have; 0: none); pdl: on
    sm_90 and later, each kernel after the prepare kernel, and the Gluon prepare kernel where a kernel of the call
    precedes it (the flags' zeroing, the varlen schedule), launched as a programmatic dependent of the one before
    (its launch and prologue overlap that kernel's last programs; `uses_pdl`); combine_block_v: state columns per
    program of the split path's combine kernel (16: its chain of products the shortest, perf-notes v18);
    transition_sm90: on sm_90, the split path's transition pass in the Gluon kernel (split_sm90.py) where it applies
    (`transition_sm90`), else in the Triton state kernel; overlap: the
    unsplit state pass beside the prepare kernel on a second stream where `overlaps_prepare` allows it, and (None)
    where `overlap_pays` estimates it faster than after the prepare kernel, or (True) wherever allowed, or (False)
    never; overlap_exclusive: whether each of its programs takes a whole multiprocessor (a three-slot ring and a
    producer warp, no prepare program beside it; `overlap_groups`), (None) where estimated faster; overlap_narrow:
    whether each takes 32 state columns (the state as it is) rather than 64 (transposed), (None) where estimated
    faster; split_head: on the split path of a single sequence, the chunks of its head segment that the overlapped
    state kernel walks beside the prepare kernel before the split passes take the rest (`plan_head`): None where
    estimated faster, 0 never, else that many (then split_size, if given, is the rest's segment length)."""

    block_v: int | None = None
    num_warps: int = 4
    num_stages: int = 3
    transition_stages: int = 2
    prepare_warps: int = 4
    prepare_slice: int = 32
    prepare_maxnreg: int | None = None
    prepare_sm90: bool = True
    prepare_prefetch: int | None = None
    pdl: bool = True
    combine_block_v: int = 16
    transition_sm90: bool = True
    overlap: bool | None = None
    overlap_exclusive: bool | None = None
    overlap_narrow: bool | None = None
    split_head: int | None = None

    def __post_init__(self):
        # the transition pass compiled with one stage (no pipelining) and 32-column blocks made an illegal memory
        # access on an H100 under Triton 3.6 (64 columns, or two stages, ran correctly); one stage is also the
        # slower choice there (docs/perf-notes.md, v10), so it is refused rather than left to fail in a kernel
        if self.transition_stages < 2:
            raise ValueError(f"transition_stages: expected at least 2, got {self.transition_stages}")
        if self.block_v not in (None, 16, 32, 64, 128):
            raise ValueError(f"block_v: expected None, 16, 32, 64 or 128, got {self.block_v}")
        if self.combine_block_v not in (16, 32, 64, 128):
            raise ValueError(f"combine_block_v: expected 16, 32, 64 or 128, got {self.combine_block_v}")
        if self.overlap not in (None, True, False):
            raise ValueError(f"overlap: expected None, True or False, got {self.overlap!r}")
        if self.split_head is not None and (not isinstance(self.split_head, int) or self.split_head < 0):
            raise ValueError(f"split_head: expected None or a non-negative int, got {self.split_head!r}")
        for name in ("overlap_exclusive", "overlap_narrow"):
            if getattr(self, name) not in (None, True, False):
                raise ValueError(f"{name}: expected None, True or False, got {getattr(self, name)!r}")


DEFAULT_CONFIG = LaunchConfig()


@dataclass(frozen=True)
class GateSpec:
    """How the kernel turns g into a log-decay: mode, whether the lower-bounded fast path applies, bound."""

    mode: int
    bounded: bool
    lower_bound: float


def tile_desc(w: torch.Tensor) -> TensorDescriptor:
    """A tensor descriptor over a workspace [slots, HV, 64, D] seen as rows of D, a chunk's 64 rows one tile: the
    state kernel's loads of it go through the tensor memory accelerator on sm_90 (perf-notes v17)."""
    return TensorDescriptor.from_tensor(w.view(-1, w.shape[-1]), [w.shape[-2], w.shape[-1]])


def state_block_v(block_v: int | None, walks: int, V: int, slots: int, split: bool) -> int:
    """State columns per program of the state kernel: block_v where set; else 64, or 32 for the unsplit pass where
    twice the programs (walks x V / 32: a program per (sequence, head, column block)) still fit one per
    multiprocessor. Measured on an H100 (perf-notes v17): 32 columns take the state kernel at T=8192 H=32 from 0.181
    to 0.157 ms (64 to 128 programs), and are slower where 64 already fill the GPU (H=64: 0.253 vs 0.311; B=8 H=32).
    The split passes keep 64 (the planner's costs are for 64)."""
    if block_v is not None:
        return min(block_v, V)
    bv = min(64, V)
    if not split and bv == 64 and 2 * walks * (V // bv) <= slots:
        return 32
    return bv


def v_token_rows(v: torch.Tensor) -> bool:
    """Whether v [B, T, HV, V] can be read as a matrix [B T, (HV - 1) s_h + V] of token rows through a tensor
    descriptor: batches one after another, 16-byte aligned data and token stride, at least one token."""
    B, T = v.shape[:2]
    return (T > 0 and (B == 1 or v.stride(0) == T * v.stride(1)) and v.data_ptr() % 16 == 0
            and v.stride(1) * v.element_size() % 16 == 0)


def eg_tile_desc(ws_eg: torch.Tensor) -> TensorDescriptor:
    """A tensor descriptor over exp(G) [slots, HV, K] as rows of K, one (chunk, head) a [1, K] tile."""
    K = ws_eg.shape[-1]
    return TensorDescriptor.from_tensor(ws_eg.view(-1, K), [1, K])


def v_tile_desc(v: torch.Tensor, bv: int) -> TensorDescriptor | None:
    """v as token rows (v_token_rows) in tiles of 64 tokens x bv columns, where its layout allows; else None (the
    state kernel then reads v through pointers). Measured on an H100: -2% state kernel at T=8192 H=96, -4.5% at
    H=32; the transition pass keeps pointers (its P columns would load the next head's v only to mask it)."""
    if not v_token_rows(v):
        return None
    B, T, HV, V = v.shape
    return TensorDescriptor(v, [B * T, (HV - 1) * v.stride(2) + V], [v.stride(1), 1], [CHUNK, bv])


def new_output(shape, dtype, device) -> torch.Tensor:
    """Allocates an output the kernels overwrite completely (tests substitute a NaN-filled one)."""
    return torch.empty(shape, dtype=dtype, device=device)


@functools.cache
def multiprocessor_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def cuda_index(device: torch.device) -> int:
    """The CUDA device index of device (the current device where it names none)."""
    return device.index if device.index is not None else torch.cuda.current_device()


@functools.cache
def is_sm90(device_index: int) -> bool:
    """Whether the Gluon prepare kernel can run: an sm_90 device and Triton 3.6 or later (the Gluon API it uses)."""
    version = tuple(int(x) for x in triton.__version__.split(".")[:2])
    return version >= (3, 6) and torch.cuda.get_device_capability(device_index) == (9, 0)


@functools.cache
def has_griddepcontrol(device_index: int) -> bool:
    """Whether the device runs programmatic dependent launches (compute capability 9.0 or later)."""
    return torch.cuda.get_device_capability(device_index)[0] >= 9


def uses_pdl(device: torch.device, cfg: LaunchConfig) -> bool:
    """Whether the call's kernels after its first go out as programmatic dependent launches (LaunchConfig.pdl):
    cfg.pdl on a GPU that has them, not under the interpreter."""
    return cfg.pdl and device.type == "cuda" and not interpreting() and has_griddepcontrol(cuda_index(device))


def overlaps_prepare(cfg: LaunchConfig, *, sm90_prepare: bool, varlen: bool,
                     intermediate: bool, B: int, T: int, K: int, V: int, dtype: torch.dtype, v_tiles: bool,
                     slots: int) -> bool:
    """Whether the unsplit state pass can run beside the prepare kernel (chunk_state_sm90.py): a second stream, each
    state program waiting chunk by chunk on the prepare programs' ready flags. It needs the sm_90 prepare kernel
    (which sets the flags, and finishes every chunk of any gate in its one launch), no intermediate states, a
    varlen batch (each program walks all sequences of a head, so the rows a tile writes past its sequence are the
    next sequences', which it rewrites after) or a fixed-length one whose o tiles cross into no other sequence
    (B = 1 or T a multiple of 64), 16-bit inputs with v readable in tiles, K and V in {64, 128}, at least one token,
    and a multiprocessor per two for each of a lane's programs (overlap_groups)."""
    return ((cfg.overlap is None or cfg.overlap) and sm90_prepare and not intermediate
            and (varlen or B == 1 or T % CHUNK == 0) and K in (64, 128) and V in (64, 128)
            and dtype in (torch.bfloat16, torch.float16) and v_tiles and V // 64 <= slots // 2 and T > 0)


def transition_sm90(cfg: LaunchConfig, device: torch.device, K: int, V: int, v: torch.Tensor) -> bool:
    """Whether the split path's transition pass takes the Gluon kernel (split_sm90.py; perf-notes v25: 0.115 -> 0.079
    ms at T=65536 H=4): cfg.transition_sm90 on an sm_90 GPU, K and V in {64, 128}, v 16-bit and readable in tiles
    (v_token_rows). Elsewhere the Triton state kernel's TRANSITION mode (the same products, to the bit)."""
    return (cfg.transition_sm90 and device.type == "cuda" and not interpreting() and K in (64, 128)
            and V in (64, 128) and v.dtype in (torch.bfloat16, torch.float16) and v_token_rows(v)
            and is_sm90(cuda_index(device)))


@functools.cache
def side_stream(device_index: int) -> torch.cuda.Stream:
    """The stream the overlapped state kernel runs on: high priority, so that its programs take the
    multiprocessors that the prepare kernel's first programs free, and the prepare kernel fills the rest."""
    return torch.cuda.Stream(device=device_index, priority=-1)


@functools.cache
def nvmma_layout(swizzle: int, bits: int):
    """The shared-memory layout the tensor cores read, with `swizzle` bytes of swizzle, for `bits`-bit elements."""
    from triton.experimental.gluon.language import NVMMASharedLayout
    return NVMMASharedLayout(swizzle_byte_width=swizzle, element_bitwidth=bits, rank=2)


def gluon_tiles(base: torch.Tensor, shape, strides, block_shape):
    """A Gluon tensor descriptor over the matrix (shape, strides) at base in tiles of block_shape, in the
    shared-memory layout the tensor cores read: 128-byte swizzle for tiles of 64 rows of 128 bytes or more, none for
    a one-row tile (exp(G))."""
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor as GluonDescriptor
    size = base.element_size()
    swizzle = min(128, block_shape[1] * size) if block_shape[0] > 1 else 0
    return GluonDescriptor(base, shape, strides, block_shape, nvmma_layout(swizzle, 8 * size))


def gluon_rows(x: torch.Tensor, block_shape):
    """gluon_tiles over x [..., D] as rows of D."""
    rows = x.view(-1, x.shape[-1])
    return gluon_tiles(rows, rows.shape, rows.stride(), block_shape)


def gluon_desc(td: TensorDescriptor):
    """gluon_tiles with the tensor, shape, strides and tile of td."""
    return gluon_tiles(td.base, td.shape, td.strides, td.block_shape)


def flag_row_bytes(n_slots: int) -> int:
    """Bytes per value head of the ready flags (common.flag_row, on the host)."""
    return -(-n_slots // FLAG_GROUP.value) * FLAG_GROUP.value


def launch_overlapped_state(fork, ws, ws_eg, v, o, h0, ht, ready, group_lanes, lanes, cu_seqlens, chunk_offsets, *,
                            B, T, N, NT, n_slots, HV, K, V, state_v_first, exclusive, narrow) -> torch.cuda.Event:
    """The Gluon state kernel on the side stream, after `fork` (recorded on the current stream before the prepare
    launch, so it waits for the inputs but not for the prepare kernel). Returns the event the current stream must
    wait for before it reads the kernel's outputs."""
    from fastkda.kernels.chunk_state_sm90 import kda_chunk_state_sm90_kernel
    bv = 32 if narrow else 64
    side = side_stream(cuda_index(o.device))
    side.wait_event(fork)
    # built as Gluon descriptors directly (each through a Triton one first took twice the host time)
    descs = [gluon_rows(w, list(w.shape[-2:])) for w in ws] + [
        gluon_desc(v_tile_desc(v, bv)), gluon_rows(ws_eg, [1, K]), gluon_rows(o.view(B * T, HV * V), [CHUNK, bv])]
    # the initial state as rows of V in [K, bv] tiles ([bv, K] with state_v_first): the next walk's state is requested
    # into shared memory while a walk runs (chunk_state_sm90._walk; 16-byte aligned data, and only for programs beside
    # a prepare program: the tile's 16 or 32 KB do not fit beside a three-slot ring)
    shared = not (exclusive or narrow)
    state_tile = [bv, K] if state_v_first else [K, bv]
    h0_d = gluon_rows(h0, state_tile) if shared and h0 is not None and h0.data_ptr() % 16 == 0 else None
    # the final state the same way, from shared memory by TMA (chunk_state_sm90._ht_stash)
    ht_d = gluon_rows(ht, state_tile) if shared and ht is not None and ht.data_ptr() % 16 == 0 else None
    with torch.cuda.stream(side):
        kda_chunk_state_sm90_kernel[(V // bv * group_lanes,)](
            *descs, h0, h0_d, ht, ht_d, ready, cu_seqlens, chunk_offsets, T, N, NT, n_slots, HV,
            v.stride(2), lanes, group_lanes, K=K, V=V, BV=bv, BT=CHUNK, IS_VARLEN=cu_seqlens is not None,
            HAS_H0=h0 is not None, STORE_HT=ht is not None, STATE_V_FIRST=state_v_first,
            STAGES=3 if exclusive else 2, H0_TMA=h0_d is not None, PRODUCER=exclusive, ws_kg=ws[0], ws_ku=ws[1],
            ws_qg=ws[2], ws_mu=ws[3], DISCARD=shared, HT_TMA=ht_d is not None, num_warps=4)
        join = torch.cuda.Event()
        join.record(side)
    return join


def divisor_magic(d: int) -> int:
    """x // d for 0 <= x < 2^30 as (4 x m) >> (32 + l), l = ceil(log2 d), m = ceil(2^(30 + l) / d) < 2^31 (then
    m d - 2^(30 + l) < d <= 2^l, which makes the quotient exact), packed as m + (l + 1) 2^32: an int64 for any d,
    so the kernel's signature does not change with it (chunk_prepare_sm90._div)."""
    l = (d - 1).bit_length()
    return -(-(1 << (30 + l)) // d) + ((l + 1) << 32)


def sm90_reads(x: torch.Tensor) -> bool:
    """Whether the sm_90 prepare kernel can read x: fp32, or 16-bit values read as int32 pairs (4-byte aligned data,
    even strides; the last dim is contiguous)."""
    return x.element_size() == 4 or (x.data_ptr() % 4 == 0 and all(s % 2 == 0 for s in x.stride()[:-1]))


def plain_prepare_inputs(q: torch.Tensor, k: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
                         A_log: torch.Tensor | None, dt_bias: torch.Tensor | None) -> bool:
    """Whether the prepare kernel's inputs are what tools/compile_report.py compiles it for: bf16 q, k, g and beta,
    fp32 A_log and dt_bias, 16-byte aligned data, and strides of q, k and g that are multiples of 16 elements (Triton
    compiles a variant of its own for other alignments)."""
    aux = [x for x in (A_log, dt_bias) if x is not None]
    return (all(x.dtype == torch.bfloat16 for x in (q, k, g, beta)) and all(x.dtype == torch.float32 for x in aux)
            and all(x.data_ptr() % 16 == 0 for x in (q, k, g, beta, *aux))
            and all(st % 16 == 0 for x in (q, k, g) for st in x.stride()[:-1]))


def prepare_inverse_form(*, ready: bool, varlen: bool, K: int, gate_mode: int, bounded: bool, has_a: bool,
                         has_bias: bool, l2norm: bool, beta_mode: int, plain: bool,
                         default_build: bool) -> tuple[bool, bool]:
    """(REG_INVERSE, BETA_COLS_LATE) of the sm_90 prepare kernel. REG_INVERSE: the inverse's products take their
    left operands (T, then the masked product T (-A)) from registers, one barrier a level instead of three (perf-notes
    v47: calls 1-1.7% faster at K = 128 beside the state kernel, varlen calls 1.3-1.7%). Only in the variants whose
    wgmma products ptxas keeps asynchronous with them, which `tools/compile_report.py --check-wgmma` compiles: the
    overlapped call (ready flags) at K = 128 with plain_prepare_inputs, l2norm and beta's sigmoid in the kernel and the
    default build (default_build: four warps, no register cap, the L2 prefetch on), with the lower-bounded gate's fast
    path or softplus (each with A_log and dt_bias), or for fixed-length batches pre-gated g. BETA_COLS_LATE (the
    lower-bounded variants): beta converted to the product layout's columns after the inverse, so that its registers
    are not live through it; there ptxas serialized the products otherwise (the fixed-length variant since its
    slices 2 and 3 come by cp.async, perf-notes v53), and in the softplus variants it serializes them with it.
    Elsewhere (K = 64, fp16 or fp32 inputs, a lower bound outside the fast range, no l2norm with raw beta, among
    others) some variant serialized every product of the kernel, which costs 10% a call, so those keep both operands
    in shared memory."""
    gate_fast = (gate_mode == 2 and bounded or gate_mode == 1) and has_a and has_bias or (
        gate_mode == 0 and not has_a and not has_bias and not varlen)
    reg = ready and K == 128 and l2norm and beta_mode == 1 and gate_fast and plain and default_build
    return reg, reg and gate_mode == 2


def host_slots_pay(plan: CallPlan, host_slots: int | None, n_slots: int) -> bool:
    """Whether a varlen call takes the host's exact chunk count (cu_seqlens_cpu) as its chunk slots instead of the bound
    ceil(T / 64) + N - 1: where the overlapped state programs walk two groups or more. The prepare kernel produces
    the slots group by group, so each slot past the last chunk (a program that loads its rows and finds none) sits in
    front of the next group's chunks, which that group's chains wait for: varlen 1024 x 8 at 96 heads (three groups, 7
    such slots a head) -0.2 to -1.1% in four runs, varlen6 (2 slots) -0.5 to +0.5% (perf-notes v49, v55). With one
    group they come after every chunk, and varlen 256 x 64 at 32 heads measured 1% slower with the exact count in three
    runs (cause not found)."""
    return host_slots is not None and 0 < host_slots < n_slots and plan.overlap and plan.groups >= 2


def late_slices_at_start(*, reg_inverse: bool, gate_mode: int, bounded: bool, groups: int, shared: bool) -> bool:
    """LATE_AT_START of the sm_90 prepare kernel: slices 2 and 3 of g, k and q requested by cp.async with the first
    slices' loads, not after slice 0's products. Where the prepare kernel bounds the call (shared state programs
    walking two groups or more) the request at the start is faster: T=8192 H=96 -0.9%, H=64 -0.5%, B=8 T=4096 H=32
    -1.3%, varlen at 96 heads 0 to -0.3% (perf-notes v54); where the chains do it is slower (one group: H=32 -0.2%
    but varlen 256 x 64 at 32 heads +2.7%, softplus +0.9%; whole multiprocessors at H=12 +3.7%: perf-notes v53).
    Only in the lower-bounded gate's register-inverse variants, the ones `tools/compile_report.py --check-wgmma`
    compiles with it (with the pre-gated g ptxas serialized the fixed-length variant's products)."""
    return reg_inverse and gate_mode == 2 and bounded and groups >= 2 and shared


def prepare_kernel(device: torch.device, K: int, cfg: LaunchConfig, inputs: tuple[torch.Tensor, ...] = ()):
    """The prepare kernel for this call: the Gluon one on sm_90 where it can read q, k and g (inputs), else the
    portable Triton one (also the interpreter's: it cannot run Gluon)."""
    if (cfg.prepare_sm90 and device.type == "cuda" and not interpreting() and K in (64, 128)
            and all(sm90_reads(x) for x in inputs)
            and is_sm90(cuda_index(device))):
        from fastkda.kernels.chunk_prepare_sm90 import kda_chunk_prepare_sm90_kernel
        return kda_chunk_prepare_sm90_kernel
    return kda_chunk_prepare_kernel


H100_SLOTS = 132  # multiprocessors of the H100 the costs below were measured on


def parallel_slots(device: torch.device) -> int:
    """Multiprocessors of the device (on the CPU, those of an H100, so that plans match a GPU's)."""
    if device.type != "cuda":
        return H100_SLOTS
    return multiprocessor_count(cuda_index(device))


# State-kernel costs measured on an H100 (docs/perf-notes.md): a program's chunk step
# takes STEP_US when the GPU is not full; when it is, all chunk steps share it at THROUGHPUT_US per step of a
# 64-column program (half that for transition programs, which write no output), scaled by the
# multiprocessor count (0.019 until v19; the split passes now take 0.015 per step at 4, 8 and 16 heads), plus
# PASS_TAIL_US (where the two bounds meet, a pass takes longer than either: T=8192 H=12, 32-chunk segments, 58 us
# measured per pass against 46 for each bound, perf-notes v21); the combine takes COMBINE_US per segment of the
# longest sequence (1.55 us since v22: 0.0232 ms for 15 segments at T=65536 H=4; 2.0 before).
STEP_US, THROUGHPUT_US, PASS_TAIL_US, COMBINE_US = 1.45, 0.015, 10.0, 1.55
# The prepare kernel: PREPARE_US per (chunk, head) program at K = 128 with H100_SLOTS multiprocessors (two programs
# on each). The overlapped state kernel (overlaps_prepare): a 64-column step takes OVERLAP_STEP_US plus
# OVERLAP_STEP_PER_PROGRAM_US for each of its programs beside the prepare kernel (1.7 us with 24 programs, 2.0 with 44),
# and its last chain ends about OVERLAP_TAIL_US after the prepare kernel (a varlen lane's sequences: overlap_chain);
# alone, the Triton state kernel's 32-column step (where the programs are that few) takes FEW_STEP_US (perf-notes
# v20; the steps scale with K by step_width, the prepare kernel by prepare_width). PREPARE_US 0.055 since v22's inverse
# (0.061 before: with it the planner took 9 groups of 29 lanes at B=8 H=32, 1.18 ms against 1.14 for 8 of 32,
# perf-notes v40); alone the kernel takes 0.0485 us a chunk and head at T=8192 H=96, and a program beside a state
# program about 12% longer.
PREPARE_US, FEW_STEP_US = 0.055, 1.1
OVERLAP_STEP_US, OVERLAP_STEP_PER_PROGRAM_US, OVERLAP_TAIL_US = 1.6, 0.009, 10.0
# A state program that takes a whole multiprocessor (a three-slot ring and a producer warp, no prepare program beside
# it) steps at EXCLUSIVE_STEP_US (1.12-1.14 us measured with 32 programs at T=16384 H=16, T=8192 H=32 and H=96;
# 1.34-1.50 before the producer warp, perf-notes v28 and v21); at most one per EXCLUSIVE_SHARE multiprocessors, so
# that the prepare kernel keeps most of the GPU.
EXCLUSIVE_STEP_US, EXCLUSIVE_SHARE = 1.2, 4
# A narrow state program (32 columns, the state as it is, not transposed: half a 64-column program's products, S and
# R staged in shared memory for them) on a whole multiprocessor steps at NARROW_STEP_US (0.97 us with 48 programs
# at T=8192 H=12 with the producer warp, 1.14 before, perf-notes v28 and v24); at most one per NARROW_SHARE
# multiprocessors. Beside a prepare program it is
# priced as a 64-column one (measured once: T=16384 H=16, 64 programs, 0.384 ms against 0.380 with 32 whole
# 64-column ones), so only a configuration that asks for it gets it there.
NARROW_STEP_US, NARROW_SHARE = 1.0, 2
# A program without the initial state's tile (whole-multiprocessor and narrow ones) loads the state through pointers
# as each walk starts: WALK_START_US a walk more than the chunk slots price (varlen [128] x 128 at H=16 on whole
# multiprocessors: 0.669 ms for 128 walks of 2 chunks, 383 slots, perf-notes v28).
WALK_START_US = 1.5
# The Gluon transition pass (sm_90, split_sm90.py: the state transposed, two programs on each multiprocessor) steps at
# TRANSITION_SM90_STEP_US and takes TRANSITION_SM90_SHARE of a 64-column output step's share of the GPU (0.079 ms for
# 256 programs of 64 steps at T=65536 H=4, 0.153 for two waves of them at varlen [60000] + 64 x [64] H=8); the Triton
# kernel's transition step takes half an output step's share, at STEP_US (0.115 and 0.223 ms there, perf-notes v25).
TRANSITION_SM90_STEP_US, TRANSITION_SM90_SHARE = 1.2, 0.32
# The split path is taken over the overlapped one only where estimated SPLIT_OVER_OVERLAP times faster: the two
# estimates' errors differ by up to 5% where the paths meet (planned_path).
SPLIT_OVER_OVERLAP = 1.05


def prepare_places(slots: int, programs: int = 0, exclusive: bool = False) -> int:
    """Prepare programs resident at once: two per multiprocessor, less one for each of `programs` overlapped state
    programs, two where each takes a whole multiprocessor (`exclusive`)."""
    return 2 * slots - (2 * programs if exclusive else programs)


def prefetch_ahead(places: int) -> int:
    """How many programs ahead a prepare program asks L2 for its successor's rows: three quarters of the prepare
    programs' places (prepare_places), about the programs that start while it runs its inverse. On an H100, of 0 to
    330 ahead (perf-notes v27): alone (264 places) 198 is the best at T=32768 H=8 (0.452 ms; 132: 0.466); beside 64
    state programs (200 places) 132-165 at T=8192 H=96 (0.914-0.916 against 0.934 at 198), H=32 (0.319 against
    0.326) and varlen6 H=96 (0.969 against 0.995); beside 32 on whole multiprocessors (200) 100-132 at T=16384 H=16
    (0.356 against 0.374)."""
    return 3 * places // 4


def step_width(K: int) -> float:
    """A state-kernel chunk step's time relative to K = 128. Its work (three products over K and one over the
    chunk's 64 tokens) is 0.57 of it at K = 64, but the step is bound by its products' latency and its loads more
    than by their work: 0.85 fits K = V = 64 (overlapped steps of 1.57-1.64 us with 32-43 programs, whole-multiprocessor
    ones 1.01, the Triton kernel's chunk steps at 0.0169 us a step of the GPU's throughput against 0.0173 at K = 128;
    perf-notes v40)."""
    return 0.65 + 0.35 * (3 * K + 64) / (3 * 128 + 64)


def prepare_width(K: int) -> float:
    """The prepare kernel's time a program relative to K = 128: 0.65 at K = 64 (alone, 0.0315 against 0.0485 us a
    chunk and head at T=8192, perf-notes v40)."""
    return 0.3 + 0.7 * K / 128


def state_pass_us(steps: int, walk: int, bv: int, slots: int, transition: bool = False, K: int = 128,
                  sm90: bool = False) -> float:
    """Estimated time of one pass of the state kernel: `steps` chunk steps of bv-column programs with K-row
    states in all, the longest program walking `walk` chunks (steps scaled by step_width); `transition`: the split
    path's transition pass, `sm90`: in the Gluon kernel (transition_sm90)."""
    share, step = 1.0, STEP_US
    if transition:
        share, step = (TRANSITION_SM90_SHARE, TRANSITION_SM90_STEP_US) if sm90 else (0.5, STEP_US)
    width = bv / 64 * share * step_width(K)
    return max(walk * step, steps * THROUGHPUT_US * width * H100_SLOTS / slots) + PASS_TAIL_US


def prepare_us(n_heads: int, total_chunks: int, K: int, slots: int) -> float:
    """Estimated time of the prepare kernel."""
    return PREPARE_US * total_chunks * n_heads * prepare_width(K) * H100_SLOTS / slots


def overlapped_us(n_heads: int, total_chunks: int, chain_chunks: int, K: int, slots: int, programs: int,
                  groups: int = 1, exclusive: bool = False, narrow: bool = False, walks: int = 1) -> float:
    """Estimated time of an unsplit call whose `programs` state programs run beside the prepare kernel, each walking
    chain_chunks chunk steps in each of `groups` groups: the longer of their chains and the prepare kernel on the
    places they leave (two per multiprocessor, one taken by each state program, both where it is `exclusive`),
    plus the last chain's tail; `narrow`: 32-column programs; walks: the walks of a group's lane (a varlen lane's
    sequences), each starting WALK_START_US later where the program has no initial-state tile."""
    places = max(prepare_places(slots, programs, exclusive), 1)
    beside = prepare_us(n_heads, total_chunks, K, slots) * 2 * slots / places
    chain = chain_chunks * overlap_step_us(K, programs, exclusive, narrow)
    if exclusive or narrow:
        chain += walks * WALK_START_US
    return max(beside, groups * chain) + OVERLAP_TAIL_US


def overlap_chain(longest_chunks: int, total_chunks: int, varlen: bool) -> int:
    """Chunk steps of one lane of the overlapped state kernel: a fixed-length sequence's chunks, or every chunk slot of
    a varlen batch. The slots (total_chunks: the host's bound NT + N - 1 on the batch's chunks) also price the
    sequences' starts and ends: since the next walk's state and first tiles are requested during a walk, a sequence
    costs about 0.7 of a step more at H=32 and H=96, and with no further term the planner takes the faster path at
    every varlen layout measured (perf-notes v27; 4 steps a sequence more in v26, 2 before)."""
    return total_chunks if varlen else longest_chunks


def overlap_step_us(K: int, programs: int, exclusive: bool = False, narrow: bool = False) -> float:
    """A chunk step of the overlapped state kernel with `programs` programs beside the prepare kernel, each sharing
    its multiprocessor with a prepare program or, `exclusive`, with none; `narrow`: 32-column programs."""
    if exclusive:
        return (NARROW_STEP_US if narrow else EXCLUSIVE_STEP_US) * step_width(K)
    return OVERLAP_STEP_US * step_width(K) + OVERLAP_STEP_PER_PROGRAM_US * programs


@functools.lru_cache(maxsize=4096)      # a search over group counts: up to 0.3 ms of host time with 4096 lanes
def overlap_groups(lanes: int, n_heads: int, total_chunks: int, chain_chunks: int, K: int, V: int,
                   slots: int, exclusive: bool | None = None, narrow: bool | None = None,
                   walks: int = 1) -> tuple[int, int, bool, bool]:
    """(lanes per group, groups, exclusive, narrow) of the overlapped state kernel: its programs, V / 64 per lane of a
    group (V / 32 where narrow; a lane is a fixed-length batch's (sequence, head), a varlen batch's head), walk the
    groups one after the other, and the prepare kernel produces the chunks in that order. At most one program per two
    multiprocessors (each takes half a multiprocessor's registers and 181 KB of shared memory, beside one prepare
    program), or, exclusive, one per EXCLUSIVE_SHARE multiprocessors (NARROW_SHARE where narrow), each taking a whole
    one (a three-slot ring and a producer warp: faster steps where the chains bound the call, fewer places for the
    prepare kernel; walks priced WALK_START_US more, as for narrow programs, which have no initial-state tile).
    Fewer programs leave the prepare kernel more places but walk more chains each: the number of groups (of equal
    size but the last) and the kind of program (exclusive, narrow: None, either; else that one; narrow programs
    beside prepare programs only where asked for) are those overlapped_us estimates fastest. T=8192 H=64: 2 groups
    0.683 ms, 3 groups 0.77, sequential 0.74; H=96: 3 groups 1.027, 4 groups 1.04, sequential 1.15 (perf-notes v20);
    H=12: whole multiprocessors 0.202, shared 0.223 (v21), narrow on whole ones 0.172 (v24)."""
    # (exclusive, narrow) pairs to weigh; narrow programs beside prepare programs only where narrow is asked for
    kinds = [(ex, nw) for nw in ((False, True) if narrow is None else (narrow,))
             for ex in ((False, True) if exclusive is None else (exclusive,)) if ex or not nw or narrow]
    most = max(slots // 2 // (V // 64), 1)
    least_step = min(overlap_step_us(K, 0, ex, nw) for ex, nw in kinds)
    best = None
    for groups in range(-(-lanes // most), lanes + 1):
        size = -(-lanes // groups)
        if size * groups - lanes >= size:       # a group would be empty
            continue
        for ex, nw in kinds:
            programs = size * V // (32 if nw else 64)
            if programs > max(slots // 2, 1) or ex and programs * (NARROW_SHARE if nw else EXCLUSIVE_SHARE) > slots:
                continue
            cost = overlapped_us(n_heads, total_chunks, chain_chunks, K, slots, programs, groups, ex, nw, walks)
            if best is None or cost < best[0]:
                best = (cost, size, groups, ex, nw)
        if best is not None and groups * chain_chunks * least_step > best[0]:
            break                               # the chains alone take longer from here on
    return best[1:]


def overlap_pays(n_heads: int, total_chunks: int, longest_chunks: int, K: int, V: int, slots: int,
                 programs: int, groups: int = 1, chain_chunks: int | None = None, exclusive: bool = False,
                 narrow: bool = False, walks: int = 1) -> bool:
    """Whether the unsplit state pass is estimated faster beside the prepare kernel (its lanes walking chain_chunks
    steps each, overlap_chain; default longest_chunks) than after it, where the state kernel takes the longer of
    its longest sequence's chain and its share of the GPU's bandwidth. Not where the chain is long: beside the
    prepare kernel a step takes 1.6-1.9 us on a shared multiprocessor and 1.13 on a whole one (0.85-0.97 with 32
    columns), the Triton kernel's alone 1.1 (T=65536 H=4: 0.84 ms overlapped, 1.33 after; T=32768 H=8: 0.46
    overlapped, 0.78 after, perf-notes v28; T=8192 H=32: 0.353 overlapped, 0.406 after, v21)."""
    after = max(longest_chunks * FEW_STEP_US * step_width(K),
                state_pass_us(total_chunks * n_heads * V // 64, 0, 64, slots, K=K))
    chain = longest_chunks if chain_chunks is None else chain_chunks
    return (overlapped_us(n_heads, total_chunks, chain, K, slots, programs, groups, exclusive, narrow, walks)
            < prepare_us(n_heads, total_chunks, K, slots) + after)


# A head's chain on whole multiprocessors (plan_head) is priced at HEAD_STEP_US a step: the heads it gives (259 chunks
# at T=32768 H=8, 241 at T=65536 H=4) measured within 1% of the fastest of the five or six tried (timelines put the
# chain's steps at 0.9-1.1 us, the prepare kernel beside 16 such programs 18% longer; perf-notes v41).
HEAD_STEP_US = 0.95
# A head is taken where its estimate plus HEAD_JOIN_US (the rest's combine waits for the head's stream and goes out
# without a dependent launch) is HEAD_OVER_SPLIT of the split path's or less: measured at 12 shapes, a head of 49
# to 259 chunks gained 6-9% at T=16384 and 32768 H=8 (estimates 0.86-0.93 of the split path's), 3.4% at T=65536 H=4
# (0.956) and lost up to 5% where the estimates were within 3% (T=16384 H=4, T=65536 H=1; perf-notes v41).
HEAD_JOIN_US, HEAD_OVER_SPLIT = 8.0, 0.97
SPLIT_LENGTHS = (16, 32, 64, 128)               # chunks per segment the planner weighs
# behind a head segment (plan_head) the rest is weighed at every 8 chunks: its length is whatever the head leaves, and
# the segments that fill the transition pass's places in one wave are what pays
TAIL_LENGTHS = tuple(range(16, 129, 8))


def split_passes_us(n_heads: int, total_chunks: int, longest_chunks: int, K: int, V: int, bv: int, slots: int,
                    sm90_transition: bool, lengths: tuple[int, ...] = SPLIT_LENGTHS) -> tuple[int, float]:
    """(chunks per segment, estimated time of the transition, combine and output passes) at the cheapest of
    `lengths` shorter than the longest sequence; (0, inf) where none is."""
    out_steps = total_chunks * n_heads * (V // bv)              # the output pass, split or not
    trans_steps = total_chunks * n_heads * ((V + K) // bv)      # the transition pass (an upper bound)
    best, best_cost = 0, float("inf")
    for ncs in lengths:
        if ncs >= longest_chunks:
            break
        walk = ncs
        if sm90_transition:     # two programs a multiprocessor, in waves: (V + K) / 64 per segment with a map
            walk *= -(-(total_chunks // ncs) * n_heads * ((V + K) // 64) // (2 * slots))
        # the output pass: one program a multiprocessor, in waves (T=32768 H=8 behind a 160-chunk head: 9 segments
        # of 40 chunks, 144 programs, 0.457 ms; 8 of 40 behind 192 chunks, 0.408; perf-notes v41)
        # (segments as long as the longest sequence's, counted for as many such sequences as the chunks make)
        long_segments = -(-longest_chunks // ncs) * max(total_chunks // longest_chunks, 1)
        out_walk = ncs * -(-long_segments * n_heads * (V // bv) // slots)
        cost = (state_pass_us(trans_steps, walk, bv, slots, transition=True, K=K, sm90=sm90_transition)
                + state_pass_us(out_steps, out_walk, bv, slots, K=K)
                + math.ceil(longest_chunks / ncs) * COMBINE_US)
        if cost < best_cost:
            best, best_cost = ncs, cost
    return best, best_cost


def planned_path(n_heads: int, total_chunks: int, longest_chunks: int, K: int, V: int, bv: int,
                 slots: int = H100_SLOTS, overlap_programs: int = 0, overlap_groups: int = 1,
                 overlap_chain: int | None = None, overlap_exclusive: bool = False, overlap_narrow: bool = False,
                 sm90_transition: bool = False, overlap_walks: int = 1) -> tuple[int, float]:
    """(64-token chunks per segment for the split path, or 0 when one program per sequence is as fast; the
    estimated time of the call on the path taken, prepare kernel included): the cheapest segment length, taken when
    it beats the unsplit path by 10%. total_chunks: chunks of all
    sequences; slots: multiprocessors of the device. overlap_programs, overlap_groups, overlap_chain,
    overlap_exclusive, overlap_narrow, overlap_walks: where the unsplit path could run its state kernel beside the
    prepare kernel (overlaps_prepare), its programs, the groups each walks, a lane's chunk steps (overlap_chain;
    default longest_chunks), whether each program takes a whole multiprocessor and whether it takes 32 columns
    (overlap_groups), the walks of a lane (a varlen lane's sequences); sm90_transition: the transition pass in the
    Gluon kernel (transition_sm90). Where the overlap pays (overlap_pays), the unsplit call is priced as
    overlapped_us, and kept unless the prepare kernel and the split passes are estimated 5% faster (T=8192 K=V=64
    H=32: 0.252 ms split, 0.185 overlapped; T=16384 H=16: 0.503 split, 0.374 overlapped with whole multiprocessors;
    H=12: 0.231 split, 0.202 overlapped with whole multiprocessors; H=8: 0.143 split, 0.136 overlapped where the two
    estimates were within 1%, perf-notes v40)."""
    prepare = prepare_us(n_heads, total_chunks, K, slots)
    out_steps = total_chunks * n_heads * (V // bv)
    unsplit = state_pass_us(out_steps, longest_chunks, bv, slots, K=K)
    best, best_cost = split_passes_us(n_heads, total_chunks, longest_chunks, K, V, bv, slots, sm90_transition)
    chain = longest_chunks if overlap_chain is None else overlap_chain
    if overlap_programs and overlap_pays(n_heads, total_chunks, longest_chunks, K, V, slots, overlap_programs,
                                         overlap_groups, chain, overlap_exclusive, overlap_narrow, overlap_walks):
        overlapped = overlapped_us(n_heads, total_chunks, chain, K, slots, overlap_programs, overlap_groups,
                                   overlap_exclusive, overlap_narrow, overlap_walks)
        if overlapped > SPLIT_OVER_OVERLAP * (prepare + best_cost):
            return best, prepare + best_cost
        return 0, overlapped
    if best_cost < 0.9 * unsplit:
        return best, prepare + best_cost
    return 0, prepare + unsplit


def plan_head(n_heads: int, chunks: int, K: int, V: int, bv: int, slots: int = H100_SLOTS,
              sm90_transition: bool = False, exclusive: bool | None = None, head: int | None = None,
              against: float = float("inf")) -> tuple[int, int, bool, float]:
    """(head chunks, the rest's chunks per segment, exclusive, estimated time) of a single sequence of `chunks` chunks
    whose head the overlapped state kernel walks beside the prepare kernel (a 64-column program per head and column
    block, beside a prepare program or, exclusive, on a whole multiprocessor; the prepare kernel takes the chunks in
    order, all heads of a chunk together) while the split passes take the rest after it. The split passes are bound
    by their chains (T=32768 H=8: a 64-step transition pass of 80 us, a 64-step output pass of 129 us, at 2.8 TB/s),
    so what the head takes off them shortens both; the head is as long as its chain can follow the prepare kernel.
    head: that many chunks instead (taken whatever the estimate); exclusive: the kind of program (None: the cheaper);
    against: the estimate of the path a planned head would replace, which it must beat by HEAD_OVER_SPLIT with
    HEAD_JOIN_US added. (0, 0, False, inf) where no head is taken."""
    programs = n_heads * (V // 64)
    best = (0, 0, False, float("inf"))
    for ex in ((False, True) if exclusive is None else (exclusive,)):
        if programs > slots // 2 or ex and programs * EXCLUSIVE_SHARE > slots:
            continue
        beside = prepare_us(n_heads, chunks, K, slots) * 2 * slots / max(prepare_places(slots, programs, ex), 1)
        step = HEAD_STEP_US * step_width(K) if ex else overlap_step_us(K, programs)
        n = int((beside - OVERLAP_TAIL_US) / step) if head is None else head
        n = min(n, chunks - 1)
        if n < 16 and head is None or n < 1:
            continue
        ncs, rest = split_passes_us(n_heads, chunks - n, chunks - n, K, V, bv, slots, sm90_transition, TAIL_LENGTHS)
        if not ncs:         # the rest too short to split: the state kernel after the prepare kernel
            rest = state_pass_us((chunks - n) * n_heads * (V // bv), chunks - n, bv, slots, K=K)
        cost = max(beside, n * step + OVERLAP_TAIL_US) + rest
        if cost < best[3]:
            best = (n, ncs, ex, cost)
    if head is None and not best[3] + HEAD_JOIN_US < HEAD_OVER_SPLIT * against:
        return 0, 0, False, float("inf")
    return best


class CallPlan(NamedTuple):
    """What kda_forward launches (plan_call)."""

    overlap: bool       # the unsplit state pass, or a head, beside the prepare kernel (launch_overlapped_state)
    split: bool         # the split passes after the prepare kernel (the rest after a head)
    ncs: int            # chunks per segment (NO_SPLIT where not split)
    head: int           # chunks of a single sequence's head walked beside the prepare kernel (plan_head)
    lanes: int          # the overlapped state kernel's lanes: a fixed-length batch's (sequence, head) pairs, or
    group_lanes: int    # a varlen batch's heads; by groups of group_lanes (overlap_groups)
    groups: int
    programs: int       # overlapped state programs
    exclusive: bool     # each on a whole multiprocessor
    narrow: bool        # 32 state columns each
    bv: int             # state columns per program of the state kernel's passes after the prepare kernel


@functools.lru_cache(maxsize=4096)     # a pure function of the call's shape: 30-150 us of host time a call
def plan_call(cfg: LaunchConfig, *, B: int, N: int, T: int, HV: int, K: int, V: int, varlen: bool, n_slots: int,
              longest_chunks: int, split_chunks: int | None, intermediate: bool, dtype: torch.dtype,
              sm90_prepare: bool, v_tiles: bool, gluon_transition: bool, slots: int) -> CallPlan:
    """The launches of a call of N sequences (B rows of T tokens, or varlen), n_slots chunk slots, the longest
    sequence longest_chunks chunks (or a bound); split_chunks: chunks per segment (None: planned, 0: no split);
    intermediate: states at every chunk requested; sm90_prepare: the Gluon prepare kernel runs; v_tiles: v is
    readable in tiles (v_token_rows); gluon_transition: transition_sm90; slots: multiprocessors."""
    bv = state_block_v(cfg.block_v, N * HV, V, slots, split=True)   # the planner's and the split passes'
    can_overlap = overlaps_prepare(cfg, sm90_prepare=sm90_prepare, varlen=varlen, intermediate=intermediate, B=B,
                                   T=T, K=K, V=V, dtype=dtype, v_tiles=v_tiles, slots=slots)
    lanes = programs = groups = group_lanes = chain = 0
    exclusive = narrow = False
    walks = N if varlen else 1          # the walks of a lane: a varlen lane walks every sequence
    if can_overlap:
        lanes = HV if varlen else B * HV
        chain = overlap_chain(longest_chunks, n_slots, varlen)
        group_lanes, groups, exclusive, narrow = overlap_groups(lanes, HV, n_slots, chain, K, V, slots,
                                                                cfg.overlap_exclusive, cfg.overlap_narrow, walks)
        programs = group_lanes * (V // (32 if narrow else 64))
    planned = split_chunks is None
    if planned:
        split_chunks, path_cost = planned_path(HV, n_slots, longest_chunks, K, V, bv, slots, programs, groups,
                                               chain if can_overlap else None, exclusive, narrow, gluon_transition,
                                               walks)
    # a single sequence: its head walked beside the prepare kernel, the rest after it (plan_head)
    head = 0
    if can_overlap and not varlen and B == 1 and cfg.split_head != 0 and (planned and split_chunks or cfg.split_head):
        head, tail_ncs, head_exclusive, _ = plan_head(HV, n_slots, K, V, bv, slots, gluon_transition,
                                                      cfg.overlap_exclusive, cfg.split_head,
                                                      path_cost if planned else float("inf"))
        if head:
            if planned:
                split_chunks = tail_ncs
            group_lanes, groups, exclusive, narrow = HV, 1, head_exclusive, False
            programs = HV * (V // 64)
    split = 0 < split_chunks < max(longest_chunks - head, 1)
    overlap = can_overlap and (head > 0 or not split and (cfg.overlap is not None or overlap_pays(
        HV, n_slots, longest_chunks, K, V, slots, programs, groups, chain, exclusive, narrow, walks)))
    if not split:
        bv = state_block_v(cfg.block_v, N * HV, V, slots, split=False)
    return CallPlan(overlap, split, split_chunks if split else NO_SPLIT, head, lanes, group_lanes, groups, programs,
                    exclusive, narrow, bv)


def kda_forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor, *,
    scale: float, gate: GateSpec, A_log: torch.Tensor | None, dt_bias: torch.Tensor | None,
    beta_mode: int, l2norm: bool, initial_state: torch.Tensor | None, output_final_state: bool,
    final_state_dtype: torch.dtype, state_v_first: bool, cu_seqlens: torch.Tensor | None,
    num_intermediate: int | None, longest_chunks: int, split_chunks: int | None = None,
    host_slots: int | None = None, config: LaunchConfig | None = None, out: torch.Tensor | None = None,
    final_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Launches the forward. q, k [B, T, H, K]; v [B, T, HV, V]; g [B, T, HV, K]; beta [B, T, HV].

    num_intermediate: chunk slots of the intermediate states (None: not requested); longest_chunks: chunks
    of the longest sequence, or an upper bound; split_chunks: chunks per segment (None: planned here,
    0: no split); host_slots: a varlen batch's chunks where the host knows them (host_slots_pay); out,
    final_out: contiguous buffers to write o and the final state into (else allocated).
    Returns (o [B, T, HV, V], final state or None, intermediate states or None).
    """
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    device = q.device
    N = B if cu_seqlens is None else cu_seqlens.shape[0] - 1
    cfg = config or DEFAULT_CONFIG
    BT = CHUNK
    slots = parallel_slots(device)
    state_shape = (HV, V, K) if state_v_first else (HV, K, V)
    o = new_output((B, T, HV, V), q.dtype, device) if out is None else out
    ht = None
    if output_final_state:
        ht = new_output((N, *state_shape), final_state_dtype, device) if final_out is None else final_out
    hi = None
    if num_intermediate is not None:
        shape = (B, num_intermediate, *state_shape)
        # with varlen, slots past the real chunk count (unknown to the host) stay zero
        hi = new_output(shape, k.dtype, device) if cu_seqlens is None else torch.zeros(shape, dtype=k.dtype, device=device)

    NT = triton.cdiv(T, BT)
    n_slots = B * NT if cu_seqlens is None else NT + max(N - 1, 0)
    prepare = prepare_kernel(device, K, cfg, (q, k, g)) if n_slots else None
    gluon_transition = transition_sm90(cfg, device, K, V, v)
    shape = dict(B=B, N=N, T=T, HV=HV, K=K, V=V, varlen=cu_seqlens is not None, longest_chunks=longest_chunks,
                 split_chunks=split_chunks, intermediate=hi is not None, dtype=q.dtype,
                 sm90_prepare=prepare not in (None, kda_chunk_prepare_kernel), v_tiles=v_token_rows(v),
                 gluon_transition=gluon_transition, slots=slots)
    plan = plan_call(cfg, n_slots=n_slots, **shape)
    if host_slots_pay(plan, host_slots, n_slots):
        n_slots = host_slots
        plan = plan_call(cfg, n_slots=n_slots, **shape)
    overlap, split, ncs, head = plan.overlap, plan.split, plan.ncs, plan.head
    group_lanes, groups, programs, exclusive, narrow, bv = (plan.group_lanes, plan.groups, plan.programs,
                                                            plan.exclusive, plan.narrow, plan.bv)
    nsearch = max(1, math.ceil(math.log2(N + 1)))
    interp = interpreting()

    seg_offsets = chunk_offsets = chunk_rows = long_seqs = None
    # the sequences the combine walks: all of a fixed-length batch; of a varlen one, at most those with more chunks
    # than a segment (kda_schedule_kernel lists them on the device)
    n_long = N if cu_seqlens is None else (n_slots // (ncs + 1) if split else 0)
    ready = None
    if overlap:
        # the flag rows, then STEP_WORDS int32 step counts per lane of a group (the state kernel's dropped lines),
        # zeroed together (a varlen call's by its schedule kernel)
        ready_bytes = HV * flag_row_bytes(n_slots) + 4 * STEP_WORDS.value * group_lanes
        ready = (torch.zeros if cu_seqlens is None else torch.empty)(ready_bytes, dtype=torch.uint8, device=device)
    if cu_seqlens is not None:
        # one allocation, each part 16-byte aligned (the kernels are specialized on their pointers' alignment)
        sizes = (N + 1, N + 1, n_long + 1, 2 * max(n_slots, 1))
        padded = [-(-n // 4) * 4 for n in sizes]
        parts = torch.empty(sum(padded), dtype=torch.int32, device=device).split(padded)
        seg_offsets, chunk_offsets, long_seqs, chunk_rows = (p[:n] for p, n in zip(parts, sizes))
        kda_schedule_kernel[(1,)](cu_seqlens, seg_offsets, chunk_offsets, chunk_rows, long_seqs, N, T, ncs, n_slots,
                                  n_long, BLOCK=1024, zeroed=None if ready is None else ready.view(torch.int32),
                                  NZERO=0 if ready is None else ready.numel() // 4)

    # at least one slot: a tensor descriptor needs a nonempty tensor (no slot past n_slots is read)
    ws = [torch.empty(max(n_slots, 1), HV, BT, d, dtype=torch.bfloat16, device=device) for d in (K, K, K, BT)]
    ws_eg = torch.empty(n_slots, HV, K, dtype=torch.float32, device=device)
    # without a prepare launch the state kernel would be the call's first: it reads the initial state before its
    # wait, which only a normal launch orders after the caller's kernels
    pdl = n_slots > 0 and uses_pdl(device, cfg)
    fork = main = None
    if overlap:
        main = torch.cuda.current_stream(device)
        fork = torch.cuda.Event()
        fork.record(main)
    if n_slots:
        prepare_args = (
            q, k, g, beta, A_log, dt_bias, *ws, ws_eg, chunk_rows,
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            g.stride(0), g.stride(1), g.stride(2), beta.stride(0), beta.stride(1), beta.stride(2),
            T, NT, scale, gate.lower_bound)
        prepare_consts = dict(
            H=H, HV=HV, K=K, BT=BT, GATE=gate.mode, BOUNDED=gate.bounded, HAS_A=A_log is not None,
            HAS_BIAS=dt_bias is not None, L2NORM=l2norm, BETA_MODE=beta_mode, IS_VARLEN=cu_seqlens is not None,
            DIAG_FLOOR=DIAG_DECAY_FLOOR, HALF_SHIFT=HALF_BLOCK_SHIFT, INTERPRET=interp,
            num_warps=cfg.prepare_warps, num_stages=1, maxnreg=cfg.prepare_maxnreg)
        if prepare is kda_chunk_prepare_kernel:
            prepare[(n_slots * HV,)](*prepare_args, **prepare_consts, KS=K if K <= 64 else min(cfg.prepare_slice, K))
        else:
            # the Gluon kernel's layouts are built for 32-column slices
            ahead = cfg.prepare_prefetch
            if ahead is None:
                ahead = prefetch_ahead(prepare_places(slots, programs if overlap else 0, exclusive))
            # (a program id stays below 2^30, as _div needs: each program's workspace takes 8 KB or more; NT is 0
            # only where T is, and then no program divides by it)
            order = dict(div_heads=divisor_magic(HV), div_gva=divisor_magic(HV // H), div_nt=divisor_magic(max(NT, 1)))
            grid = n_slots * HV
            if overlap:     # lanes by groups (the last one padded), each chunk by chunk
                span = n_slots if cu_seqlens is not None else NT          # a lane's chunks
                order.update(group_lanes=group_lanes, div_span=divisor_magic(group_lanes * span),
                             div_group=divisor_magic(group_lanes))
                grid = groups * group_lanes * span
            # Ku and Mu by TMA at K = 128 (at K = 64 it measured no faster; perf-notes v46)
            tma_out = K == 128
            outs = dict(ku_d=gluon_rows(ws[1], [BT, 32]), mu_d=gluon_rows(ws[3], [BT, BT])) if tma_out else {}
            # (the inputs' check, 2-3 us of host time, only where its answer can count)
            reg_inverse, beta_cols_late = prepare_inverse_form(
                ready=overlap, varlen=cu_seqlens is not None, K=K, gate_mode=gate.mode, bounded=gate.bounded,
                has_a=A_log is not None, has_bias=dt_bias is not None, l2norm=l2norm, beta_mode=beta_mode,
                plain=overlap and K == 128 and plain_prepare_inputs(q, k, g, beta, A_log, dt_bias),
                default_build=ahead > 0 and cfg.prepare_warps == 4 and cfg.prepare_maxnreg is None)
            # a programmatic dependent launch where the kernel before it is the call's own (the flags' zeroing, the
            # varlen schedule): T=8192 H=12 -1%, H=32 -0.6%, the 96-head calls unchanged (perf-notes v50)
            after_own = (overlap or cu_seqlens is not None) and uses_pdl(device, cfg)
            late_at_start = late_slices_at_start(reg_inverse=reg_inverse, gate_mode=gate.mode, bounded=gate.bounded,
                                                 groups=groups, shared=not (head or exclusive or narrow))
            prepare[(grid,)](*prepare_args, N, n_slots, **prepare_consts, KS=32, PREFETCH=ahead > 0, ahead=ahead,
                             ready=ready, READY=overlap, TMA_OUT=tma_out, REG_INVERSE=reg_inverse,
                             BETA_COLS_LATE=beta_cols_late, PDL=after_own, LATE_AT_START=late_at_start,
                             launch_pdl=after_own, **order, **outs)

    if overlap and not head:
        main.wait_event(launch_overlapped_state(
            fork, ws, ws_eg, v, o, initial_state, ht, ready, group_lanes, plan.lanes, cu_seqlens, chunk_offsets,
            B=B, T=T, N=N, NT=NT, n_slots=n_slots, HV=HV, K=K, V=V, state_v_first=state_v_first, exclusive=exclusive,
            narrow=narrow))
        return o, ht, hi
    o_all = o
    joined = None
    if head:
        # the head's chain ends in h_mid, the rest's initial state; the rest is the same call on views past the head
        h_mid = torch.empty((1, *state_shape), dtype=torch.float32, device=device)
        hb = head * BT
        joined = launch_overlapped_state(
            fork, ws, ws_eg, v[:, :hb], o[:, :hb], initial_state, h_mid, ready, HV, HV, None, None, B=1, T=hb, N=1,
            NT=head, n_slots=n_slots, HV=HV, K=K, V=V, state_v_first=state_v_first, exclusive=exclusive,
            narrow=False)
        ws, ws_eg, v, o, initial_state = [w[head:] for w in ws], ws_eg[head:], v[:, hb:], o[:, hb:], h_mid
        T, NT, n_slots, longest_chunks = T - hb, NT - head, n_slots - head, longest_chunks - head

    state_args = dict(
        ws_kg=tile_desc(ws[0]), ws_ku=tile_desc(ws[1]), ws_qg=tile_desc(ws[2]), ws_mu=tile_desc(ws[3]), ws_eg=ws_eg,
        o=o, h0=initial_state, ht=ht, hi=hi, cu_seqlens=cu_seqlens, seg_offsets=seg_offsets,
        chunk_offsets=chunk_offsets, s_vb=v.stride(0), s_vt=v.stride(1), s_vh=v.stride(2), T=T, N=N, NT=NT,
        NSLOTS=n_slots, NT_ALLOC=num_intermediate or 0, NCS=ncs, NSEARCH=nsearch, HV=HV, K=K, V=V, BT=BT,
        HAS_H0=initial_state is not None, STATE_V_FIRST=state_v_first, IS_VARLEN=cu_seqlens is not None,
        PDL=pdl, launch_pdl=pdl, INTERPRET=interp, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    v_desc = v_tile_desc(v, bv)
    v_args = dict(v=v, V_DESC=False) if v_desc is None else dict(v=v_desc, V_DESC=True)
    if not split:
        if joined is not None:      # the state kernel reads h_mid before its wait: a whole dependency on the head
            main.wait_event(joined)
            state_args.update(PDL=False, launch_pdl=False)
        kda_chunk_state_kernel[(V // bv * HV * N,)](
            seg_start=None, seg_trans=None, BV=bv, NCOL=V // bv, STORE_HT=ht is not None, STORE_HI=hi is not None,
            SPLIT=False, TRANSITION=False, **state_args, **v_args)
        return o_all, ht, hi

    if cu_seqlens is None:
        n_seg = N * max(1, triton.cdiv(NT, ncs))
    else:
        n_seg = triton.cdiv(n_slots, ncs) + N
    seg_trans = torch.empty(n_seg, HV, K, V + K, dtype=torch.float32, device=device)
    seg_start = torch.empty(n_seg, HV, K, V, dtype=torch.float32, device=device)
    if gluon_transition:
        from fastkda.kernels.split_sm90 import kda_transition_sm90_kernel
        descs = (state_args["ws_kg"], state_args["ws_ku"], v_tile_desc(v, 64), eg_tile_desc(ws_eg))
        kda_transition_sm90_kernel[((V + K) // 64 * HV * n_seg,)](
            *(gluon_desc(d) for d in descs), seg_trans, cu_seqlens, seg_offsets, chunk_offsets, T, N, NT, n_slots, ncs,
            nsearch, HV, v.stride(2), K=K, V=V, BV=64, BT=BT, IS_VARLEN=cu_seqlens is not None, PDL=pdl,
            launch_pdl=pdl, STAGES=2, num_warps=4)
    else:
        kda_chunk_state_kernel[((V + K) // bv * HV * n_seg,)](
            seg_start=None, seg_trans=seg_trans, BV=bv, NCOL=(V + K) // bv, STORE_HT=False, STORE_HI=False,
            SPLIT=True, TRANSITION=True, v=v, V_DESC=False, **{**state_args, "num_stages": cfg.transition_stages})
    bvc = min(cfg.combine_block_v, V)
    rows = seg_trans.view(-1, V + K)
    combine_pdl = pdl
    if joined is not None:          # the combine reads h_mid before its wait: a whole dependency on the head
        main.wait_event(joined)
        combine_pdl = False
    kda_combine_kernel[(V // bvc * HV * n_long,)](
        initial_state, TensorDescriptor.from_tensor(rows, [K, K]), TensorDescriptor.from_tensor(rows, [K, bvc]),
        seg_start, seg_offsets, long_seqs, T, ncs, n_seg, n_long, HV=HV, K=K, V=V, BV=bvc,
        HAS_H0=initial_state is not None, STATE_V_FIRST=state_v_first, IS_VARLEN=cu_seqlens is not None,
        PDL=combine_pdl, launch_pdl=combine_pdl, INTERPRET=interp, num_warps=4,
        num_stages=3)  # P of the next two segments in flight (v22)
    kda_chunk_state_kernel[(V // bv * HV * n_seg,)](
        seg_start=seg_start, seg_trans=None, BV=bv, NCOL=V // bv, STORE_HT=ht is not None, STORE_HI=hi is not None,
        SPLIT=True, TRANSITION=False, **state_args, **v_args)
    return o_all, ht, hi
